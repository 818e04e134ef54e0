# Review 8: the response path and the handlers (reply, handlers, access,
# body, tally, module).  Each block is a reproducer of what the review
# found (each failed before its fix); it says what a user sees and what
# SPEC says.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;

our $Tiers = $Test::LLM::Keys::TIERS;
our $ALICE = $Test::LLM::Keys::ALICE;
our $CAROL = $Test::LLM::Keys::CAROL;

# a chat request of about 200 prompt tokens
our $Chat = "POST /v1/chat/completions\n"
    . '{"model":"gpt-4o","max_tokens":10,"messages":[{"role":"user",'
    . '"content":"' . ("hello " x 200) . '"}]}';

run_tests();

__DATA__

=== TEST 1: a chunked body over client_max_body_size at a location whose tier counts requests only (the body is read by the proxy module, not the gateway) gets the API's JSON 413 request_too_large (review8: nginx's HTML page; the header filter replaced it only while r->upstream was NULL)
--- http_config eval: $::Tiers
--- config
location /v1/ {
    llm_gateway on;
    client_max_body_size 100;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- raw_request eval
"POST /v1/messages HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
. "x-api-key: $::ALICE\r\nTransfer-Encoding: chunked\r\n\r\n"
. sprintf("%x\r\n%s\r\n0\r\n\r\n", 300, "x" x 300)
--- error_code: 413
--- response_headers
Content-Type: application/json
X-Rate-Limit-Limit: 3
--- response_body_like
^\{"type":"error","error":\{"type":"request_too_large","message":"Request body is larger than the limit of 100 bytes\."\}\}$
--- mock_count: 0



=== TEST 2: a pool whose keys answer 429 or are cooling down: the 502 provider_unavailable costs the client no token, as nginx's own 502 does (review8: charged its prompt estimate, 209 tokens, for a request no backend processed -- the second one was never even sent)
--- http_config eval
$::Tiers . q{
llm_tier tok tokens=100000/m;
log_format llm '$llm_prompt_tokens|$llm_completion_tokens|$status';
upstream openai {
    server 127.0.0.1:$TEST_NGINX_MOCK_PORT;
    llm_pool;
    llm_pool_key a secret=sk-aaa111;
}
}
--- config
access_log logs/access.log llm;
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_pass http://openai;
}
location = /usage {
    llm_usage;
}
--- mock eval
sub { return { status => 429, headers => { 'Retry-After' => 30 },
               body => '{"error":{"message":"rate limited"}}' } }
--- request eval
[$::Chat, $::Chat, "GET /usage"]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[502, 502, 200]
--- response_body_like eval
['"code":"provider_unavailable"', '"code":"provider_unavailable"',
 '"dimension":"tokens","period":"1m","limit":100000,"used":0,']
--- access_log_like
^0\|0\|502$
--- access_log_unlike
^[1-9]\d*\|
--- mock_count: 1



=== TEST 3: "llm_gateway on" at the server level does not make /usage a gateway location: asking for one's usage costs no request and still answers when the window is spent (README: "shows its account's windows, counting nothing"; review8: each GET /usage took a request, the fourth got 429)
--- http_config eval: $::Tiers
--- config
llm_gateway on;
location = /usage {
    llm_usage;
}
location /v1/ {
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["GET /v1/models", "GET /usage", "GET /usage", "GET /usage", "GET /usage"]
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code eval
[200, 200, 200, 200, 200]
--- response_body_like eval
['', ('"dimension":"requests","period":"1m","limit":3,"used":1,') x 4]



=== TEST 4: the same for llm_token_info: it needs no key (SPEC 3) and counts raw text, under a server-level "llm_gateway on" too (review8: 401 invalid_api_key without a key)
--- http_config eval
$::Tiers . "llm_tier tok tokens=100000/m;\n"
--- config
llm_gateway on;
llm_default_tier tok;
location = /tokens {
    llm_token_info;
}
location /v1/ {
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["GET /tokens?text=hello+world", "POST /tokens\nhello world"]
--- error_code eval
[200, 200]
--- response_body_like eval
['^\{"tokens":\d+,"characters":11,"method":"estimate"\}$',
 '^\{"tokens":\d+,"characters":11,"method":"estimate"\}$']



=== TEST 5: (guards TEST 3's fix) "llm_gateway on" written in the llm_usage location itself is honoured: the location is gated and counted
--- http_config eval: $::Tiers
--- config
location = /usage {
    llm_gateway on;
    llm_usage;
}
--- request eval
["GET /usage", "GET /usage"]
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- response_body_like eval
['"used":1,', '"used":2,']



=== TEST 6: a client that sends "Expect: 100-continue" with a bad key gets the 401 without a "100 Continue" first, as nginx's own error pages do (RFC 9110 10.1.1; curl waits for it before a large upload; review8: "100 Continue" then 401, so the client uploaded the whole body to have it discarded)
--- http_config eval
$::Tiers . "llm_tier tok tokens=100000/m;\n"
--- config
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- raw_request eval
"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
. "Authorization: Bearer sk-llm-wrong\r\nExpect: 100-continue\r\n"
. "Content-Length: 100000\r\n\r\n"
--- error_code: 401
--- response_body_like: "code":"invalid_api_key"
--- check eval
sub {
    my ($c) = @_;
    my $raw = $c->{responses}[0]{raw};
    return (scalar($raw =~ /^HTTP\/1\.1 401 /), "the response began: "
            . substr($raw, 0, 30));
}
--- mock_count: 0



=== TEST 7: an Anthropic backend's anthropic-ratelimit-* headers (its key's, the operator's organisation's figures) are dropped like its x-ratelimit-* ones: a client of the gateway sees its own window, not the provider's (README llm_headers: "the backend's own rate-limit headers ... are dropped"; review8: only x-ratelimit-* and x-rate-limit-* were, so "anthropic-ratelimit-requests-remaining: 3999" went out next to the client's "x-ratelimit-remaining-requests: 2")
--- http_config eval: $::Tiers
--- config
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub {
    mock_anthropic(headers => {
        'anthropic-ratelimit-requests-limit' => 4000,
        'anthropic-ratelimit-requests-remaining' => 3999,
        'anthropic-ratelimit-requests-reset' => '2026-01-01T00:00:01Z',
        'anthropic-ratelimit-tokens-remaining' => 70000,
        'x-ratelimit-remaining-requests' => 9999,
        'request-id' => 'req_1' });
}
--- request
POST /v1/messages
{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[{"role":"user","content":"Hi"}]}
--- more_headers eval: "x-api-key: $::ALICE"
--- response_headers
!anthropic-ratelimit-requests-limit
!anthropic-ratelimit-requests-remaining
!anthropic-ratelimit-requests-reset
!anthropic-ratelimit-tokens-remaining
x-ratelimit-remaining-requests: 2
request-id: req_1



=== TEST 8: a body over client_max_body_size gets the JSON 413 in a server with nginx's stock "error_page 500 502 503 504 /50x.html" (no error_page for 413) (SPEC 4: 413 request_too_large in the API's shape; review8: any error_page at all, for whatever status, left nginx's HTML 413 page)
--- http_config eval: $::Tiers
--- config
error_page 500 502 503 504 /50x.html;
location = /50x.html {
    return 500 "oops";
}
location /v1/ {
    llm_gateway on;
    client_max_body_size 100;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
"POST /v1/chat/completions\n" . ("x" x 300)
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code: 413
--- response_headers
Content-Type: application/json
--- response_body_like
^\{"error":\{"message":"Request body is larger than the limit of 100 bytes\.","type":"request_too_large","param":null,"code":"request_too_large"\}\}$



=== TEST 9: (guards TEST 8's fix) an error_page for 413 is the operator's: its page is served as it is
--- http_config eval: $::Tiers
--- config
error_page 413 /413.html;
location = /413.html {
    internal;
    default_type text/plain;
    return 200 "too big, says the operator";
}
location /v1/ {
    llm_gateway on;
    client_max_body_size 100;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
"POST /v1/chat/completions\n" . ("x" x 300)
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code: 413
--- response_body: too big, says the operator



=== TEST 10: a client key sent as ?key= never shows in the error log or in the access log's $request, for requests that never reach a gateway's access phase either: a body over client_max_body_size (nginx's "client intended to send too large body" line quotes the request), a CORS preflight answered by "return", a path that is no gateway's (review8: in plain text in both logs; only the access phase masked it; SPEC 5: "only a digest is ever stored")
--- http_config eval: $::Tiers
--- config
location /v1beta/ {
    llm_gateway on;
    client_max_body_size 10;
    if ($request_method = OPTIONS) {
        return 204;
    }
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- log_level: info
--- request eval
["POST /v1beta/models/gemini-pro:generateContent?alt=sse&key=$::ALICE\n"
 . ("x" x 100),
 "OPTIONS /v1beta/models/gemini-pro:generateContent?key=$::ALICE",
 "GET /v1/models?key=$::ALICE&x=1",
 "GET /v1beta/models?key=$::ALICE"]
--- error_code eval
[413, 204, 404, 200]
--- error_log
client intended to send too large body
--- no_error_log eval
$::ALICE
--- access_log_like eval
['"POST /v1beta/models/gemini-pro:generateContent\?alt=sse&key=\*{50} HTTP/1.1" 413',
 '"OPTIONS /v1beta/models/gemini-pro:generateContent\?key=\*{50} HTTP/1.1" 204',
 '"GET /v1/models\?key=\*{50}&x=1 HTTP/1.1" 404',
 '"GET /v1beta/models\?key=\*{50} HTTP/1.1" 200']
--- access_log_unlike eval
$::ALICE
--- mock_log_unlike eval
$::ALICE



=== TEST 11: (guards TEST 10's fix) another application's ?key= (not shaped like ours) is left in its request line, and a gateway's key still reaches the gateway
--- http_config eval: $::Tiers
--- config
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location /maps/ {
    return 200 "$args";
}
--- log_level: info
--- request eval
["GET /maps/tile?key=AIzaSyA-not-ours", "GET /v1/models?key=$::ALICE"]
--- error_code eval
[200, 200]
--- response_body eval
["key=AIzaSyA-not-ours", undef]
--- response_headers eval
[{}, { 'X-Rate-Limit-Remaining' => 2 }]
--- access_log_like
"GET /maps/tile\?key=AIzaSyA-not-ours HTTP/1.1" 200



=== TEST 12: (guards TESTs 1 and 8) the page of a location-level "error_page 413 /uri", served by a location that does not inherit it (proxied here), is the operator's, also for a 413 that came while the proxy module read a chunked body
--- http_config eval: $::Tiers
--- config
location /v1/ {
    llm_gateway on;
    client_max_body_size 100;
    error_page 413 /err413;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /err413 {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT/errors/413;
}
--- mock eval
sub { return { headers => { 'Content-Type' => 'text/plain' },
               body => "too big, says the operator" } }
--- raw_request eval
"POST /v1/messages HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
. "x-api-key: $::ALICE\r\nTransfer-Encoding: chunked\r\n\r\n"
. sprintf("%x\r\n%s\r\n0\r\n\r\n", 300, "x" x 300)
--- error_code: 413
--- response_body: too big, says the operator



=== TEST 13: Gemini's OpenAI-compatible endpoint (/v1beta/openai/..., what Google documents for the OpenAI SDKs) speaks OpenAI under "llm_api auto": its body is read as OpenAI's (the prompt and max_tokens reserved, a body of no chat shape refused) and its errors have OpenAI's shape (review8: taken for Gemini's API by "/v1beta/": max_tokens ignored for the default 1024 and the prompt not reserved, "{}" let through, errors as {"error":{"code":401,...,"status":"UNAUTHENTICATED"}})
--- http_config eval
$::Tiers . "llm_tier tok tokens=100000/m;\n"
--- config
llm_default_tier tok;
location /v1beta/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub { mock_openai() }
--- request eval
["POST /v1beta/openai/chat/completions\n"
 . '{"model":"gemini-2.0-flash","max_tokens":10,'
 . '"messages":[{"role":"user","content":"Hi"}]}',
 "POST /v1beta/openai/chat/completions\n{}",
 "POST /v1beta/openai/chat/completions\n{}"]
--- more_headers eval
["Authorization: Bearer $::CAROL", "Authorization: Bearer $::CAROL", ""]
--- error_code eval
[200, 400, 401]
--- response_headers_like eval
["x-ratelimit-remaining-tokens: ^999[6-8]\\d\$", "", ""]
--- response_body_like eval
['"object":"chat.completion"',
 '^\{"error":\{"message":".+","type":"invalid_request_error","param":null,"code":"invalid_request_error"\}\}$',
 '^\{"error":\{"message":".+","type":"invalid_request_error","param":null,"code":"invalid_api_key"\}\}$']
--- mock_count: 1



=== TEST 14: (guards TEST 13's fix) Gemini's own API under /v1beta/ keeps Gemini's shape
--- http_config eval: $::Tiers
--- config
location /v1beta/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["POST /v1beta/models/gemini-2.0-flash:generateContent\n{}",
 "GET /v1beta/models"]
--- error_code eval
[401, 401]
--- response_body_like eval
['^\{"error":\{"code":401,"message":".+","status":"UNAUTHENTICATED"\}\}$',
 '^\{"error":\{"code":401,"message":".+","status":"UNAUTHENTICATED"\}\}$']
