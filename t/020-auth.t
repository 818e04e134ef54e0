# Authentication: the four credential forms, bad credentials, and what
# reaches the backend.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;

our $Tiers = $Test::LLM::Keys::TIERS;
our ($ALICE, $DAVE, $EVE, $FRANK) = ($Test::LLM::Keys::ALICE,
    $Test::LLM::Keys::DAVE, $Test::LLM::Keys::EVE, $Test::LLM::Keys::FRANK);

our $Vars = <<'_EOC_';
add_header X-Account "$llm_account" always;
add_header X-Key-Id "$llm_key_id" always;
add_header X-Tier "$llm_tier" always;
add_header X-Result "$llm_limit_result" always;
add_header X-Seen-Auth "[$http_authorization][$http_x_api_key][$http_api_key][$arg_key]" always;
_EOC_

our $Gateway = <<"_EOC_";
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:\$TEST_NGINX_MOCK_PORT;
    $Vars
}
location /v1beta/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:\$TEST_NGINX_MOCK_PORT;
}
_EOC_

run_tests();

__DATA__

=== TEST 1: Authorization: Bearer
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request
POST /v1/chat/completions
{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code: 200
--- response_headers
X-Account: alice
X-Key-Id: 2a42e4c41572
X-Tier: small
X-Result: passed
X-Seen-Auth: [][][][]
X-Rate-Limit-Limit: 3
X-Rate-Limit-Remaining: 2
x-ratelimit-limit-requests: 3
x-ratelimit-remaining-requests: 2
!Retry-After
!x-should-retry
--- mock_log_unlike eval
[qr/\Q$::ALICE\E/, qr/^authorization:/mi]



=== TEST 2: x-api-key (the Anthropic SDK before 1.0)
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request
POST /v1/messages
{"model":"claude-3-5-haiku","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}
--- more_headers eval: "x-api-key: $::ALICE"
--- error_code: 200
--- response_headers
X-Account: alice
X-Seen-Auth: [][][][]
--- mock_log_unlike eval
[qr/\Q$::ALICE\E/, qr/^x-api-key:/mi]



=== TEST 3: api-key (Azure style)
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: "api-key: $::ALICE"
--- error_code: 200
--- response_headers
X-Account: alice
X-Seen-Auth: [][][][]
--- mock_log_unlike eval
[qr/\Q$::ALICE\E/, qr/^api-key:/mi]



=== TEST 3b: x-goog-api-key (Gemini's SDKs), taken out of what goes upstream
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request
POST /v1/models/gemini-2.0-flash:generateContent
{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}
--- more_headers eval: "x-goog-api-key: $::ALICE"
--- error_code: 200
--- response_headers
X-Account: alice
--- mock_log_unlike eval
[qr/\Q$::ALICE\E/, qr/^x-goog-api-key:/mi]



=== TEST 4: ?key= is taken out of the upstream URI and masked in $request_uri
--- http_config eval: $::Tiers
--- config
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    add_header X-Request-Uri $request_uri always;
    add_header X-Args $args always;
}
--- request eval
"GET /v1/models?alt=sse&key=$::ALICE&x=1"
--- error_code: 200
--- response_headers eval
"X-Request-Uri: /v1/models?alt=sse&key=" . ('*' x length $::ALICE) . "&x=1\n"
. "X-Args: alt=sse&x=1\n"
--- mock_log_like eval
[qr{^GET /v1/models\?alt=sse&x=1 HTTP/1\.[01]$}m]



=== TEST 5: the Bearer scheme is case-insensitive and blanks around the key are ignored
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: "authorization: bearer     $::ALICE  "
--- error_code: 200
--- response_headers
X-Account: alice



=== TEST 6: no key at all
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request
GET /v1/models
--- error_code: 401
--- response_headers
Content-Type: application/json
x-should-retry: false
X-Result: unauthorized
!X-Rate-Limit-Limit
--- response_body
{"error":{"message":"Missing API key. Send it as \"Authorization: Bearer KEY\".","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}
--- mock_log_unlike eval
[qr/./]



=== TEST 7: an empty Bearer
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers
Authorization: Bearer 
--- error_code: 401
--- response_body_like: "code":"invalid_api_key"



=== TEST 8: an unknown key
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers
Authorization: Bearer sk-llm-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
--- error_code: 401
--- response_body
{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}
--- response_headers
!X-Key-Id



=== TEST 9: an expired key
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::EVE"
--- error_code: 401
--- response_body_like: "message":"This API key has expired\."
--- response_headers
x-should-retry: false
X-Key-Id: a001d9e263c6
!X-Account



=== TEST 10: another scheme than Bearer
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: "Authorization: Basic $::ALICE"
--- error_code: 401
--- response_body_like: "code":"invalid_api_key"



=== TEST 11: a 10 KB key is refused without trouble
--- http_config eval: $::Tiers
--- config eval: "large_client_header_buffers 4 32k;\n" . $::Gateway
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer sk-llm-" . ('A' x 10240)
--- error_code: 401
--- response_body_like: "code":"invalid_api_key"



=== TEST 12: a NUL byte inside a key given as ?key=
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request eval
"GET /v1/models?key=" . substr($::ALICE, 0, 20) . "%00" . substr($::ALICE, 20)
--- error_code: 401
--- response_body_like: "code":"invalid_api_key"



=== TEST 13: CR inside a credential header is refused by nginx itself
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- raw_request eval
"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nx-api-key: sk-llm-abc\rdef\r\nConnection: close\r\n\r\n"
--- error_code: 400
--- mock_log_unlike eval
[qr/./]



=== TEST 14: JSON and header injection in a key is not echoed
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers
x-api-key: sk-llm-"},"injected":{"a":"\u0000
--- error_code: 401
--- response_body
{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}



=== TEST 15: every credential form at once: none reaches the backend, Bearer wins
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request eval
"GET /v1/models?key=$::DAVE"
--- more_headers eval
"Authorization: Bearer $::ALICE\nx-api-key: $::DAVE\napi-key: $::DAVE\nX-Api-Key: $::DAVE\nx-goog-api-key: $::DAVE\n"
--- error_code: 200
--- response_headers
X-Account: alice
X-Seen-Auth: [][][][]
--- mock_log_unlike eval
[qr/\Q$::ALICE\E/, qr/\Q$::DAVE\E/, qr/^(authorization|x-api-key|api-key|x-goog-api-key):/mi, qr/key=/]



=== TEST 16: anonymous clients are served under llm_anonymous_tier, per address
--- http_config eval: $::Tiers . "llm_tier anon requests=2/m;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_anonymous_tier anon;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    add_header X-Account "$llm_account" always;
    add_header X-Tier "$llm_tier" always;
}
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models"]
--- error_code eval
[200, 200, 429]
--- response_headers eval
["X-Account: anon:127.0.0.1\nX-Tier: anon\nX-Rate-Limit-Remaining: 1",
 "X-Rate-Limit-Remaining: 0",
 "X-Rate-Limit-Remaining: 0\nX-Account: anon:127.0.0.1"]



=== TEST 17: with an anonymous tier, a wrong key is still refused
--- http_config eval: $::Tiers . "llm_tier anon requests=2/m;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_anonymous_tier anon;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request
GET /v1/models
--- more_headers
Authorization: Bearer sk-llm-nope
--- error_code: 401



=== TEST 18: a key with no tier anywhere is authenticated and not limited
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models", "GET /v1/models"]
--- more_headers eval: "Authorization: Bearer $::FRANK"
--- error_code eval
[200, 200, 200, 200]
--- response_headers
X-Account: frank
X-Result: passed
!X-Rate-Limit-Limit
!x-ratelimit-limit-requests



=== TEST 19: errors in Gemini's shape on Gemini URIs (llm_api auto)
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request
POST /v1beta/models/gemini-1.5-flash:generateContent
{"contents":[{"parts":[{"text":"hi"}]}]}
--- error_code: 401
--- response_body
{"error":{"code":401,"message":"Missing API key. Send it as \"Authorization: Bearer KEY\".","status":"UNAUTHENTICATED"}}



=== TEST 19b: an OpenAI fine-tuned model's URI has colons, and is OpenAI's (llm_api auto): errors in OpenAI's shape
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request
GET /v1/models/ft:gpt-4o-mini-2024-07-18:acme::AbC123
--- error_code: 401
--- response_body_like
^\{"error":\{"message":"Missing API key.*","type":"invalid_request_error","param":null,"code":"invalid_api_key"\}\}$



=== TEST 19c: Vertex AI's URI, a method after the model's colon, is Gemini's
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request
POST /v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash:streamGenerateContent
{"contents":[{"parts":[{"text":"hi"}]}]}
--- error_code: 401
--- response_body_like
^\{"error":\{"code":401,"message":"Missing API key.*","status":"UNAUTHENTICATED"\}\}$



=== TEST 20: errors in Anthropic's shape with llm_api anthropic
--- http_config eval: $::Tiers
--- config
location /proxy/ {
    llm_gateway on;
    llm_api anthropic;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request
POST /proxy/anything
{}
--- error_code: 401
--- response_body
{"type":"error","error":{"type":"authentication_error","message":"Missing API key. Send it as \"Authorization: Bearer KEY\"."}}
--- response_headers
x-should-retry: false



=== TEST 21: the refusal is logged at info with the reason, never with the key
--- log_level: info
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers
x-api-key: sk-llm-secret-looking-value
--- error_code: 401
--- error_log
llm: client refused: Incorrect API key provided.
--- no_error_log
sk-llm-secret-looking-value



=== TEST 22: without llm_gateway the module stays out of the way
--- http_config eval: $::Tiers
--- config
location /v1/ {
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code: 200
--- response_headers
!X-Rate-Limit-Limit
--- mock_log_like eval
[qr/^Authorization: Bearer \Q$::ALICE\E/mi]
