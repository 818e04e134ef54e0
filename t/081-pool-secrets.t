# The provider key pool, continued: secrets never leave for anywhere but
# the provider; the pool behind the gateway; request shapes (chunked
# bodies, proxy_set_body, HTTP/1.0, no client headers); a pool of 1,000
# keys; state across a reload.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Time::HiRes ();

our $Tiers = $Test::LLM::Keys::TIERS;
our $ALICE = $Test::LLM::Keys::ALICE;

our @SECRETS = qw(sk-proj-SECRETaaa111 sk-proj-SECRETbbb222
                  sk-proj-SECRETccc333 AIzaSECRETgemini444);

sub slurp {
    my ($f) = @_;
    open(my $fh, '<', $f) or return '';
    local $/;
    return scalar <$fh>;
}

sub auth_of { ($_[0]{headers}{authorization} // '') =~ s/^Bearer //r }

our $BIG = join '', map { "    llm_pool_key k$_ secret=sk-big-$_;\n" } 1 .. 1000;

run_tests();

__DATA__

=== TEST 1: secrets: traffic with successes, retries, refusals and errors, then no secret in any response, the debug log or the access log
--- http_config
log_format all '$request|$request_uri|$args|$http_authorization|'
               '$upstream_addr|$upstream_status|$llm_pool_key|'
               '$sent_http_x_llm_provider_key|$status';
upstream openai {
    server 127.0.0.1:$TEST_NGINX_MOCK_PORT;
    llm_pool cooldown=1s;
    llm_pool_key a secret=sk-proj-SECRETaaa111;
    llm_pool_key b secret=sk-proj-SECRETbbb222;
    llm_pool_key c secret=sk-proj-SECRETccc333;
}
upstream gemini {
    server 127.0.0.1:$TEST_NGINX_MOCK_PORT;
    llm_pool;
    llm_pool_auth query=key;
    llm_pool_key g secret=AIzaSECRETgemini444;
}
--- config
access_log logs/access.log all;
proxy_next_upstream error timeout http_429 http_403 non_idempotent;
location /v1/ {
    proxy_pass http://openai;
}
location /chunked/ {
    proxy_request_buffering off;
    proxy_http_version 1.1;
    proxy_pass http://openai/v1/;
}
location /setbody/ {
    proxy_set_body '{"model":"fixed","messages":[]}';
    proxy_pass http://openai/v1/;
}
location /v1beta/ {
    proxy_pass http://gemini;
}
--- mock eval
sub {
    my ($req) = @_;
    my $a = $req->{headers}{authorization} // '';
    my $n = $req->{n};
    return { status => 429, headers => { 'retry-after-ms' => 300 },
             body => '{"error":{"message":"slow down"}}' }
        if $a =~ /aaa/ && $n % 3 == 1;
    return { status => 401, body => '{"error":{"message":"bad key"}}' }
        if $a =~ /ccc/;
    return { status => 500, body => 'oops' } if $req->{path} =~ /fail/;
    return LLMMock::default_handler($req);
}
--- request eval
[ "GET /v1/models",
  "POST /v1/chat/completions\n{\"model\":\"m\",\"messages\":[]}",
  "POST /v1/chat/completions\n{\"model\":\"m\",\"stream\":true,\"messages\":[]}",
  "GET /v1/fail",
  "POST /setbody/chat/completions\n{}",
  "GET /v1/models",
  "GET /v1/models HTTP/1.0",
  "POST /v1beta/models/g:generateContent?key=client\n{\"contents\":[]}",
  "GET /v1/models",
  "GET /v1/models" ]
--- more_headers
Authorization: Bearer client-credential
--- ignore_response
--- check eval
sub {
    my ($c) = @_;

    # a chunked body, unbuffered
    my $r = http_request("POST /chunked/chat/completions",
        more_headers => "Transfer-Encoding: chunked",
        body => "1c\r\n{\"model\":\"m\",\"messages\":[]}\r\n0\r\n\r\n");
    push @{ $c->{responses} }, $r;

    my @got = map { $_->{status} } @{ $c->{responses} };

    my $text = join "\n", (map { $_->{raw} // '' } @{ $c->{responses} }),
                          $c->{error_log},
                          slurp(servroot() . '/logs/access.log');

    my @hits = grep { index($text, $_) >= 0 } @::SECRETS;
    return (0, "secrets found: @hits") if @hits;

    return (0, "no debug log") unless $c->{error_log} =~ /\[debug\]/;

    # and the traffic did use every key, and the provider saw the secrets
    my %used;
    $used{ auth_of($_) }++ for mock_requests();
    my @seen = grep { $used{$_} } @::SECRETS[0 .. 2];
    my ($g) = grep { $_->{path} =~ /v1beta/ } mock_requests();

    return (@seen == 3 && $g && $g->{args} eq 'key=AIzaSECRETgemini444'
            && (grep { $_ == 502 } @got) && (grep { $_ == 200 } @got),
            "keys used: @seen; statuses: @got; gemini args: "
            . ($g ? $g->{args} : 'none'));
}



=== TEST 2: behind the gateway: the client's key is checked and stripped, the pool's key sent; a refusal keeps the API's shape
--- http_config eval
$::Tiers . <<'EOF';
upstream anthropic {
    server 127.0.0.1:$TEST_NGINX_MOCK_PORT;
    llm_pool;
    llm_pool_auth header=x-api-key;
    llm_pool_key main secret=sk-ant-pool-main;
}
EOF
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier small;
    proxy_pass http://anthropic;
}
--- mock eval
sub {
    my ($req) = @_;
    return { status => 402, body => '{"error":"billing"}' } if $req->{n} == 2;
    return LLMMock::default_handler($req);
}
--- request eval
["POST /v1/messages\n{\"model\":\"claude\",\"max_tokens\":5,\"messages\":[]}",
 "POST /v1/messages\n{\"model\":\"claude\",\"max_tokens\":5,\"messages\":[]}",
 "POST /v1/messages\n{\"model\":\"claude\",\"max_tokens\":5,\"messages\":[]}"]
--- more_headers eval: "x-api-key: $::ALICE"
--- error_code eval
[200, 502, 502]
--- response_body_like eval
['"type":"message"',
 '^\{"type":"error","error":\{"type":"api_error","message":"[^"]+"\}\}',
 '"type":"api_error"']
--- response_headers_like eval
[{ 'X-LLM-Provider-Key' => '^main$', 'X-Rate-Limit-Remaining' => '^2$' },
 { 'X-Rate-Limit-Remaining' => '^1$' }, {}]
--- mock_count: 2
--- check eval
sub {
    my @k = map { $_->{headers}{'x-api-key'} } mock_requests();
    return ("@k" eq 'sk-ant-pool-main sk-ant-pool-main', "x-api-key: @k");
}



=== TEST 3: 1,000 keys: no key is used twice while others are fresh, and a cooling key is left alone
--- http_config eval
"upstream big {\n    server 127.0.0.1:\$TEST_NGINX_MOCK_PORT;\n"
. "    llm_pool;\n$::BIG}\n"
--- config
location /v1/ {
    proxy_next_upstream error timeout http_429;
    proxy_pass http://big;
}
--- mock eval
sub {
    my ($req) = @_;
    return { status => 429, headers => { 'Retry-After' => 60 }, body => '{}' }
        if ($req->{headers}{authorization} // '') eq 'Bearer sk-big-7';
    return LLMMock::default_handler($req);
}
--- request
GET /v1/models
--- repeat: 300
--- concurrency: 8
--- check eval
sub {
    my %n;
    $n{ auth_of($_) }++ for mock_requests();
    my $keys = keys %n;
    my $seven = $n{'sk-big-7'} // 0;
    return ($keys > 150 && $seven <= 1,
            "distinct keys $keys (want > 150), sk-big-7 used $seven times");
}



=== TEST 4: a reload keeps cooldowns of keys that kept their name, and re-enables disabled keys
--- http_config
upstream openai {
    server 127.0.0.1:$TEST_NGINX_MOCK_PORT;
    llm_pool;
    llm_pool_key a secret=sk-aaa111;
}
--- config
location /v1/ {
    proxy_pass http://openai;
}
--- mock eval
sub {
    my ($req) = @_;
    return { status => 429, headers => { 'Retry-After' => 60 }, body => '{}' }
        if $req->{n} == 1;
    return LLMMock::default_handler($req);
}
--- request
GET /v1/models
--- error_code: 502
--- check eval
sub {
    reload_nginx();
    Time::HiRes::sleep(0.3);
    my $r = http_request("GET /v1/models");
    return ($r->{status} == 502 && ($r->{header}{'retry-after'} // 0) > 50
            && mock_requests() == 1,
            "after reload: $r->{status}, Retry-After "
            . ($r->{header}{'retry-after'} // 'none'));
}



=== TEST 5: proxy_pass_request_headers off still carries the key
--- http_config
upstream openai {
    server 127.0.0.1:$TEST_NGINX_MOCK_PORT;
    llm_pool;
    llm_pool_key a secret=sk-aaa111;
}
--- config
location /v1/ {
    proxy_pass_request_headers off;
    proxy_pass http://openai;
}
--- request
GET /v1/models?a=1&key=client&b=2
--- more_headers
Authorization: Bearer client
--- check eval
sub {
    my ($r) = mock_requests();
    return ($r->{headers}{authorization} eq 'Bearer sk-aaa111'
            && $r->{uri} eq '/v1/models?a=1&b=2',
            "authorization $r->{headers}{authorization}, uri $r->{uri}");
}



=== TEST 6: a server that keeps failing is left out for fail_timeout; its keys carry on elsewhere
--- http_config
upstream openai {
    server 127.0.0.1:$TEST_NGINX_DEAD_PORT max_fails=1 fail_timeout=30s;
    server 127.0.0.1:$TEST_NGINX_MOCK_PORT;
    llm_pool;
    llm_pool_key a secret=sk-aaa111;
    llm_pool_key b secret=sk-bbb222;
}
--- config
location /v1/ {
    proxy_pass http://openai;
}
--- request
GET /v1/models
--- repeat: 10
--- error_log eval
[qr/server 127\.0\.0\.1:\d+ failed 1 times, left out for 30000ms/]
--- check eval
sub {
    my %n;
    $n{ auth_of($_) }++ for mock_requests();
    my $refused = () = $_[0]{error_log} =~ /Connection refused/g;
    return (mock_requests() == 10 && $refused == 1
            && $n{'sk-aaa111'} && $n{'sk-bbb222'},
            "mock saw " . scalar(mock_requests()) . ", refused $refused");
}



=== TEST 7: a reload that adds a key keeps the others' cooldowns by name, and gives a disabled key another chance
--- http_config
upstream openai {
    server 127.0.0.1:$TEST_NGINX_MOCK_PORT;
    llm_pool;
    llm_pool_key a secret=sk-aaa111;
    llm_pool_key b secret=sk-bbb222;
}
--- config
location /v1/ {
    proxy_pass http://openai;
}
--- mock eval
sub {
    my ($req) = @_;
    return { status => 429, headers => { 'Retry-After' => 60 }, body => '{}' }
        if $req->{n} == 1;
    return { status => 401, body => '{}' } if $req->{n} == 2;
    return LLMMock::default_handler($req);
}
--- request eval
["GET /v1/models", "GET /v1/models"]
--- error_code eval
[502, 502]
--- check eval
sub {
    my $f = servroot() . '/conf/nginx.conf';
    open(my $in, '<', $f) or die "$f: $!";
    my $conf = do { local $/; <$in> };
    close $in;
    $conf =~ s/(llm_pool_key b [^\n]*\n)/$1    llm_pool_key z secret=sk-zzz999;\n/
        or die "no key b in nginx.conf";
    open(my $out, '>', $f) or die "$f: $!";
    print $out $conf;
    close $out;

    reload_nginx();
    Time::HiRes::sleep(0.3);

    http_request("GET /v1/models") for 1 .. 6;

    my @seq = map { auth_of($_) =~ s/^sk-//r } mock_requests();
    my %n;
    $n{$_}++ for @seq[2 .. $#seq];

    return (!$n{aaa111} && $n{bbb222} && $n{zzz999}
            && (errlog() =~ /2 of 3 keys keep their state/ ? 1 : 0),
            "after reload: @seq[2 .. $#seq]");
}



=== TEST 8: with llm_redis the fleet's pool state names keys, never their secrets, in Redis and in the debug log
--- http_config eval
"llm_zone llm:1m;\nllm_key_file $Test::LLM::Keys::KEY_FILE;\n"
. "llm_tier small requests=30/m;\nllm_tier quota requests=2/d;\n"
. "llm_redis 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} prefix=t081-$$:;\n"
. <<'_EOC_';
upstream openai {
    server 127.0.0.1:$TEST_NGINX_MOCK_PORT;
    llm_pool sync=100ms;
    llm_pool_key a secret=sk-proj-SECRETaaa111 requests=50/m;
    llm_pool_key b secret=sk-proj-SECRETbbb222;
    llm_pool_key c secret=sk-proj-SECRETccc333 requests=50/m tokens=9000/m;
}
_EOC_
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier small;
    proxy_next_upstream error timeout http_429 http_403 non_idempotent;
    proxy_pass http://openai;
}
--- mock eval
sub {
    my ($req) = @_;
    my $a = $req->{headers}{authorization} // '';
    return { status => 429, headers => { 'Retry-After' => 20 }, body => '{}' }
        if $a =~ /aaa/ && $req->{n} <= 3;
    return { status => 403, body => '{}' } if $a =~ /bbb/;
    return mock_openai(prompt_tokens => 100, completion_tokens => 300);
}
--- request
POST /v1/chat/completions
{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"Hi"}]}
--- more_headers eval: "Authorization: Bearer $Test::LLM::Keys::CAROL"
--- repeat: 6
--- check eval
sub {
    my ($c) = @_;
    Time::HiRes::sleep(0.4);
    my $port = $ENV{TEST_NGINX_REDIS_PORT};
    my $dump = '';
    for my $k (split /\n/, redis_cli($port, '--scan', '--pattern', "t081-$$:*")) {
        my $type = redis_cli($port, 'TYPE', $k);
        $dump .= "$k\n" . ($type =~ /hash/ ? redis_cli($port, 'HGETALL', $k)
                           : $type =~ /zset/ ? redis_cli($port, 'ZRANGE', $k, 0, -1)
                           : $type =~ /string/ ? redis_cli($port, 'GET', $k) : '')
                 . "\n";
    }
    my $text = $dump . $c->{error_log}
               . join("\n", map { $_->{raw} // '' } @{ $c->{responses} });
    my @hits = grep { index($text, $_) >= 0 } @::SECRETS;
    return (0, "secrets found: @hits") if @hits;
    my %h = split /\n/, redis_cli($port, 'HGETALL', "t081-$$:{pool:openai}");
    my $fields = join ' ', sort keys %h;
    return ($fields eq 'c:a d:b r:60000:a r:60000:c t:60000:c',
            "pool fields: $fields");
}
