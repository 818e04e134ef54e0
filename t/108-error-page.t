# error_page takes the gateway's refusals as it takes nginx's own errors:
# an operator's "error_page 429 ..." (a page, a named location, "=" for
# another status) answers instead of the gateway's JSON, and the
# rate-limit headers still come with it.  Without one for the status
# (the stock "error_page 500 502 503 504 /50x.html" included), the
# gateway's JSON answers, as before.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;

our $Tiers = $Test::LLM::Keys::TIERS;
our $ALICE = $Test::LLM::Keys::ALICE;

our $Four = ["GET /v1/models", "GET /v1/models", "GET /v1/models",
             "GET /v1/models"];

run_tests();

__DATA__

=== TEST 1: error_page 429 to a page of the operator's: its body with status 429, and the rate-limit headers and Retry-After of the refusal
--- http_config eval: $::Tiers
--- config
location /v1/ {
    llm_gateway on;
    error_page 429 /limited.json;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /limited.json {
    internal;
    default_type application/json;
    return 200 '{"slow":"down"}';
}
--- request eval: $::Four
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code eval
[200, 200, 200, 429]
--- response_headers_like eval
["", "", "",
"x-ratelimit-remaining-requests: ^0\$\nx-ratelimit-limit-requests: ^3\$\nRetry-After: ^(6[0-6]|5\\d)\$\nContent-Type: ^application/json\$"]
--- response_body_like eval
["", "", "", '^\{"slow":"down"\}$']



=== TEST 2: error_page 429 = @named: the named location answers with its own status (a fallback), the rate-limit headers still come, and the client's key does not reach the backend
--- http_config eval: $::Tiers
--- config
location /v1/ {
    llm_gateway on;
    error_page 429 = @fallback;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location @fallback {
    proxy_set_header X-Fallback yes;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval: $::Four
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code eval
[200, 200, 200, 200]
--- response_headers_like eval
["", "", "", "x-ratelimit-remaining-requests: ^0\$\nx-ratelimit-limit-requests: ^3\$"]
--- mock_count: 4
--- mock_log_unlike eval
$::ALICE



=== TEST 3: error_page 401 to a page: a request without a key gets the operator's page, status 401, x-should-retry false
--- http_config eval: $::Tiers
--- config
location /v1/ {
    llm_gateway on;
    error_page 401 /login.txt;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /login.txt {
    internal;
    return 200 "get a key at https://example.test/keys\n";
}
--- request
GET /v1/models
--- error_code: 401
--- response_headers
x-should-retry: false
--- response_body
get a key at https://example.test/keys



=== TEST 4: the stock "error_page 500 502 503 504 /50x.html" does not take a 429: the gateway's JSON answers
--- http_config eval: $::Tiers
--- config
location /v1/ {
    llm_gateway on;
    error_page 500 502 503 504 /50x.html;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /50x.html {
    return 200 "oops\n";
}
--- request eval: $::Four
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code eval
[200, 200, 200, 429]
--- response_body_like eval
["", "", "", '"code":"rate_limit_exceeded"']



=== TEST 5: error_page 429 = to a gateway location: the refused request is not counted again there (its count stays at the limit: the fifth request is refused too) and is proxied without the client's key
--- http_config eval: $::Tiers
--- config
location /v1/ {
    llm_gateway on;
    error_page 429 = /fallback/models;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location /fallback/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT/v1/;
}
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models", "GET /v1/models",
 "GET /v1/models"]
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code eval
[200, 200, 200, 200, 200]
--- response_headers_like eval
["", "", "", "x-ratelimit-remaining-requests: ^0\$", "x-ratelimit-remaining-requests: ^0\$"]
--- mock_count: 5
--- mock_log_unlike eval
$::ALICE



=== TEST 6: a 5xx of the gateway's (Redis unavailable, on_error=deny) is not taken by error_page, even one that lists 503 (the stock 50x page): API clients get the JSON 503 store_unavailable
--- http_config eval
$::Tiers . "llm_redis 127.0.0.1:1 on_error=deny timeout=200ms;\n"
--- config
location /v1/ {
    llm_gateway on;
    error_page 500 502 503 504 /50x.html;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /50x.html {
    return 200 "oops\n";
}
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code: 503
--- response_headers
Content-Type: application/json
--- response_body_like: "code":"store_unavailable"
--- mock_count: 0
