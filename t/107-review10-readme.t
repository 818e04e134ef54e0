# Review 10: "an operator's first hour".  The README's ```nginx blocks
# are read from README.md itself (not copied here), so a block that
# changes or breaks fails this file:
#
#  TEST 1  every block is one this file knows (its section, its kind);
#          every example passes `nginx -t` in its natural context, with
#          the module loaded and only what the README says an operator
#          adds (an upstream "backend", a tier it names, a file it names);
#  TEST 2  every synopsis names a directive of the code's ngx_command_t
#          tables, in the context(s) the table allows, with parameters the
#          directive's handler parses, and every directive and parameter
#          of the code is in a synopsis;
#  TESTs 3-12, 15-17: the examples run: what the text next to each says
#          happens, against the mock backend (headers, bodies, logs);
#  TEST 13 a bug found on the way (llm_usage alone: no x-should-retry);
#  TEST 14 what the README says fails `nginx -t` does, and the ends of the
#          ranges it gives pass.
#
# A new ```nginx block in README.md fails TEST 1 until it is added to
# @KNOWN below (with its kind and what an operator adds around it).

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use File::Basename qw(dirname);
use Cwd qw(abs_path);

our $ROOT = abs_path(dirname(__FILE__) . '/..');

# A key of our own (its digest computed independently, as t/lib/keys.txt's
# are); each block writes the key-file line with the tier it needs.
our $KEY = 'sk-llm-axzOEUUDUmExCU5Gx8a1nHBX3pTIoJzT5tRmgQVa-kk';
our $DIGEST = 'e62920c463d6e8efb84ad9b1e3f593eeb4aa0608d6db603d0bed0207e97ff1fe';
our $Auth = "Authorization: Bearer $KEY";

# a JSON string's content
our $Str = '(?:[^"\\\\]|\\\\.)+';

sub key_file {
    my ($tier) = @_;
    return ">>> conf/keys.txt\n$DIGEST acme" . ($tier ? " tier=$tier" : '')
           . "\n";
}

# README.md's ```nginx blocks: [ section, text, line ]
sub readme_blocks {
    open my $fh, '<', "$ROOT/README.md" or die "README.md: $!";
    my ($section, $in, @b) = ('');
    while (my $l = <$fh>) {
        if (!$in && $l =~ /^#{2,3} (.+?)\s*$/) { $section = $1; next }
        if (!$in && $l =~ /^```nginx\s*$/) {
            $in = 1;
            push @b, [$section, '', $.];
            next;
        }
        if ($in && $l =~ /^```\s*$/) { $in = 0; next }
        $b[-1][1] .= $l if $in;
    }
    return @b;
}

# the Nth (from 1) ```nginx block of a README section
sub rb {
    my ($section, $n) = @_;
    my @b = grep { $_->[0] eq $section } readme_blocks();
    die "README.md has no ```nginx block $n in section \"$section\"\n"
        unless $b[$n - 1];
    return $b[$n - 1][1];
}

# Every block of the README, in order: section, kind, what an operator
# adds around it (http-level lines) for `nginx -t`.  Kinds: syntax (a
# synopsis), main, http, server (locations), upstream+server, http+server
# (http lines, then locations), main+http, http-wrapped ("http { ... }").
our $Backend = "upstream backend { server 127.0.0.1:\$TEST_NGINX_MOCK_PORT; }\n";

# "Errors": error_page 429 = @overflow, with the two upstreams it names
our $Overflow = "llm_zone z:1m;\nllm_tier one requests=1/m;\n"
    . "llm_anonymous_tier one;\n"
    . "upstream vllm { server 127.0.0.1:\$TEST_NGINX_MOCK_PORT; }\n"
    . "upstream small-model { server 127.0.0.1:\$TEST_NGINX_MOCK_PORT2; }\n";

our @KNOWN = (
    ['Two commands',                         'main'],
    ['llm_zone',                             'syntax'],
    ['llm_zone',                             'http'],
    ['llm_tier',                             'syntax'],
    ['llm_tier',                             'http'],
    ['llm_redis',                            'syntax'],
    ['llm_redis',                            'http'],
    ['llm_key_file',                         'syntax'],
    ['llm_gateway',                          'syntax'],
    ['llm_gateway',                          'server',
     "llm_zone z:1m;\nllm_tier free requests=5/m;\n"],
    ['llm_default_tier, llm_anonymous_tier', 'syntax'],
    ['llm_default_tier, llm_anonymous_tier', 'server',
     "llm_zone z:1m;\nllm_tier free requests=5/m;\n"
     . "llm_tier trial requests=1/m;\n"],
    ['llm_api',                              'syntax'],
    ['llm_headers',                          'syntax'],
    ['Token and cost windows',               'http', "llm_zone z:1m;\n"],
    ['llm_price',                            'syntax'],
    ['llm_price',                            'http'],
    ['llm_max_tokens_default, llm_stream_usage', 'syntax'],
    ['llm_max_tokens_default, llm_stream_usage', 'server',
     "llm_zone z:1m;\nllm_tier pro requests=5/m;\n"],
    ['Caching: $llm_cache_key',              'http+server',
     "llm_zone z:1m;\nllm_tier pro requests=5/m;\n"
     . "map \$request_method \$not_a_call { POST 0; default 1; }\n"],
    ['llm_tokenizer',                        'syntax'],
    ['llm_tokenizer',                        'http-wrapped'],
    ['llm_token_info, llm_usage',            'server',
     "llm_zone z:1m;\nllm_tier free requests=5/m;\n"],
    ['llm_pool',                             'syntax'],
    ['llm_pool',                             'upstream+server',
     "upstream openai { server 127.0.0.1:1; llm_pool; }\n"],
    ['llm_pool_auth',                        'syntax'],
    ['llm_pool_key',                         'syntax'],
    ['llm_pool_key',                         'main+http'],
    ['Errors',                               'server', $Overflow],
    ['Variables',                            'http'],
);

# What only exists on the operator's machine, made to exist here.
sub localize {
    my ($text, $dir) = @_;
    my $module = harness_config()->{module};
    $text =~ s{/path/to/ngx_http_llm_gateway_module\.so}{$module}g;
    $text =~ s{/etc/nginx/redis\.pass}{$dir/redis.pass}g;
    $text =~ s{/etc/nginx/openai-batch\.key}{$dir/batch.key}g;
    $text =~ s{/etc/nginx/cl100k_base\.tiktoken}{$dir/vocab.tiktoken}g;
    $text =~ s{/var/lib/nginx/cache}{$dir/cache}g;
    # no DNS here: the providers' names become the mock's address
    $text =~ s{server\s+(?:api\.openai\.com|generativelanguage\.googleapis\.com):443;}
              {server 127.0.0.1:$ENV{TEST_NGINX_MOCK_PORT};}g;
    $text =~ s/\$TEST_NGINX_MOCK_PORT2/$ENV{TEST_NGINX_MOCK_PORT2}/g;
    $text =~ s/\$TEST_NGINX_MOCK_PORT/$ENV{TEST_NGINX_MOCK_PORT}/g;
    return $text;
}

# a vocabulary in tiktoken's format: the 256 bytes, then two merges
sub vocab {
    require MIME::Base64;
    my @l = map { MIME::Base64::encode_base64(chr($_), '') . " $_" } 0 .. 255;
    my $r = 256;
    push @l, map { MIME::Base64::encode_base64($_, '') . ' ' . $r++ }
             ('Hello', ' world');
    return join("\n", @l) . "\n";
}

# a log file once it has N lines (a refusal's line may come after the
# client saw the connection close: nginx's lingering close)
sub log_lines {
    my ($name, $n) = @_;
    my $log = '';
    for (1 .. 50) {
        $log = do { local (@ARGV, $/) = (servroot() . "/logs/$name"); <> }
               // '';
        last if ($log =~ tr/\n//) >= $n;
        select(undef, undef, undef, 0.05);
    }
    return $log;
}

sub write_file {
    my ($path, $data) = @_;
    open my $fh, '>', $path or die "$path: $!";
    print $fh $data;
    close $fh;
}

# nginx -t on a configuration of MAIN, HTTP and SERVER parts; returns
# (ok, output)
sub nginx_t {
    my ($dir, $main, $http, $server, $load) = @_;
    my $c = harness_config();
    mkdir "$dir/$_" for qw(logs conf);
    my $conf = join "\n",
        ($> == 0 ? 'user root root;' : ()),
        ($load ? () : "load_module $c->{module};"),
        "pid $dir/nginx.pid;",
        "error_log $dir/logs/error.log info;",
        $main,
        'events { }',
        'http {',
        "access_log $dir/logs/access.log;",
        "client_body_temp_path $dir/tmp;",
        "proxy_temp_path $dir/tmp;",
        $http,
        'server {',
        '    listen 127.0.0.1:1;',
        $server,
        '}',
        '}', '';
    write_file("$dir/conf/nginx.conf", $conf);
    my $out = `$c->{nginx} -p $dir/ -c conf/nginx.conf -t 2>&1`;
    return ($? == 0, $out);
}

# directive => { ctx => 'http, server, location', handler, file }
sub code_directives {
    my %d;
    my $all = join '', map { local (@ARGV, $/) = ($_); <> }
                       glob "$ROOT/src/*.c";
    for my $f (glob "$ROOT/src/*.c") {
        my $src = do { local (@ARGV, $/) = ($f); <> };
        while ($src =~ /\{\s*ngx_string\("(llm_\w+)"\),\s*([^,]+),\s*(\w+),/g) {
            my ($name, $flags, $handler) = ($1, $2, $3);
            next unless $flags =~ /NGX_CONF_/;     # not a variable
            my @ctx;
            push @ctx, 'http' if $flags =~ /NGX_HTTP_MAIN_CONF/;
            push @ctx, 'server' if $flags =~ /NGX_HTTP_SRV_CONF/;
            push @ctx, 'location' if $flags =~ /NGX_HTTP_LOC_CONF/;
            push @ctx, 'upstream' if $flags =~ /NGX_HTTP_UPS_CONF/;
            $d{$name} = { ctx => join(', ', @ctx), handler => $handler,
                          src => $all };
        }
    }
    return \%d;
}

# the "NAME=" parameters a handler parses: string literals in its body
# (and, for llm_tier, its table of dimensions)
sub code_params {
    my ($d) = @_;
    my $src = $d->{src};
    # nginx's own slots (ngx_conf_set_flag_slot...) parse no "NAME="
    return undef if $d->{handler} =~ /^ngx_conf_/;
    my ($body) = $src =~ /\n\Q$d->{handler}\E\(ngx_conf_t[^\n]*\n\{(.*?)\n\}\n/s
        or die "no definition of $d->{handler} in src/*.c";
    my %p = map { $_ => 1 } $body =~ /"([a-z_]+)=/g;
    if ($d->{handler} eq 'ngx_http_llm_tier') {
        my ($dims) = $src =~ /ngx_http_llm_dims\[\] = \{(.*?)\};/s;
        $p{$_} = 1 for $dims =~ /ngx_string\("([a-z_]+)="\)/g;
    }
    return \%p;
}

run_tests();

__DATA__

=== TEST 1: every ```nginx block of README.md is known here, and every example passes nginx -t in its context (with the module loaded and what the README says an operator adds)
--- config
location = /x { return 204; }
--- request
GET /x
--- error_code: 204
--- check eval
sub {
    my @b = ::readme_blocks();
    my @bad;

    push @bad, scalar(@b) . " blocks in README.md, " . scalar(@::KNOWN)
               . " known here" unless @b == @::KNOWN;

    for my $i (0 .. $#b) {
        my ($section, $text, $line) = @{ $b[$i] };
        my $k = $::KNOWN[$i] or last;
        my ($want, $kind, $extra) = @$k;

        if ($section ne $want) {
            push @bad, "block " . ($i + 1) . " (README.md:$line) is in "
                       . "\"$section\", expected \"$want\"";
            last;
        }

        next if $kind eq 'syntax';

        my $dir = servroot() . "/readme-" . ($i + 1);
        mkdir $dir;
        mkdir "$dir/cache";
        ::write_file("$dir/redis.pass", "secret\n");
        ::write_file("$dir/batch.key", "sk-batch\n");
        ::write_file("$dir/vocab.tiktoken", ::vocab());

        $text = ::localize($text, $dir);
        $extra = ::localize($::Backend . ($extra // ''), $dir);

        my ($main, $http, $server, $load) = ('', $extra, '', 0);

        if ($kind eq 'main') {
            $main = $text;
            $load = 1;
        } elsif ($kind eq 'http') {
            $http .= $text;
        } elsif ($kind eq 'server') {
            $server = $text;
        } elsif ($kind eq 'http+server' || $kind eq 'upstream+server') {
            my ($h, $s) = $text =~ /\A(.*?)^(location.*)\z/ms
                or die "no location in block " . ($i + 1);
            $http .= $h;
            $server = $s;
        } elsif ($kind eq 'main+http') {
            my ($m, $h) = $text =~ /\A((?:env[^\n]*\n)+)(.*)\z/s
                or die "no env lines in block " . ($i + 1);
            $main = $m;
            $http .= $h;
        } elsif ($kind eq 'http-wrapped') {
            my ($h) = $text =~ /\Ahttp \{\n(.*)^\}\s*\z/ms
                or die "no http { } in block " . ($i + 1);
            $h =~ s/^\s*\.\.\.\s*$//mg;
            $http .= $h;
        }

        local $ENV{OPENAI_KEY_A} = 'sk-a';
        local $ENV{GEMINI_KEY_1} = 'g-1';
        local $ENV{GEMINI_KEY_2} = 'g-2';

        my ($ok, $out) = ::nginx_t($dir, $main, $http, $server, $load);
        push @bad, "block " . ($i + 1) . " (README.md:$line, $section): "
                   . "nginx -t failed:\n$out" unless $ok;
    }

    return @bad ? (0, join("\n", @bad)) : 1;
}



=== TEST 2: every synopsis names a directive of the code in the contexts its ngx_command_t allows, with the parameters its handler parses; every directive and parameter of the code is in a synopsis
--- config
location = /x { return 204; }
--- request
GET /x
--- error_code: 204
--- check eval
sub {
    my $code = ::code_directives();
    my (@bad, %documented);

    my @b = ::readme_blocks();

    for my $i (0 .. $#b) {
        next unless $::KNOWN[$i] && $::KNOWN[$i][1] eq 'syntax';
        my ($section, $text, $line) = @{ $b[$i] };

        # one directive per statement: "llm_x ARGS ...; # context; ..."
        while ($text =~ /^(llm_\w+)\b(.*?);([^\n]*)/msg) {
            my ($name, $args, $comment) = ($1, $2, $3);
            my $d = $code->{$name};

            if (!$d) {
                push @bad, "README.md:$line: $name is not a directive";
                next;
            }

            $documented{$name} = 1;

            # the context: the comment starts with it
            my ($ctx) = $comment =~ /#\s*([a-z, ]+?)\s*(?:[;:]|$)/;
            push @bad, "README.md:$line: $name: context \""
                       . ($ctx // '') . "\", the code's is \"$d->{ctx}\""
                unless defined $ctx && $ctx eq $d->{ctx};

            my $code_p = ::code_params($d) or next;
            my %readme_p = map { $_ => 1 } $args =~ /\b([a-z_]+)=/g;

            for my $p (sort keys %readme_p) {
                push @bad, "README.md:$line: $name: $p= is not parsed "
                           . "by $d->{handler}" unless $code_p->{$p};
            }

            for my $p (sort keys %$code_p) {
                push @bad, "$name: $d->{handler} parses $p=, the README's "
                           . "synopsis (README.md:$line) does not have it"
                    unless $readme_p{$p};
            }
        }
    }

    # llm_token_info and llm_usage: their example is their synopsis
    my $h = ::rb('llm_token_info, llm_usage', 1);
    for my $name ('llm_token_info', 'llm_usage') {
        my ($ctx) = $h =~ /\{ \Q$name\E;[^\n]*#\s*([a-z]+)/;
        $documented{$name} = 1;
        push @bad, "$name: context \"" . ($ctx // '') . "\", the code's "
                   . "is \"$code->{$name}{ctx}\""
            unless defined $ctx && $ctx eq $code->{$name}{ctx};
    }

    for my $name (sort keys %$code) {
        push @bad, "$name is in the code, in no README synopsis"
            unless $documented{$name};
    }

    return @bad ? (0, join("\n", @bad)) : 1;
}



=== TEST 3: "llm_tier" example: tier hot (requests=10/s cooldown=30s) admits 10 in a second, refuses the 11th (429 rate_limit_exceeded), then the account cools down (403 account_suspended, Retry-After, x-should-retry: false)
--- http_config eval
$::Backend . ::rb('llm_zone', 2) . ::rb('llm_tier', 2)
. "llm_key_file $::TEST_NGINX_SERVROOT/conf/keys.txt;\n"
--- config eval
::rb('llm_gateway', 2)
--- user_files eval: ::key_file('hot')
--- request eval
[ map { "POST /v1/chat/completions\n{}" } 1 .. 12 ]
--- more_headers eval: $::Auth
--- error_code eval
[ (200) x 10, 429, 403 ]
--- response_headers_like eval
[ ("X-Rate-Limit-Limit: ^10\$") x 11,
  "Retry-After: ^(29|30)\$\nretry-after-ms: ^\\d+\$\nx-should-retry: ^false\$" ]
--- response_body_like eval
[ ("") x 10, '"code":"rate_limit_exceeded"', '"code":"account_suspended"' ]
--- mock_count: 10



=== TEST 4: "llm_tier" example: tier free has a day window (requests=1000/d) and a minute window; the headers name the minute one (60, the least remaining); "llm_gateway" example: the key is checked and never forwarded upstream; a well-formed unknown key is refused
--- http_config eval
$::Backend . ::rb('llm_zone', 2) . ::rb('llm_tier', 2)
. "llm_key_file $::TEST_NGINX_SERVROOT/conf/keys.txt;\n"
--- config eval
::rb('llm_gateway', 2)
--- user_files eval: ::key_file('free')
--- request eval
[ "POST /v1/chat/completions\n{}", "POST /v1/chat/completions\n{}" ]
--- more_headers eval
[ $::Auth, "x-api-key: sk-llm-" . ("A" x 43) ]
--- error_code eval
[ 200, 401 ]
--- response_headers eval
[ undef, "x-should-retry: false\n!X-Rate-Limit-Limit" ]
--- response_headers_like eval
[ "X-Rate-Limit-Limit: ^60\$\nx-ratelimit-limit-requests: ^60\$\n"
  . "X-Rate-Limit-Remaining: ^59\$\nX-Rate-Limit-Reset: ^\\d{10}\$\n"
  . "x-ratelimit-reset-requests: ^1m[0-6]s\$", "" ]
--- response_body_like eval
[ '"model":', '^\{"error":\{"message":"[^"]+","type":"invalid_request_error","param":null,"code":"invalid_api_key"\}\}$' ]
--- mock_log_unlike
sk-llm-
(?i)^authorization:
--- mock_count: 1



=== TEST 5: "llm_default_tier, llm_anonymous_tier" example: a keyless client gets the trial tier, per address; a key of no tier gets free (llm_default_tier); a wrong key is still refused
--- http_config eval
$::Backend . ::rb('llm_zone', 2)
. "llm_tier free requests=5/m;\nllm_tier trial requests=1/m;\n"
. "llm_key_file $::TEST_NGINX_SERVROOT/conf/keys.txt;\n"
. "log_format t '\$llm_account|\$llm_tier|\$llm_limit_result';\n"
--- config eval
"access_log logs/t.log t;\n" . ::rb('llm_default_tier, llm_anonymous_tier', 2)
--- user_files eval: ::key_file()
--- request eval
[ ("POST /v1/chat/completions\n{}") x 4 ]
--- more_headers eval
[ "", "", $::Auth, "Authorization: Bearer sk-llm-" . ("B" x 43) ]
--- error_code eval
[ 200, 429, 200, 401 ]
--- response_headers eval
[ "X-Rate-Limit-Limit: 1", "X-Rate-Limit-Limit: 1",
  "X-Rate-Limit-Limit: 5", "!X-Rate-Limit-Limit" ]
--- check eval
sub {
    # two workers write the log: in any order
    my $log = ::log_lines('t.log', 4);
    my $sorted = join '', sort split /^/, $log;
    return 1 if $sorted eq "-|-|unauthorized\nacme|free|passed\n"
        . "anon:127.0.0.1|trial|limited\nanon:127.0.0.1|trial|passed\n";
    return (0, "access log:\n$log");
}



=== TEST 6: "Token and cost windows" and "llm_max_tokens_default, llm_stream_usage" examples: tier pro's token windows are reserved (512 output + the prompt), a stream is asked for its usage (stream_options), the backend's usage is what is charged, and the tokens headers name the token window with the least remaining (output_tokens=50000/m)
--- http_config eval
$::Backend . ::rb('llm_zone', 2) . ::rb('Token and cost windows', 1)
. ::rb('llm_price', 2)
. "llm_key_file $::TEST_NGINX_SERVROOT/conf/keys.txt;\n"
. "log_format t '\$llm_prompt_tokens+\$llm_completion_tokens \$llm_cost "
. "\$llm_tokens_estimated';\n"
--- config eval
"access_log logs/t.log t;\n"
. ::rb('llm_max_tokens_default, llm_stream_usage', 2)
--- user_files eval: ::key_file('pro')
--- request eval
[ "POST /v1/chat/completions\n"
  . '{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}',
  "POST /v1/chat/completions\n"
  . '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}' ]
--- more_headers eval: $::Auth
--- response_headers_like eval
# the token window with the least remaining: output_tokens=50000/m
[ "x-ratelimit-limit-tokens: ^50000\$\nx-ratelimit-remaining-tokens: ^49488\$",
  "x-ratelimit-remaining-tokens: ^494[5-8]\\d\$" ]
--- mock_log_like
"stream_options":\{"include_usage":true\}
--- check eval
sub {
    my @m = mock_requests();
    return (0, "the second request got stream_options")
        if $m[1]{body} =~ /stream_options/;
    my $log = ::log_lines('t.log', 2);
    # gpt-4o: 2.50 in, 10.00 out per million: 10 * 2.5 + 20 * 10 = 225 µ$
    return 1 if $log eq "10+20 0.000225 0\n10+20 0.000225 0\n";
    return (0, "access log:\n$log");
}



=== TEST 7: "Caching: $llm_cache_key" example (with the map its comment names): the same request written twice differently is one call to the backend, and the cache hit costs no tokens
--- http_config eval
my $b = ::rb('Caching: $llm_cache_key', 1);
$b =~ s{/var/lib/nginx/cache}{$::TEST_NGINX_SERVROOT/cache};
my ($h, $s) = $b =~ /\A(.*?)^(location.*)\z/ms;
$::CacheLocation = $s;
$::Backend . $h . ::rb('llm_zone', 2)
. "llm_tier pro requests=100/m tokens=100000/m;\n"
. "map \$request_method \$not_a_call { POST 0; default 1; }\n"
. "llm_key_file $::TEST_NGINX_SERVROOT/conf/keys.txt;\n"
--- config eval
$::CacheLocation =~ s/(proxy_pass[^\n]*\n)/$1    add_header X-Cache \$upstream_cache_status;\n/r
--- user_files eval: ::key_file()
--- request eval
[ "POST /v1/chat/completions\n"
  . '{"model":"gpt-4o","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}',
  "POST /v1/chat/completions\n"
  . '{ "messages": [{"content":"hi", "role":"user"}], "max_tokens":10, "model":"gpt-4o"}' ]
--- more_headers eval: $::Auth
--- response_headers_like eval
[ "X-Cache: ^MISS\$\nx-ratelimit-remaining-tokens: ^999[6-8]\\d\$",
  "X-Cache: ^HIT\$\nx-ratelimit-remaining-tokens: ^999[4-6]\\d\$" ]
--- mock_count: 1



=== TEST 8: "llm_tokenizer" example (a vocabulary of our own in tiktoken's format) and "llm_token_info, llm_usage" example: ?text= and a chat body are counted exactly ("method":"bpe"), no key needed; llm_usage shows the key's windows in the README's shape
--- http_config eval
my $b = ::rb('llm_tokenizer', 2);
$b =~ s{\A\s*http \{\n}{};
$b =~ s{^\}\s*\z}{}m;
$b =~ s{^\s*\.\.\.\s*$}{}mg;
$b =~ s{/etc/nginx/cl100k_base\.tiktoken}{$::TEST_NGINX_SERVROOT/conf/vocab.tiktoken};
$b . "llm_tier free requests=60/m;\n"
. "llm_key_file $::TEST_NGINX_SERVROOT/conf/keys.txt;\n"
--- config eval
"llm_gateway on;\n" . ::rb('llm_token_info, llm_usage', 1)
--- user_files eval
::key_file('pro') . ">>> conf/vocab.tiktoken\n" . ::vocab()
--- request eval
[ "GET /v1/tokens?text=Hello%20world",
  "POST /v1/tokens\n"
  . '{"model":"gpt-4o","messages":[{"role":"user","content":"Hello world"}]}',
  "GET /v1/usage" ]
--- more_headers eval
[ "", "", $::Auth ]
--- response_body eval
[ qq{{"tokens":2,"characters":11,"method":"bpe"}\n},
  qq{{"tokens":9,"characters":11,"method":"bpe"}\n}, undef ]
--- response_body_like eval
[ "", "", '^\{"account":"acme","key_id":"e62920c463d6","tier":"pro","windows":\[\{"dimension":"tokens","period":"1m","limit":200000,"used":0,"remaining":200000,"reset":\d+\}\]\}$' ]



=== TEST 9: "llm_pool_key" and "llm_pool" examples (the providers' names pointed at the mock): each key's secret goes upstream in its own way (Bearer; ?key= in the request line only), the client's key never does, and X-LLM-Provider-Key names the key
--- main_config eval
my $b = ::rb('llm_pool_key', 2);
my ($m) = $b =~ /\A((?:env[^\n]*\n)+)/;
$ENV{OPENAI_KEY_A} = 'sk-provider-a';
$ENV{GEMINI_KEY_1} = 'g-provider-1';
$ENV{GEMINI_KEY_2} = 'g-provider-2';
$m
--- http_config eval
my $b = ::rb('llm_pool_key', 2);
$b =~ s/\A(?:env[^\n]*\n)+//;
$b =~ s{/etc/nginx/openai-batch\.key}{$::TEST_NGINX_SERVROOT/conf/batch.key};
$b =~ s{server\s+\S+:443;}{server 127.0.0.1:$::TEST_NGINX_MOCK_PORT;}g;
"log_format t '\$request_uri \$llm_pool_key';\n" . $b
--- config eval
my $l = ::rb('llm_pool', 2);
$l =~ s{https://openai}{http://openai};
$l =~ s{^\s*proxy_ssl_[^\n]*\n}{}mg;
"access_log logs/access.log t;\n" . $l
. "location /v1beta/ { proxy_pass http://gemini; }\n"
--- user_files
>>> conf/batch.key
sk-provider-batch
--- request eval
[ ("POST /v1/chat/completions\n{}") x 3,
  "POST /v1beta/models/gemini-pro:generateContent?key=client-key\n{}" ]
--- more_headers eval
[ ("Authorization: Bearer client-key") x 3, "" ]
--- response_headers_like eval
[ ("X-LLM-Provider-Key: ^(team-a|batch)\$") x 3, "X-LLM-Provider-Key: ^g1\$" ]
--- mock_log_like
^Authorization: Bearer sk-provider-a\r?$
^Authorization: Bearer sk-provider-batch\r?$
^Host: api\.openai\.com\r?$
^POST /v1beta/models/gemini-pro:generateContent\?key=g-provider-1 HTTP
--- mock_log_unlike
client-key
--- access_log_unlike
provider
--- access_log_like
^/v1/chat/completions team-a$
^/v1/chat/completions batch$
^/v1beta/models/gemini-pro:generateContent\S* g1$
--- check eval
sub {
    my @m = mock_requests();
    my %k;
    $k{$_->{headers}{authorization} // ''}++ for @m[0 .. 2];
    # weight=2: batch twice, team-a once
    return 1 if $k{'Bearer sk-provider-batch'} == 2
                && $k{'Bearer sk-provider-a'} == 1;
    return (0, join ' ', %k);
}



=== TEST 10: "Variables" example: the README's log_format logs the account, the key id, the tier, the result, the model, the tokens and the cost
--- http_config eval
$::Backend . ::rb('llm_zone', 2) . ::rb('llm_tier', 2) . ::rb('llm_price', 2)
. "llm_key_file $::TEST_NGINX_SERVROOT/conf/keys.txt;\n"
. ::rb('Variables', 1)
--- config eval
"access_log logs/llm.log llm;\n" . ::rb('llm_gateway', 2)
--- user_files eval: ::key_file('free')
--- request
POST /v1/chat/completions
{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}
--- more_headers eval: $::Auth
--- check eval
sub {
    my $log = ::log_lines('llm.log', 1);
    return 1 if $log eq '127.0.0.1 acme e62920c463d6 free passed 200 '
        . '"POST /v1/chat/completions HTTP/1.1" gpt-4o tokens=10+20 '
        . "estimated=0 cost=0.000225\n";
    return (0, "access log:\n$log");
}



=== TEST 11: "llm_headers": the backend's own x-ratelimit-* and anthropic-ratelimit-* headers are dropped, the gateway's are sent; with llm_headers off, none of ours, and the backend's pass as they are (review10: the README said nothing of off)
--- http_config eval
$::Backend . ::rb('llm_zone', 2) . ::rb('llm_tier', 2)
. "llm_key_file $::TEST_NGINX_SERVROOT/conf/keys.txt;\n"
--- config eval
::rb('llm_gateway', 2)
. "location /off/ { llm_gateway on; llm_default_tier free; llm_headers off;"
. " proxy_pass http://backend; }\n"
--- user_files eval: ::key_file('free')
--- mock eval
sub {
    return { status => 200, body => '{}',
             headers => { 'x-ratelimit-remaining-requests' => 9999,
                          'x-ratelimit-limit-tokens' => 1,
                          'anthropic-ratelimit-requests-remaining' => 7 } };
}
--- request eval
[ "POST /v1/chat/completions\n{}", "POST /off/chat/completions\n{}" ]
--- more_headers eval: $::Auth
--- response_headers eval
[ "x-ratelimit-remaining-requests: 59\n!x-ratelimit-limit-tokens\n!anthropic-ratelimit-requests-remaining",
  "!X-Rate-Limit-Limit\n!X-Rate-Limit-Remaining\n!x-ratelimit-limit-requests\n"
  . "x-ratelimit-remaining-requests: 9999\nx-ratelimit-limit-tokens: 1\n"
  . "anthropic-ratelimit-requests-remaining: 7" ]



=== TEST 12: "Errors": a refusal's body follows the location's API (Anthropic's and Gemini's shapes, by URI); a quota (d window) refusal is quota_exceeded with x-should-retry: false
--- http_config eval
$::Backend . ::rb('llm_zone', 2) . "llm_tier q requests=1/d;\n"
--- config
location / { llm_gateway on; llm_anonymous_tier q; proxy_pass http://backend; }
--- request eval
[ "POST /v1/chat/completions\n{}", "POST /v1/chat/completions\n{}",
  "POST /v1/messages\n{}", "POST /v1beta/models/gemini-pro:generateContent\n{}" ]
--- error_code eval
[ 200, 429, 429, 429 ]
--- response_headers eval
[ undef, "x-should-retry: false", "x-should-retry: false", "x-should-retry: false" ]
--- response_body_like eval
[ "", '^\{"error":\{"message":"' . $::Str . '","type":"[a-z_]+",'
      . '"param":null,"code":"quota_exceeded"\}\}$',
  '^\{"type":"error","error":\{"type":"rate_limit_error","message":"'
      . $::Str . '"\}\}$',
  '^\{"error":\{"code":429,"message":"' . $::Str
      . '","status":"RESOURCE_EXHAUSTED"\}\}$' ]



=== TEST 13: llm_usage in a configuration with no llm_gateway location refuses a wrong key with the same headers as where one exists (review10: x-should-retry was missing: the gateway's header filter was only installed with a llm_gateway somewhere)
--- http_config eval
::rb('llm_zone', 2) . "llm_tier free requests=60/m;\n"
--- config eval
::rb('llm_token_info, llm_usage', 1)
--- request eval
[ "GET /v1/usage", "GET /v1/usage" ]
--- more_headers eval
[ "", "Authorization: Bearer sk-llm-" . ("C" x 43) ]
--- error_code: 401
--- response_headers
x-should-retry: false
Content-Type: application/json



=== TEST 14: what the README says fails nginx -t does, naming the file, the line and the parameter; the ends of the ranges it gives pass
--- config
location = /x { return 204; }
--- request
GET /x
--- error_code: 204
--- check eval
sub {
    my $dir = servroot() . "/claims";
    mkdir $dir;
    ::write_file("$dir/two-tiers.txt",
        "$::DIGEST acme tier=a\n" . ('0' x 64) . " acme tier=b\n");
    ::write_file("$dir/tier-twice.txt", "$::DIGEST acme tier=a tier=a\n");

    my $z = "llm_zone z:1m;\nllm_tier a requests=1/m;\nllm_tier b;\n";
    my $up = "upstream u { server 127.0.0.1:1; llm_pool; ";
    my $gw = "location / { llm_gateway on; }";
    my $file = qr/ in \S+nginx\.conf:\d+$/m;

    # [ http, server, undef (passes) or what the message says ]
    my @claims = (
        # llm_tier: "a window or a parameter given twice fails nginx -t"
        [ "$z llm_tier c requests=10/m requests=20/m;", '',
          qr/duplicate window "requests=20\/m"$file/ ],
        [ "$z llm_tier c concurrency=1 concurrency=2;", '',
          qr/duplicate parameter "concurrency=2"$file/ ],
        [ "$z llm_tier c priority=10;", '',
          qr/invalid value "priority=10"$file/ ],
        [ "$z llm_tier c priority=9 requests=1/mo cost=1000000000/mo;", '' ],
        [ "$z llm_tier c cost=40001/d;", '', qr/40000 USD$file/ ],
        [ "$z llm_tier c cost=40000/d;", '' ],
        # llm_key_file: two tiers for an account, tier= twice
        [ "$z llm_key_file $dir/two-tiers.txt;", '',
          qr/gives account "acme" two tiers, on lines 1 and 2/ ],
        [ "$z llm_key_file $dir/tier-twice.txt;", '',
          qr/line 1: duplicate parameter "tier=a"/ ],
        # llm_zone: needed by llm_gateway and llm_usage; at least 32k
        # (they name the file and line of the first: SPEC 3)
        [ '', $gw, qr/"llm_gateway" in \S+nginx\.conf:\d+ requires "llm_zone"/ ],
        [ 'llm_tier f;', 'location /u { llm_usage; llm_default_tier f; }',
          qr/"llm_usage" in \S+nginx\.conf:\d+ requires "llm_zone"/ ],
        [ 'llm_zone z:16k;', $gw, qr/zone "z:16k" is too small$file/ ],
        [ 'llm_zone z:32k;', $gw ],
        # llm_redis: the ranges of its table
        [ "$z llm_redis 127.0.0.1 db=65535 connections=64 batch=64 "
          . "key_cache=5s prefix=" . ('p' x 64) . ";", '' ],
        [ "$z llm_redis 127.0.0.1 db=65536;", '', qr/"db=65536"$file/ ],
        [ "$z llm_redis 127.0.0.1 connections=65;", '',
          qr/"connections=65"$file/ ],
        [ "$z llm_redis 127.0.0.1 batch=65;", '', qr/"batch=65"$file/ ],
        [ "$z llm_redis 127.0.0.1 key_cache=6s;", '',
          qr/"key_cache=6s"$file/ ],
        [ "$z llm_redis 127.0.0.1 prefix=" . ('p' x 65) . ";", '',
          qr/"prefix=p+"$file/ ],
        # llm_tokenizer pattern=
        [ "$z llm_tokenizer $dir/none.tiktoken pattern=p50k;", '',
          qr/invalid parameter "pattern=p50k"$file/ ],
        # llm_pool: sync=10ms..60s; llm_pool_key: weight 1..1000, a
        # missing variable or file names the key
        [ "upstream u { server 127.0.0.1:1; llm_pool sync=9ms; }", '',
          qr/invalid value "sync=9ms"$file/ ],
        [ "upstream u { server 127.0.0.1:1; llm_pool sync=10ms; "
          . "llm_pool_key k secret=s weight=1000; }", '' ],
        [ "upstream u { server 127.0.0.1:1; llm_pool sync=60s; "
          . "llm_pool_key k secret=s weight=1001; }", '',
          qr/invalid parameter "weight=1001"$file/ ],
        [ "$up llm_pool_key k secret=env:LLM_REVIEW10_UNSET; }", '',
          qr/llm_pool_key "k": environment variable "LLM_REVIEW10_UNSET" is not set$file/ ],
        [ "$up llm_pool_key k secret=file:$dir/none.key; }", '',
          qr/llm_pool_key "k": open\(\) "\S+none\.key" failed/ ],
    );

    my @bad;
    my $n = 0;

    for my $c (@claims) {
        my ($http, $server, $want) = @$c;
        my $d = "$dir/" . ++$n;
        mkdir $d;
        my ($ok, $out) = ::nginx_t($d, '', $http, $server);

        if (!defined $want) {
            push @bad, "$n: should pass:\n$out" unless $ok;
        } elsif ($ok || $out !~ $want) {
            push @bad, "$n: should fail with $want:\n$out";
        }
    }

    return @bad ? (0, join("\n", @bad)) : 1;
}



=== TEST 15: "llm_gateway": a key is taken from each of the five places, in the README's order of preference; none of them goes upstream, a key argument is masked in $request and $request_uri; an Authorization of another scheme (Basic) passes
--- http_config eval
$::Backend . ::rb('llm_zone', 2) . ::rb('llm_tier', 2)
. "llm_key_file $::TEST_NGINX_SERVROOT/conf/keys.txt;\n"
. "log_format r '\$request|\$request_uri';\n"
--- config eval
"access_log logs/r.log r;\n" . ::rb('llm_gateway', 2)
--- user_files eval: ::key_file('free')
--- request eval
my $w = "sk-llm-" . ("W" x 43);
[ "POST /v1/chat/completions?key=$::KEY&x=1\n{}",
  "POST /v1/chat/completions\n{}",
  "POST /v1/chat/completions\n{}",
  "POST /v1/chat/completions\n{}",
  "POST /v1/chat/completions?key=$w\n{}",
  "POST /v1/chat/completions\n{}" ]
--- more_headers eval
my $w = "sk-llm-" . ("W" x 43);
[ "",
  "Authorization: Bearer $::KEY\nx-api-key: $w",
  "x-api-key: $::KEY\napi-key: $w",
  "api-key: $::KEY\nx-goog-api-key: $w",
  "x-goog-api-key: $::KEY",
  "x-goog-api-key: $::KEY\nAuthorization: Basic dXNlcjpwYXNz" ]
--- error_code: 200
--- mock_count: 6
--- mock_log_like
^POST /v1/chat/completions\?x=1 HTTP
^Authorization: Basic dXNlcjpwYXNz\r?$
--- mock_log_unlike
sk-llm-
(?i)^(x-api-key|api-key|x-goog-api-key):
key=
--- check eval
sub {
    my $log = ::log_lines('r.log', 6);
    return (0, "a key in the access log:\n$log") if $log =~ /sk-llm-/;
    return 1 if $log =~ m{^POST\ /v1/chat/completions\?key=\*+&x=1\ HTTP/1\.1
                          \|/v1/chat/completions\?key=\*+&x=1$}mx;
    return (0, "access log:\n$log");
}



=== TEST 16: "llm_api": auto picks the error shape by URI, with the README's exceptions (an Assistants thread's messages, Gemini's OpenAI-compatible path, a fine-tuned model's colons are OpenAI's; a Gemini method after the last colon is Gemini's)
--- http_config eval
::rb('llm_zone', 2)
--- config
location / { llm_gateway on; proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT; }
--- request eval
[ map { "POST $_\n{}" } qw(/v1/messages /v1/threads/abc/messages
    /v1beta/models/gemini-pro:generateContent /v1beta/openai/chat/completions
    /v1/models/ft:gpt-4o-mini:org::id /x/y:predict /v1/chat/completions) ]
--- error_code: 401
--- response_body_like eval
my $o = '^\{"error":\{"message":"' . $::Str . '","type":'
        . '"invalid_request_error","param":null,"code":"invalid_api_key"\}\}$';
my $a = '^\{"type":"error","error":\{"type":"authentication_error",'
        . '"message":"' . $::Str . '"\}\}$';
my $g = '^\{"error":\{"code":401,"message":"' . $::Str
        . '","status":"UNAUTHENTICATED"\}\}$';
[ $a, $o, $g, $o, $o, $g, $o ]
--- mock_count: 0



=== TEST 17: "Errors" example: error_page 429 = @overflow sends what the limit refuses to the cheaper backend, which answers
--- http_config eval: $::Overflow
--- config eval: ::rb('Errors', 1)
--- request eval
[ ("POST /v1/chat/completions\n{}") x 2 ]
--- error_code: 200
--- check eval
sub {
    my @m = mock_requests();
    my @ports = map { $_->{port} } @m;
    return 1 if @m == 2 && $ports[0] == $::TEST_NGINX_MOCK_PORT
                && $ports[1] == $::TEST_NGINX_MOCK_PORT2;
    return (0, "the mock got requests on ports @ports");
}



=== TEST 18: "Two commands": `./ngx_module keygen acme pro` prints the key (line 1) and its key-file line (line 2), which nginx takes; a command that takes no arguments refuses them (review10: `./ngx_module clean --help` removed build/)
--- config
location = /x { return 204; }
--- request
GET /x
--- error_code: 204
--- check eval
sub {
    my $out = `cd $::ROOT && ./ngx_module keygen acme pro 2>/dev/null`;
    return (0, "keygen: $out")
        unless $out =~ /\A(sk-llm-[A-Za-z0-9_-]{43})\n([0-9a-f]{64} acme tier=pro)\n\z/;
    my $line = $2;

    my $dir = servroot() . "/keygen";
    mkdir $dir;
    ::write_file("$dir/keys.txt", "$line\n");
    my ($ok, $t) = ::nginx_t($dir, '',
        "llm_zone z:1m;\nllm_tier pro;\nllm_key_file $dir/keys.txt;\n", '');
    return (0, "nginx -t with the keygen line:\n$t") unless $ok;

    my $err = `cd $::ROOT && ./ngx_module stop now 2>&1 >/dev/null`;
    return (0, "./ngx_module stop now: exit $?, $err")
        unless $? != 0 && $err =~ /'stop' takes no arguments/;
    return 1;
}



=== TEST 19: llm_usage alone, Redis away: a key it cannot check gets 503 store_unavailable with Retry-After, as the README says (review10: no Retry-After without a llm_gateway somewhere)
--- http_config eval
::rb('llm_zone', 2) . "llm_tier free requests=60/m;\n"
. "llm_redis 127.0.0.1:$::TEST_NGINX_DEAD_PORT timeout=50ms;\n"
--- config eval
::rb('llm_token_info, llm_usage', 1)
--- request eval
"GET /v1/usage"
--- more_headers eval
"Authorization: Bearer sk-llm-" . ("D" x 43)
--- error_code: 503
--- response_headers
Retry-After: 1
retry-after-ms: 1000
--- response_body_like: "code":"store_unavailable"
