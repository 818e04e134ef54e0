# Regressions found in review: state that must survive a reload or a change
# of tier, credentials that must not leak through other paths, and the
# gateway's place among nginx's own access checks.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Time::HiRes ();

our $Tiers = $Test::LLM::Keys::TIERS;
our ($ALICE, $CAROL) = ($Test::LLM::Keys::ALICE, $Test::LLM::Keys::CAROL);

run_tests();

__DATA__

=== TEST 1: a reload keeps every account's counts
--- http_config eval: $::Tiers . "llm_tier two requests=2/m requests=5/mo;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier two;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["GET /v1/models", "GET /v1/models"]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[200, 200]
--- check eval
sub {
    reload_nginx();
    Time::HiRes::sleep(0.5);

    my $r = http_request("GET /v1/models",
                         more_headers => "Authorization: Bearer $::CAROL");

    my ($left) = map { $_->[1] } grep { lc $_->[0] eq 'x-rate-limit-remaining' }
                 @{ $r->{headers} };

    return ($r->{status} == 429 && ($left // '') eq '0',
            "after reload: status $r->{status}, remaining "
            . ($left // 'none') . "; expected 429 and 0");
}



=== TEST 2: one account through two tiers keeps one count per dimension and period
--- http_config eval: $::Tiers . "llm_tier t2 requests=2/m;\nllm_tier t3 requests=3/m;\n"
--- config
location /a/ {
    llm_gateway on;
    llm_default_tier t2;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location /b/ {
    llm_gateway on;
    llm_default_tier t3;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["GET /a/x", "GET /b/x", "GET /a/x", "GET /b/x", "GET /b/x", "GET /a/x"]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[200, 200, 429, 200, 429, 429]



=== TEST 3: a key file may not give one account two tiers
--- http_config
llm_zone llm:1m;
llm_tier a requests=1/m;
llm_tier b requests=2/m;
llm_key_file $TEST_NGINX_SERVROOT/keys.txt;
--- user_files
>>> keys.txt
2a42e4c415729042128b13e9316e40f4333d8f3bfa64cfbe89f187cc928cc7ce alice tier=a
e62920c463d6e8efb84ad9b1e3f593eeb4aa0608d6db603d0bed0207e97ff1fe carol tier=b
2038418a87abd09ccc759a8f31c8a417b15685cd25a826d6bad9efc694d02b9d alice tier=b
--- config
--- must_die
--- error_log eval
qr/keys\.txt" gives account "alice" two tiers, on lines 1 and 3/



=== TEST 4: impossible dates and offsets in expires= are refused
--- http_config
llm_zone llm:1m;
llm_key_file $TEST_NGINX_SERVROOT/keys.txt;
--- user_files
>>> keys.txt
2a42e4c415729042128b13e9316e40f4333d8f3bfa64cfbe89f187cc928cc7ce alice expires=2030-02-31
--- config
--- must_die
--- error_log eval
qr/line 1: invalid "expires=2030-02-31"/



=== TEST 5: an offset that is not a number is refused
--- http_config
llm_zone llm:1m;
llm_key_file $TEST_NGINX_SERVROOT/keys.txt;
--- user_files
>>> keys.txt
2a42e4c415729042128b13e9316e40f4333d8f3bfa64cfbe89f187cc928cc7ce alice expires=2030-01-01T10:00:00+01:xx
--- config
--- must_die
--- error_log eval
qr/line 1: invalid "expires=2030-01-01T10:00:00\+01:xx"/



=== TEST 6: offsets and fractions are understood
--- http_config
llm_zone llm:1m;
llm_key_file $TEST_NGINX_SERVROOT/keys.txt;
--- user_files
>>> keys.txt
2a42e4c415729042128b13e9316e40f4333d8f3bfa64cfbe89f187cc928cc7ce alice expires=2099-06-30t23:59:59.123-05:30
e62920c463d6e8efb84ad9b1e3f593eeb4aa0608d6db603d0bed0207e97ff1fe carol expires=2024-02-29T00:00:00+00:00
--- config
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["GET /v1/models", "GET /v1/models"]
--- more_headers eval
["Authorization: Bearer $::ALICE", "Authorization: Bearer $::CAROL"]
--- error_code eval
[200, 401]



=== TEST 7: ?key= is masked in $request over HTTP/2 too
--- http_config eval
$::Tiers . <<'_EOC_';
log_format h2 "request=[$request] uri=[$request_uri]";
server {
    listen unix:$TEST_NGINX_SERVROOT/h2.sock http2;
    access_log $TEST_NGINX_SERVROOT/logs/h2.log h2;
    location /v1/ {
        llm_gateway on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
}
_EOC_
--- config
location = /t { return 204; }
--- request
GET /t
--- error_code: 204
--- check eval
sub {
    my $sock = servroot() . "/h2.sock";
    my $code = `curl -s -o /dev/null -w '%{http_code}' --http2-prior-knowledge --unix-socket $sock 'http://localhost/v1/models?a=1&key=$::ALICE&z=2'`;
    Time::HiRes::sleep(0.2);
    my $log = do { local (@ARGV, $/) = (servroot() . "/logs/h2.log"); <> } // '';
    return (0, "status $code over HTTP/2") if $code ne '200';
    return (0, "key in the HTTP/2 access log: $log") if index($log, $::ALICE) >= 0;
    return ($log =~ /key=\*{50}&z=2 HTTP\/2\.0\]/, "log: $log");
}
--- mock_log_unlike eval
[qr/\Q$::ALICE\E/]



=== TEST 8: the gateway runs after deny: a denied request is not counted
--- http_config eval: $::Tiers
--- config
location /closed/ {
    deny all;
    llm_gateway on;
    llm_default_tier small;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location /v1/ {
    llm_gateway on;
    llm_default_tier small;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["GET /closed/x", "GET /closed/x", "GET /closed/x", "GET /v1/models"]
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code eval
[403, 403, 403, 200]
--- response_headers eval
["", "", "", "X-Rate-Limit-Remaining: 2"]



=== TEST 9: Authorization with another scheme is not ours: it passes, x-api-key counts
--- http_config eval: $::Tiers
--- config
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    add_header X-Account $llm_account always;
}
--- request
GET /v1/models
--- more_headers eval: "Authorization: Basic dTpw\nx-api-key: $::ALICE"
--- error_code: 200
--- response_headers
X-Account: alice
--- mock_log_like eval
[qr/^Authorization: Basic dTpw/mi]
--- mock_log_unlike eval
[qr/\Q$::ALICE\E/]



=== TEST 10: a $http_x_api_key evaluated before the gateway shows no key afterwards
--- http_config eval: $::Tiers . "limit_req_zone \$http_x_api_key zone=perkey:1m rate=100r/s;\n"
--- config
location /v1/ {
    limit_req zone=perkey burst=10;
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    add_header X-K "[$http_x_api_key]" always;
}
--- request
GET /v1/models
--- more_headers eval: "x-api-key: $::ALICE"
--- error_code: 200
--- response_headers_like
X-K: ^\[\**\]$



=== TEST 11: a cooldown's 403 and a concurrency 429 still carry the window headers
--- http_config eval: $::Tiers . "llm_tier hot requests=1/m cooldown=5s;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier hot;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models"]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[200, 429, 403]
--- response_headers eval
["", "", "X-Rate-Limit-Limit: 1\nX-Rate-Limit-Remaining: 0"]
--- response_headers_like eval
["", "", "Retry-After: ^[1-5]\$"]
