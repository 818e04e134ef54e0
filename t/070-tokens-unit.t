# Unit tests of the request parser, the response usage observer and the
# token estimator (src/ngx_http_llm_json.c, src/ngx_http_llm_tokens.c):
# t/unit/build.sh links them with nginx's pool and string objects into
# t/unit/llm_unit, which prints TAP; every one of its cases is a case here.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use Fcntl qw(:flock);
use Test::More;

my $root = abs_path(dirname(__FILE__) . '/..');
my $src = $ENV{NGX_SRC} || "$root/build/nginx-1.22.1";
my $objs = $ENV{NGX_OBJS} || "$root/build/release";
my $out = "$root/build/unit";

plan skip_all => "no nginx source tree at $src (run ./ngx_module build)"
    unless -f "$src/src/core/ngx_palloc.c";
plan skip_all => "no configured nginx (ngx_auto_config.h) in $objs"
    . " (run ./ngx_module build)"
    unless -f "$objs/ngx_auto_config.h";

# one run at a time builds and runs build/unit (two test runs in one tree)
open(my $lock, '>', "$out.lock") or die "$out.lock: $!";
flock($lock, LOCK_EX) or die "$out.lock: $!";

my $log = `sh '$root/t/unit/build.sh' '$src' '$objs' '$out' 2>&1`;
is($?, 0, 't/unit/build.sh builds llm_unit') or diag($log);

my $bin = "$out/llm_unit";

SKIP: {
    skip 'llm_unit was not built', 1 unless -x $bin;

    open(my $fh, '-|', $bin, "$root/t/unit/samples")
        or die "cannot run $bin: $!";

    my ($plan, $seen) = (undef, 0);

    while (my $line = <$fh>) {
        chomp $line;

        if ($line =~ /^(not )?ok \d+ - (.*)$/) {
            ok(!defined $1, $2);
            $seen++;

        } elsif ($line =~ /^1\.\.(\d+)$/) {
            $plan = $1;

        } elsif ($line =~ /^#/) {
            note($line);

        } else {
            diag($line);
        }
    }

    close($fh);

    is($? >> 8, 0, 'llm_unit exits 0');
    ok(defined $plan && $plan == $seen,
       "llm_unit ran its whole plan ($seen of " . ($plan // '?') . ')');
}

done_testing();
