# The exact counter of "llm_tokenizer" (src/ngx_http_llm_bpe.c), without
# nginx: build/unit/bpe_unit's own cases (loading errors, merges, long
# pieces, characters), then its counts against two independent
# references on the samples, tricky strings and random strings:
#
#  1. a BPE written here in Perl (the cl100k and o200k patterns as Perl
#     regexes, the plain tiktoken merge loop) with a synthetic vocabulary
#     made here, ranks shuffled: always runs;
#  2. js-tiktoken's cl100k_base and o200k_base (build/npm, installed by
#     ./ngx_module test with npm), their vocabularies written to build/bpe/
#     by tools/tiktoken-vocab.js: skipped, saying why, without node or
#     js-tiktoken (failed in CI).

use strict;
use warnings;
use feature 'unicode_strings';

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use MIME::Base64 qw(encode_base64);
use Test::More;

my $root = abs_path(dirname(__FILE__) . '/..');
my $src = $ENV{NGX_SRC} || "$root/build/nginx-1.22.1";
my $objs = $ENV{NGX_OBJS} || "$root/build/release";
my $out = "$root/build/unit";
my $bin = "$out/bpe_unit";
my $samples = "$root/t/unit/samples";

plan skip_all => "no nginx source tree at $src (run ./ngx_module build)"
    unless -f "$src/src/core/ngx_palloc.c";
plan skip_all => "no configured nginx (ngx_auto_config.h) in $objs"
    . " (run ./ngx_module build)"
    unless -f "$objs/ngx_auto_config.h";

my $log = `sh '$root/t/unit/build.sh' '$src' '$objs' '$out' 2>&1`;
is($?, 0, 't/unit/build.sh builds bpe_unit') or diag($log);
BAIL_OUT('bpe_unit was not built') unless -x $bin;

my $tmp = tempdir(CLEANUP => 1);

# bpe_unit's own cases

{
    open(my $fh, '-|', $bin, $tmp, $samples) or die "cannot run $bin: $!";

    my ($plan, $seen) = (undef, 0);

    while (my $line = <$fh>) {
        chomp $line;

        if ($line =~ /^(not )?ok \d+ - (.*)$/) {
            ok(!defined $1, "bpe_unit: $2");
            $seen++;

        } elsif ($line =~ /^1\.\.(\d+)$/) {
            $plan = $1;

        } else {
            diag($line);
        }
    }

    close($fh);

    is($? >> 8, 0, 'bpe_unit exits 0');
    ok(defined $plan && $plan == $seen,
       "bpe_unit ran its whole plan ($seen of " . ($plan // '?') . ')');
}

# the texts both references count: samples, tricky strings, random ones

my @texts;

for my $f (sort glob("$samples/*")) {
    open(my $fh, '<:encoding(UTF-8)', $f) or die "$f: $!";
    local $/;
    push @texts, [ 'sample ' . (split m{/}, $f)[-1], scalar <$fh> ];
}

my @tricky = (
    "I'm", "it's", "They'll", "we've", "you'd", "I'M", "DON'T", "'re",
    "x'sand", "'hello", "don't", "rock'n'roll", "'", "''s", "?'s", "'S'T",
    "I'dve", "'dx", "'llama", "'retro", "'mom", "'tis", "'velvet", "'Dog",
    (map { substr('98765432101', 0, $_) } 1 .. 7), '1234567', '12 345 6789',
    '3.14159', 'v1.2.3', '٣٤٥٦', '²³', 'Ⅻ', '१२३४',
    'a  b', 'a   b', "a\n\nb", "a \n \n b", "  \n  x", "\t\tx", "x\n",
    "\n", ' ', '   ', 'x   ', "\r\n\r\n", "a\r\nb", "hello  \n\n  world",
    "  \t \n\t x", "\n\n\n   \n", " \n", "x \r\n", "end.\n\n", " ?!\n",
    '!!!???', "...\n\n", ' ...', '  ...',
    "\x{1F600}", "\x{1F44D}\x{1F3FD}", "\x{1F468}\x{200D}\x{1F469}",
    "\x{1F1EB}\x{1F1F7}", "a\x{1F600}b", ' ' . "\x{1F600}" x 3,
    '中文字符', '日本語のテキスト', '한국어 텍스트', 'Привет мир', 'مرحبا',
    'नमस्ते', 'mixed English 中文 and 日本語 123', 'café', "cafe\x{301}",
    'naïve', 'ß', 'Ελληνικά', '   leading', 'trailing   ', "tabs\there",
    "x\x{3000}y", "a\x{a0}b", "\x{2028}", "a\x{2029}b", '<|endoftext|>',
    'https://example.com/a?b=c', 'foo_bar-baz', 'CamelCaseWord',
    "def f(x):\n    return x  # done\n", '{"a": [1, 2, 3]}',
    'camelCaseWord', 'HTTPServer', 'iPhone', 'ALLCAPS words', "McDonald's",
    "HE'S", "He'll", "\x{1C5}ungla", "x\x{2B0}y", "A\x{301}BC", "\x{301}",
    "\x{301}ABC d", 'path/to/file', 'a/b//c', "x!/\n/y", 'שלום עולם',
    'カタカナー', 'Ünïcödé', "A'b", "'LL'S",
);

push @texts, map { [ "tricky $_", $tricky[$_] ] } 0 .. $#tricky;

my @alphabet = (
    'a', 'b', 'Z', 'e', 's', 't', 'd', 'm', 'll', 're', 've', 'é',
    "e\x{301}", 'Я', 'α',
    '中', '語', 'か', '한', 'म', 'ب', ' ', ' ', ' ', "\n", "\r", "\t",
    "\x{a0}", "\x{3000}", "\x{2028}", '0', '1', '9', '٣', '²', '.', ',',
    'A', 'Q', "\x{1C5}", "\x{2B0}", "\x{301}", '/', 'ש', 'ー', 'É',
    "'", "'", '-', '=', '_', '!', '(', "\x{1F600}", "\x{200D}", "\x{1F3FD}",
);

srand(20261122);

for my $i (1 .. 1500) {
    my $s = '';
    $s .= $alphabet[int rand @alphabet] for 1 .. 1 + int rand 48;
    push @texts, [ "random $i", $s ];
}

# the counts of bpe_unit, of every text, with the vocabulary in $vocab

sub ours {
    my ($vocab) = @_;

    my $in = "$tmp/texts";
    open(my $fh, '>:raw', $in) or die "$in: $!";
    print $fh join("\0", map { my $t = $_->[1]; utf8::encode($t); $t }
                             @texts);
    close($fh);

    my @counts = `'$bin' count '$vocab' < '$in'`;
    is($?, 0, "bpe_unit count with $vocab");
    chomp @counts;

    return @counts;
}

# compares two lists of "TOKENS CHARS", one test for all, the first few
# differences shown

sub compare {
    my ($what, $ours, $theirs) = @_;

    my @bad;

    for my $i (0 .. $#texts) {
        my ($a, $b) = ($ours->[$i] // '?', $theirs->[$i] // '?');
        push @bad, "$texts[$i][0]: ours $a, $what $b" if $a ne $b;
    }

    ok(@bad == 0 && @$ours == @texts,
       "all " . scalar(@texts) . " texts count as $what counts them")
        or diag(join("\n", (@bad > 10 ? @bad[0 .. 9] : @bad),
                     scalar(@bad) . ' of ' . scalar(@texts) . ' differ'));
}

# 1. A synthetic vocabulary: every byte (ranks shuffled), then byte
# strings of 2..6 bytes cut from the texts (some of them in the middle
# of a character), each with a random rank, unique.

my %rank;

{
    my @ranks = map { $_ * 3 + 1000 } 0 .. 20000;

    for my $i (reverse 1 .. $#ranks) {
        my $j = int rand($i + 1);
        @ranks[$i, $j] = @ranks[$j, $i];
    }

    $rank{chr $_} = shift @ranks for 0 .. 255;

    my $corpus = join '', map { my $t = $_->[1]; utf8::encode($t); $t }
                              @texts[0 .. 40];

    while (@ranks && keys(%rank) < 12000) {
        my $len = 2 + int rand 5;
        my $at = int rand(length($corpus) - $len);
        my $tok = substr($corpus, $at, $len);
        $rank{$tok} //= shift @ranks;
    }
}

my $vocab = "$tmp/synthetic.tiktoken";

{
    open(my $fh, '>:raw', $vocab) or die "$vocab: $!";
    print $fh encode_base64($_, '') . " $rank{$_}\n" for sort keys %rank;
    close($fh);
}

# tiktoken's byte_pair_encode(), the plain way: the lowest pair first,
# the leftmost of equal ones

sub merge {
    my ($piece) = @_;

    return 1 if exists $rank{$piece};

    my @parts = split //, $piece;

    for (;;) {
        my ($best, $at);

        for my $i (0 .. $#parts - 1) {
            my $r = $rank{ $parts[$i] . $parts[$i + 1] };

            if (defined $r && (!defined $best || $r < $best)) {
                ($best, $at) = ($r, $i);
            }
        }

        last unless defined $best;

        splice(@parts, $at, 2, $parts[$at] . $parts[$at + 1]);
    }

    return scalar @parts;
}

my $contractions = qr/'s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M
                     |'ll|'lL|'Ll|'LL|'d|'D/x;

my $cl100k = qr/$contractions|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
               |\x20?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/x;

my $o200k = qr/[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*
                   [\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:$contractions)?
              |[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+
                   [\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:$contractions)?
              |\p{N}{1,3}|\x20?[^\s\p{L}\p{N}]+[\r\n\/]*|\s*[\r\n]+
              |\s+(?!\S)|\s+/x;

sub perl_counts {
    my ($pattern) = @_;
    my @counts;

    for my $t (@texts) {
        my ($n, $text) = (0, $t->[1]);

        while ($text =~ /$pattern/g) {
            my $piece = $&;
            utf8::encode($piece);
            $n += merge($piece);
        }

        push @counts, "$n " . length($t->[1]);
    }

    return \@counts;
}

compare('the Perl BPE (synthetic vocabulary, cl100k pattern)',
        [ ours($vocab) ], perl_counts($cl100k));
compare('the Perl BPE (synthetic vocabulary, o200k pattern)',
        [ ours("$vocab:o200k") ], perl_counts($o200k));

# 2. js-tiktoken's cl100k_base and o200k_base

for my $name ('cl100k_base', 'o200k_base') {
    my $modules = "$root/build/npm/node_modules";
    my $pattern = $name eq 'o200k_base' ? ':o200k' : '';

    SKIP: {
        # CI installs both (./ngx_module test): there, their absence fails

        if ($ENV{CI} && !-f "$modules/js-tiktoken/package.json") {
            fail("CI: js-tiktoken in $modules (./ngx_module test"
                 . ' installs it)');
            skip 'js-tiktoken is missing', 3;
        }

        skip 'no node (./ngx_module test installs nodejs and npm in CI)', 3
            unless system('node --version >/dev/null 2>&1') == 0;
        skip "no js-tiktoken in $modules (./ngx_module test installs it"
             . ' with npm)', 3
            unless -f "$modules/js-tiktoken/package.json";

        local $ENV{NODE_PATH} = $modules;

        my $file = "$root/build/bpe/$name.tiktoken";

        unless (-s $file) {
            make_path("$root/build/bpe");
            system("node '$root/tools/tiktoken-vocab.js' $name"
                   . " > '$file.tmp' && mv '$file.tmp' '$file'") == 0
                or unlink("$file.tmp");
        }

        skip "tools/tiktoken-vocab.js could not write $file", 3
            unless -s $file;

        # js-tiktoken's \s is JavaScript's: U+0085 is not a space there,
        # and U+FEFF is; tiktoken (Rust) and we take Unicode's White_Space

        my $count = "node '$root/t/unit/tiktoken-count.js' $name";
        my @js = `$count < '$tmp/texts'`;
        is($?, 0, "t/unit/tiktoken-count.js counts with js-tiktoken $name");
        chomp @js;

        compare("js-tiktoken $name", [ ours("$file$pattern") ], \@js);
    }
}

done_testing();
