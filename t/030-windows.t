# Request windows: counting down, shared by an account's keys, refusals in
# each API's shape, quotas, cooldown, and the headers that say so.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;

our $Tiers = $Test::LLM::Keys::TIERS;
our ($ALICE, $ALICE2, $CAROL, $DAVE) = ($Test::LLM::Keys::ALICE,
    $Test::LLM::Keys::ALICE2, $Test::LLM::Keys::CAROL, $Test::LLM::Keys::DAVE);

our $Gateway = <<'_EOC_';
location /v1/ {
    llm_gateway on;
    llm_default_tier small;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    add_header X-Result "$llm_limit_result" always;
}
location /v1beta/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
_EOC_

run_tests();

__DATA__

=== TEST 1: requests=3/m admits three, then 429 with Retry-After
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models", "GET /v1/models"]
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code eval
[200, 200, 200, 429]
--- response_headers_like eval
[
"X-Rate-Limit-Remaining: ^2\$\nX-Rate-Limit-Limit: ^3\$\nx-ratelimit-reset-requests: ^(1m[0-6]s|[5-9]\\ds)\$\nX-Rate-Limit-Reset: ^\\d{10}\$\nX-Result: ^passed\$",
"X-Rate-Limit-Remaining: ^1\$",
"X-Rate-Limit-Remaining: ^0\$",
"X-Rate-Limit-Remaining: ^0\$\nRetry-After: ^(6[0-6]|5\\d)\$\nretry-after-ms: ^\\d{5}\$\nX-Result: ^limited\$\nx-ratelimit-remaining-requests: ^0\$",
]
--- response_body_like eval
["", "", "",
'^\{"error":\{"message":"Rate limit reached for requests per 1m \(limit 3\) in tier \\\\"small\\\\"\. Retry in \d+ s\.","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"\}\}$']
--- error_log
llm: account "alice" refused: Rate limit reached



=== TEST 2: the reset header points into the next minute and a 429 is not x-should-retry false
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models", "GET /v1/models"]
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code eval
[200, 200, 200, 429]
--- response_headers eval
["", "", "", "!x-should-retry"]
--- response_headers_like eval
my $now = time;
["X-Rate-Limit-Reset: ^(" . join('|', map { $now + $_ } 59 .. 68) . ")\$", "", "", ""]



=== TEST 3: two keys of one account share its windows
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models", "GET /v1/models"]
--- more_headers eval
["Authorization: Bearer $::ALICE", "x-api-key: $::ALICE2",
 "Authorization: Bearer $::ALICE2", "Authorization: Bearer $::ALICE"]
--- error_code eval
[200, 200, 200, 429]



=== TEST 4: accounts are counted apart
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models", "GET /v1/models", "GET /v1/models"]
--- more_headers eval
["Authorization: Bearer $::ALICE", "Authorization: Bearer $::ALICE",
 "Authorization: Bearer $::ALICE", "Authorization: Bearer $::CAROL",
 "Authorization: Bearer $::ALICE"]
--- error_code eval
[200, 200, 200, 200, 429]
--- response_headers eval
["", "", "", "X-Rate-Limit-Remaining: 2", "X-Rate-Limit-Remaining: 0"]



=== TEST 5: the location's default tier applies to keys that name none
--- http_config eval: $::Tiers . "llm_tier tiny requests=1/m;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier tiny;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    add_header X-Tier $llm_tier always;
}
--- request eval
["GET /v1/models", "GET /v1/models"]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[200, 429]
--- response_headers eval
["X-Tier: tiny\nX-Rate-Limit-Limit: 1", "X-Tier: tiny"]



=== TEST 6: a day window is a quota: 429 quota_exceeded and x-should-retry false
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models"]
--- more_headers eval: "Authorization: Bearer $::DAVE"
--- error_code eval
[200, 200, 429]
--- response_headers eval
["X-Rate-Limit-Limit: 2\nX-Rate-Limit-Remaining: 1",
 "X-Rate-Limit-Remaining: 0",
 "x-should-retry: false\nX-Rate-Limit-Limit: 2"]
--- response_body_like eval
["", "", '"code":"quota_exceeded"']
--- response_headers_like eval
["x-ratelimit-reset-requests: ^2[4-6]h\\d+m\\d+s\$", "", "Retry-After: ^(8[6-9]|9\\d)\\d{3}\$"]



=== TEST 7: the window with the least remaining is reported; ties go to the shorter period
--- http_config eval: $::Tiers . "llm_tier two requests=5/h requests=5/m requests=9/d;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier two;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["GET /v1/models"]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code: 200
--- response_headers
X-Rate-Limit-Limit: 5
X-Rate-Limit-Remaining: 4
--- response_headers_like
x-ratelimit-reset-requests: ^1m\ds$



=== TEST 8: Anthropic's error shape for a refusal on /v1/messages
--- http_config eval: $::Tiers . "llm_tier tiny requests=1/m;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier tiny;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["POST /v1/messages\n{}", "POST /v1/messages\n{}"]
--- more_headers eval: "x-api-key: $::CAROL"
--- error_code eval
[200, 429]
--- response_body_like eval
["", '^\{"type":"error","error":\{"type":"rate_limit_error","message":"Rate limit reached for requests per 1m \(limit 1\) in tier \\\\"tiny\\\\"\. Retry in \d+ s\."\}\}$']



=== TEST 9: Gemini's error shape for a quota refusal
--- http_config eval: $::Tiers . "llm_tier daily requests=1/d;\n"
--- config
location /v1beta/ {
    llm_gateway on;
    llm_default_tier daily;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["POST /v1beta/models/gemini-1.5-flash:generateContent?key=$::CAROL\n{}",
 "POST /v1beta/models/gemini-1.5-flash:generateContent?key=$::CAROL\n{}"]
--- error_code eval
[200, 429]
--- response_body_like eval
["", '^\{"error":\{"code":429,"message":"Quota reached for requests per 1d \(limit 1\) in tier \\\\"daily\\\\"\. Retry in \d+ s\.","status":"RESOURCE_EXHAUSTED"\}\}$']



=== TEST 10: a month window
--- http_config eval: $::Tiers . "llm_tier monthly requests=2/mo;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier monthly;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models"]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[200, 200, 429]
--- response_body_like eval
["", "", '"code":"quota_exceeded"']
--- response_headers_like eval
use POSIX ();
my @t = gmtime;
my ($y, $m) = ($t[5] + 1900, $t[4] + 1);
($y, $m) = $m == 12 ? ($y + 1, 1) : ($y, $m + 1);
local $ENV{TZ} = 'UTC';
POSIX::tzset();
my $next = POSIX::mktime(0, 0, 0, 1, $m - 1, $y - 1900);
["X-Rate-Limit-Reset: ^$next\$", "", "X-Rate-Limit-Reset: ^$next\$\nx-should-retry: ^false\$"]



=== TEST 11: a per-second window frees again within a second
--- http_config eval: $::Tiers . "llm_tier fast requests=2/s;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier fast;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models", "GET /v1/models"]
--- request_delay eval
[0, 0, 1.25, 0]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[200, 200, 200, 200]



=== TEST 12: cooldown: after a refusal the account gets 403 until the cooldown ends
--- http_config eval: $::Tiers . "llm_tier hot requests=1/m cooldown=2s;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier hot;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    add_header X-Result "$llm_limit_result" always;
}
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models"]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[200, 429, 403]
--- response_headers eval
["", "", "x-should-retry: false\nX-Result: rejected"]
--- response_headers_like eval
["", "Retry-After: ^(5\\d|6[0-6])\$", "Retry-After: ^(5\\d|6[0-6]|[12])\$"]
--- response_body_like eval
["", "rate_limit_exceeded", '"code":"account_suspended"']



=== TEST 13: llm_headers off sends none of the headers
--- http_config eval: $::Tiers . "llm_tier tiny requests=1/m;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier tiny;
    llm_headers off;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["GET /v1/models", "GET /v1/models"]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[200, 429]
--- response_headers eval
["!X-Rate-Limit-Limit\n!x-ratelimit-limit-requests", "!Retry-After\n!X-Rate-Limit-Remaining\n!retry-after-ms"]



=== TEST 14: the backend's own rate-limit headers do not reach the client
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- mock eval
sub {
    return { status => 200,
             headers => { 'Content-Type' => 'application/json',
                          'x-ratelimit-limit-requests' => '10000',
                          'x-ratelimit-remaining-tokens' => '149984',
                          'X-Backend' => 'yes' },
             body => '{"object":"list","data":[]}' };
}
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code: 200
--- response_headers
x-ratelimit-limit-requests: 3
!x-ratelimit-remaining-tokens
X-Backend: yes
--- response_body: {"object":"list","data":[]}



=== TEST 15: a refused request never reaches the backend and its body is discarded
--- http_config eval: $::Tiers . "llm_tier tiny requests=1/m;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier tiny;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["POST /v1/chat/completions\n{\"n\":\"first\"}", "POST /v1/chat/completions\n{\"n\":\"second\"}"]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[200, 429]
--- mock_log_like eval
[qr/"first"/]
--- mock_log_unlike eval
[qr/"second"/]



=== TEST 16: exact across two workers: requests=20/m, 120 concurrent requests, 20 admitted
--- workers: 2
--- http_config eval: $::Tiers . "llm_tier twenty requests=20/m;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier twenty;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- concurrency: 40
--- repeat: 120
--- status_counts: 200=20 429=100
