# Token windows: the body read in the access phase, the reservation
# (prompt estimate + max tokens) checked up front, the usage the backend
# reports in JSON and SSE (OpenAI, Anthropic, Gemini) settled in the log
# phase, estimates when it reports none, cost by llm_price, bad bodies.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat qw(chat post);

our $KEYS = $Test::LLM::Keys::KEY_FILE;
our $CAROL = $Test::LLM::Keys::CAROL;

our $Http = <<"_EOC_";
    llm_zone llm:1m;
    llm_key_file $KEYS;
    llm_tier small requests=3/m;
    llm_tier quota requests=2/d requests=100/m;
    llm_tier tok tokens=1000/m input_tokens=900/m output_tokens=500/m;
    llm_tier day tokens=100/d;
    llm_tier cents cost=0.001/m;
    llm_price gpt-4o input=2.50 output=10.00;
    llm_price "gpt-4*" input=1 output=1;
    log_format llm '\$llm_account|\$llm_model|\$llm_stream|\$llm_prompt_tokens|'
                   '\$llm_completion_tokens|\$llm_total_tokens|'
                   '\$llm_tokens_estimated|\$llm_cost|\$status';
_EOC_

our $Gateway = <<'_EOC_';
access_log logs/access.log llm;
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location /v1beta/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /usage {
    llm_usage;
}
_EOC_

our $Auth = "Authorization: Bearer $CAROL";

run_tests();

__DATA__

=== TEST 1: the backend's usage replaces the reservation in every window
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval
[::post("/v1/chat/completions", ::chat()), "GET /usage"]
--- more_headers eval: $::Auth
--- response_headers_like eval
# the token headers: the token window with the least remaining (SPEC 4),
# here output_tokens=500/m less the 50 reserved
["x-ratelimit-limit-tokens: ^500\$\nx-ratelimit-remaining-tokens: ^450\$\nx-ratelimit-reset-tokens: ^\\d+(\\.\\d+)?m?s|1m\\d+s\$", ""]
--- response_body_like eval
['"usage":\{"completion_tokens":20,"prompt_tokens":10',
 '"account":"carol".*"tier":"tok".*"dimension":"tokens","period":"1m","limit":1000,"used":30,"remaining":970,"reset":\d{10}\}.*"dimension":"input_tokens","period":"1m","limit":900,"used":10,.*"dimension":"output_tokens","period":"1m","limit":500,"used":20,']
--- access_log_like
^carol\|gpt-4o\|0\|10\|20\|30\|0\|0\.000225\|200$



=== TEST 2: a request whose reservation can never fit is refused before the call
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval: ::post("/v1/chat/completions", ::chat(max => 600))
--- more_headers eval: $::Auth
--- error_code: 429
--- response_headers
x-should-retry: false
--- response_body_like: "message":"output tokens per 1m \(limit 500\) in tier \\"tok\\" is less than this request needs \(600\)\.","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"
--- mock_count: 0



=== TEST 3: reservations in flight count: the second of two concurrent requests is refused
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { my ($req) = @_; return { %{ mock_openai() }, delay => 1 } }
--- request eval: ::post("/v1/chat/completions", ::chat(max => 300))
--- more_headers eval: $::Auth
--- concurrency: 2
--- repeat: 2
--- status_counts: 200=1 429=1
--- check eval
sub {
    # settled at 30 tokens: there is room for another one now
    my $r = http_request("POST /v1/chat/completions",
                         more_headers => $::Auth,
                         body => ::chat(max => 300));
    return ($r->{status} == 200, "status $r->{status}");
}



=== TEST 4: OpenAI stream: the final usage chunk is read
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval
[::post("/v1/chat/completions", ::chat(stream => 1)), "GET /usage"]
--- more_headers eval: $::Auth
--- response_headers_like eval
["Content-Type: text/event-stream", ""]
--- response_body_like eval
['"usage":\{"completion_tokens":20.*data: \[DONE\]', '"dimension":"tokens","period":"1m","limit":1000,"used":30,']
--- access_log_like
^carol\|gpt-4o\|1\|10\|20\|30\|0\|



=== TEST 5: llm_stream_usage on asks the backend for usage in streams only
--- http_config eval: $::Http
--- config
access_log logs/access.log llm;
location /v1/ {
    llm_gateway on;
    llm_default_tier tok;
    llm_stream_usage on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
[::post("/v1/chat/completions", ::chat(stream => 1)),
 ::post("/v1/chat/completions", '{"model":"m","stream":true,"stream_options":{"include_usage":false},"max_tokens":5,"messages":[]}'),
 ::post("/v1/chat/completions", ::chat())]
--- more_headers eval: $::Auth
--- check eval
sub {
    my @r = mock_requests();
    return (0, "first: $r[0]{body}")
        unless $r[0]{json}{stream_options}{include_usage};
    # the operator asked for usage: a client's "false" does not win
    return (0, "second: $r[1]{body}")
        unless $r[1]{json}{stream_options}{include_usage}
               && $r[1]{json}{max_tokens} == 5 && $r[1]{json}{model} eq 'm';
    return (0, "third changed: $r[2]{body}")
        if $r[2]{body} =~ /stream_options/;
    return (0, "length") if $r[0]{headers}{'content-length'} != length $r[0]{body};
    return 1;
}



=== TEST 6: Anthropic messages, JSON and stream (message_start + message_delta)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval
[::post("/v1/messages", ::chat(model => "claude-x")),
 ::post("/v1/messages", ::chat(model => "claude-x", stream => 1)),
 "GET /usage"]
--- more_headers eval: $::Auth
--- response_body_like eval
["", "event: message_delta", '"dimension":"tokens","period":"1m","limit":1000,"used":60,']
--- access_log_like
^carol\|claude-x\|0\|10\|20\|30\|0\|-\|200$
^carol\|claude-x\|1\|10\|20\|30\|0\|-\|200$



=== TEST 7: Gemini generateContent and streamGenerateContent (usageMetadata)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval
[::post("/v1beta/models/gemini-2.0-flash:generateContent", '{"contents":[{"role":"user","parts":[{"text":"Hi"}]}],"generationConfig":{"maxOutputTokens":40}}'),
 ::post("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", '{"contents":[{"role":"user","parts":[{"text":"Hi"}]}],"generationConfig":{"maxOutputTokens":40}}'),
 "GET /usage"]
--- more_headers eval: $::Auth
--- response_body_like eval
["", "", '"dimension":"tokens","period":"1m","limit":1000,"used":60,']
--- access_log_like
^carol\|gemini-2.0-flash\|0\|10\|20\|30\|0\|
^carol\|gemini-2.0-flash\|1\|10\|20\|30\|0\|



=== TEST 8: no usage in the answer: the prompt and the text are estimated
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { mock_openai(usage => 0, text => 'one two three four five six seven eight nine ten') }
--- request eval
[::post("/v1/chat/completions", ::chat()), "GET /usage"]
--- more_headers eval: $::Auth
--- response_body_like eval
["", '"dimension":"output_tokens","period":"1m","limit":500,"used":1[0-2],']
--- access_log_like
^carol\|mock-model\|0\|8\|1[0-2]\|(18|19|20)\|1\|0\.0001[0-9]0\|200$



=== TEST 9: a stream the client cuts off is charged what was streamed
--- http_config eval: $::Http
--- config
access_log logs/access.log llm;
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_buffering off;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /usage {
    llm_usage;
}
--- mock eval
sub { mock_openai_stream(usage => 0, delay => 0.1, text => join(' ', ('word') x 40)) }
--- request eval: ::post("/v1/chat/completions", ::chat(stream => 1))
--- more_headers eval: $::Auth
--- timeout: 1.5
--- abort
--- ignore_response
--- wait: 0.5
--- check eval
sub {
    my $r = http_request("GET /usage", more_headers => $::Auth);
    my ($out) = $r->{body} =~ /"output_tokens","period":"1m","limit":500,"used":(\d+)/;
    return (0, "usage: $r->{body}") unless defined $out;
    # about 13 of 40 words went out in 1.5 s (one per 0.1 s)
    return ($out >= 5 && $out <= 30, "output tokens charged: $out");
}
--- access_log_like
^carol\|mock-model\|1\|8\|([5-9]|[12]\d|30)\|\d+\|1\|[\d.]+\|200$



=== TEST 10: usage split across TCP packets, chunk boundaries and inside its key
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    my $ev1 = qq{data: {"choices":[{"delta":{"content":"Hello"}}]}\n\n};
    my $ev2 = qq{data: {"choices":[],"usage":{"prompt_tokens":123,"completion_tokens":45,"total_tokens":168}}\n\ndata: [DONE]\n\n};
    my $body = $ev1 . $ev2;
    my @cut = (7, 40, length($ev1) + 21, length($ev1) + 27, length($ev1) + 60);
    my @parts; my $at = 0;
    for my $c (@cut, length $body) { push @parts, substr($body, $at, $c - $at); $at = $c; }
    my @raw = ("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    for my $p (@parts) {
        my $chunk = sprintf("%x\r\n%s\r\n", length $p, $p);
        # each chunk cut in two TCP writes, inside its data
        my $h = int(length($chunk) / 2);
        push @raw, substr($chunk, 0, $h), { delay => 0.05 }, substr($chunk, $h), { delay => 0.05 };
    }
    push @raw, "0\r\n\r\n";
    return { raw => \@raw };
}
--- request eval
[::post("/v1/chat/completions", ::chat(stream => 1)), "GET /usage"]
--- more_headers eval: $::Auth
--- response_body_like eval
['"total_tokens":168', '"dimension":"tokens","period":"1m","limit":1000,"used":168,']
--- access_log_like
^carol\|gpt-4o\|1\|123\|45\|168\|0\|



=== TEST 11: hostile and malformed bodies get a 400 in the API's shape, never reach the backend
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval
[
 ::post("/v1/chat/completions", ('[' x 10000) . (']' x 10000)),
 ::post("/v1/chat/completions", "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}"),
 ::post("/v1/chat/completions", ::chat(max => '1e400')),
 ::post("/v1/chat/completions", ::chat(max => -1)),
 ::post("/v1/chat/completions", ::chat(max => '1.5')),
 ::post("/v1/chat/completions", '{"model":"m","messages":[{"role":"user","content":"Hi"}'),
 ::post("/v1/messages", ::chat(max => undef)),
 ::post("/v1beta/models/g:generateContent", '{"contents":7}'),
]
--- more_headers eval: $::Auth
--- error_code: 400
--- response_body_like eval
[
 '^\{"error":\{"message":"request body is nested more than 64 levels deep","type":"invalid_request_error","param":null,"code":"invalid_request_error"\}\}$',
 '"message":"request body is not valid UTF-8"',
 '"message":"a number in the request body is out of range".*"code":"invalid_request_error"',
 '"message":"\\\\"max_tokens\\\\" must be an integer from 1 to 2147483647"',
 '"message":"\\\\"max_tokens\\\\" must be an integer from 1 to 2147483647"',
 '"code":"invalid_request_error"',
 '^\{"type":"error","error":\{"type":"invalid_request_error","message":"max_tokens: Field required"\}\}$',
 '^\{"error":\{"code":400,"message":"request has no .+","status":"INVALID_ARGUMENT"\}\}$',
]
--- mock_count: 0



=== TEST 12: a body spooled to a temporary file is read back, and forwarded whole
--- http_config eval: $::Http
--- config
access_log logs/access.log llm;
client_body_buffer_size 1k;
location /v1/ {
    llm_gateway on;
    llm_default_tier tok;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval: ::post("/v1/chat/completions", ::chat(max => 10, text => join(' ', ('lorem') x 1500)))
--- more_headers eval: $::Auth
--- error_code: 429
--- response_body_like: "tokens per 1m \(limit 1000\) in tier \\"tok\\" is less than this request needs \(1[5-9]\d\d\)
--- error_log
a client request body is buffered to a temporary file



=== TEST 13: a spooled body that fits goes to the backend intact
--- http_config eval: $::Http
--- config
client_body_buffer_size 1k;
location /v1/ {
    llm_gateway on;
    llm_default_tier tok;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval: ::post("/v1/chat/completions", ::chat(max => 10, text => join(' ', ('lorem') x 500)))
--- more_headers eval: $::Auth
--- response_headers_like
x-ratelimit-remaining-tokens: ^(4\d\d|3\d\d)$
--- error_log
a client request body is buffered to a temporary file
--- check eval
sub {
    my ($r) = mock_requests();
    return (length($r->{body}) == length(::chat(max => 10, text => join(' ', ('lorem') x 500))), "length " . length $r->{body});
}



=== TEST 14: a body over client_max_body_size gets a JSON 413 in the API's shape
--- http_config eval: $::Http
--- config
client_max_body_size 1k;
location /v1/ {
    llm_gateway on;
    llm_default_tier tok;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location /plain/ {
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
[::post("/v1/chat/completions", ::chat(text => 'x' x 2000)),
 ::post("/v1/messages", ::chat(text => 'x' x 2000)),
 ::post("/plain/x", ::chat(text => 'x' x 2000))]
--- more_headers eval: $::Auth
--- error_code: 413
--- response_headers_like eval
["Content-Type: ^application/json\$", "Content-Type: ^application/json\$", "Content-Type: ^text/html\$"]
--- response_body_like eval
['^\{"error":\{"message":"Request body is larger than the limit of 1024 bytes\.","type":"request_too_large","param":null,"code":"request_too_large"\}\}$',
 '^\{"type":"error","error":\{"type":"request_too_large","message":"Request body is larger than the limit of 1024 bytes\."\}\}$',
 '<html>']
--- mock_count: 0



=== TEST 15: a chunked body found too large while the gateway reads it: JSON 413 too
--- http_config eval: $::Http
--- config
client_max_body_size 1k;
location /v1/ {
    llm_gateway on;
    llm_default_tier tok;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- raw_request eval
my $b = ::chat(text => 'x' x 2000);
my $c = sprintf("%x\r\n%s\r\n0\r\n\r\n", length $b, $b);
"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n$::Auth\r\nTransfer-Encoding: chunked\r\n\r\n$c"
--- error_code: 413
--- response_headers_like
Content-Type: ^application/json$
--- response_body_like: ^\{"type":"error","error":\{"type":"request_too_large","message":"Request body is larger than the limit of 1024 bytes\."\}\}$
--- error_log
client intended to send too large chunked body
--- mock_count: 0



=== TEST 16: cost windows: the price of the reservation, then of the real use
--- http_config eval: $::Http
--- config
access_log logs/access.log llm;
llm_default_tier cents;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /usage {
    llm_usage;
}
--- request eval
[::post("/v1/chat/completions", ::chat(max => 50)),
 ::post("/v1/chat/completions", ::chat(max => 200)),
 ::post("/v1/chat/completions", ::chat(model => "gpt-4-turbo", max => 200)),
 "GET /usage"]
--- more_headers eval: $::Auth
--- error_code eval
[200, 429, 200, 200]
--- response_body_like eval
["", 'cost per 1m \(limit 0\.001000 USD\) in tier \\\\"cents\\\\" is less than this request needs \(0\.002\d\d\d USD\)',
 "", '"dimension":"cost","period":"1m","limit":0\.001000,"used":0\.000255,"remaining":0\.000745,']
--- access_log_like
^carol\|gpt-4o\|0\|10\|20\|30\|0\|0\.000225\|200$
^carol\|gpt-4o\|0\|0\|0\|0\|0\|0\.000000\|429$
^carol\|gpt-4-turbo\|0\|10\|20\|30\|0\|0\.000030\|200$



=== TEST 17: a day window spent is quota_exceeded, and not worth retrying soon
--- http_config eval: $::Http
--- config
llm_default_tier day;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
[::post("/v1/chat/completions", ::chat(max => 40)),
 ::post("/v1/chat/completions", ::chat(max => 40)),
 ::post("/v1/chat/completions", ::chat(max => 40))]
--- more_headers eval: $::Auth
--- error_code eval
[200, 200, 429]
--- response_headers_like eval
["x-ratelimit-limit-tokens: ^100\$", "x-ratelimit-remaining-tokens: ^(1\\d|2\\d)\$", "x-should-retry: ^false\$\nRetry-After: ^\\d+\$"]
--- response_body_like eval
["", "", '"message":"Quota reached for tokens per 1d \(limit 100\) in tier \\\\"day\\\\"\. Retry in \d+ s\.","type":"rate_limit_error","param":null,"code":"quota_exceeded"']



=== TEST 18: an error answer costs no tokens; a request the backend never answers costs its prompt
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { my ($req) = @_; return $req->{n} == 1 ? { status => 500, body => '{"error":{}}' } : { close => 1 } }
--- request eval
[::post("/v1/chat/completions", ::chat()), ::post("/v1/chat/completions", ::chat()), "GET /usage"]
--- more_headers eval: $::Auth
--- error_code eval
[500, 502, 200]
--- response_body_like eval
["", "", '"dimension":"tokens","period":"1m","limit":1000,"used":0,.*"dimension":"output_tokens","period":"1m","limit":500,"used":0,']
--- access_log_like
^carol\|gpt-4o\|0\|0\|0\|0\|0\|0\.000000\|500$
^carol\|gpt-4o\|0\|0\|0\|0\|0\|0\.000000\|502$



=== TEST 19: llm_token_info counts ?text= and POSTed requests; llm_usage wants a key
--- http_config eval: $::Http
--- config
location = /tokens {
    llm_token_info;
}
location = /usage {
    llm_usage;
}
--- request eval
["GET /tokens?text=Hello+world%21",
 "GET /tokens?text=%EC%95%88%EB%85%95%ED%95%98%EC%84%B8%EC%9A%94",
 ::post("/tokens", '{"model":"m","messages":[{"role":"user","content":"Hello world!"}]}'),
 ::post("/tokens", 'just some text'),
 ::post("/tokens", '{"contents":[{"role":"user","parts":[{"text":"Hello world!"}]}]}'),
 "GET /usage"]
--- error_code eval
[200, 200, 200, 200, 200, 401]
--- response_body eval
[undef, undef, undef,
 "{\"tokens\":3,\"characters\":14,\"method\":\"estimate\"}\n",
 undef, undef]
--- response_body_like eval
['^\{"tokens":[34],"characters":12,"method":"estimate"\}$', '^\{"tokens":[3-8],"characters":5,"method":"estimate"\}$',
 '^\{"tokens":1[0-2],"characters":12,"method":"estimate"\}$', "",
 '^\{"tokens":1[0-2],"characters":12,"method":"estimate"\}$',
 '"code":"invalid_api_key"']



=== TEST 20: proxy_cache with $llm_cache_key: a hit is not charged tokens again
--- http_config eval
$::Http . <<'_EOC_';
    proxy_cache_path cache levels=1 keys_zone=llmcache:1m;
_EOC_
--- config
access_log logs/access.log llm;
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_cache llmcache;
    proxy_cache_methods POST;
    proxy_cache_key $llm_cache_key;
    proxy_cache_valid 200 10m;
    add_header X-Cache $upstream_cache_status always;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /usage {
    llm_usage;
}
--- request eval
[::post("/v1/chat/completions", '{"model":"gpt-4o","max_tokens":50,"messages":[{"role":"user","content":"Hi"}]}'),
 ::post("/v1/chat/completions", '{ "messages": [{"content":"Hi", "role":"user"}], "max_tokens": 50, "model": "gpt-4o" }'),
 ::post("/v1/chat/completions", '{"model":"gpt-4o","max_tokens":50,"messages":[{"role":"user","content":"Hello"}]}'),
 "GET /usage"]
--- more_headers eval: $::Auth
--- response_headers eval
["X-Cache: MISS", "X-Cache: HIT", "X-Cache: MISS", ""]
--- response_body_like eval
["", "", "", '"dimension":"tokens","period":"1m","limit":1000,"used":60,']
--- mock_count: 2
--- access_log_like
^carol\|gpt-4o\|0\|0\|0\|0\|0\|0\.000000\|200$



=== TEST 21: bad llm_price and llm_max_tokens_default values fail nginx -t
--- http_config
llm_zone llm:1m;
llm_price gpt-4o input=2.5 output=-1;
--- config
location / { llm_gateway on; }
--- must_die
--- error_log
invalid price "output=-1"



=== TEST 22: llm_max_tokens_default is reserved when the request names no maximum
--- http_config eval: $::Http
--- config
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    llm_max_tokens_default 600;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location /v2/ {
    llm_gateway on;
    llm_max_tokens_default 100;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
[::post("/v1/chat/completions", ::chat(max => undef)),
 ::post("/v2/chat/completions", ::chat(max => undef))]
--- more_headers eval: $::Auth
--- error_code eval
[429, 200]
--- response_body_like eval
['less than this request needs \(600\)', ""]



=== TEST 23: with llm_redis, reservations and real usage are counted in Redis (one worker: from two workers a settle and the next admission go on two connections, which Redis may serve in either order; SPEC 9 bounds that by the reservations in flight)
--- workers: 1
--- http_config eval
$::Http . "    llm_redis 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} prefix=t072-$$-" . time . ": timeout=1s on_error=deny;\n"
--- config
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
[::post("/v1/chat/completions", ::chat()), ::post("/v1/chat/completions", ::chat())]
--- more_headers eval: $::Auth
--- response_headers eval
# the output_tokens window has the least remaining: 500 - 50 reserved;
# then 500 - 20 used - 50 reserved (tokens=: 942, then 912)
["x-ratelimit-limit-tokens: 500\nx-ratelimit-remaining-tokens: 450",
 "x-ratelimit-limit-tokens: 500\nx-ratelimit-remaining-tokens: 430"]



=== TEST 24: the answer names a dated version of the model asked for (gpt-4o answered as gpt-4o-2024-08-06): the request's exact price, not the shorter wildcard gpt-4*; a model the request did not name (gpt-4.1) gets the wildcard's
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    my ($req) = @_;
    my $model = $req->{body} =~ /gpt-4\.1/ ? 'gpt-4.1-2025-04-14'
                                             : 'gpt-4o-2024-08-06';
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => '{"id":"c","object":"chat.completion","model":"'
                     . $model . '","choices":[{"index":0,"message":'
                     . '{"role":"assistant","content":"hi"},'
                     . '"finish_reason":"stop"}],"usage":{"prompt_tokens":'
                     . '10,"completion_tokens":20,"total_tokens":30}}' };
}
--- request eval
[::post("/v1/chat/completions", ::chat()),
 ::post("/v1/chat/completions", ::chat(model => 'gpt-4.1'))]
--- more_headers eval: $::Auth
--- error_code eval
[200, 200]
--- access_log_like eval
["^carol\\|gpt-4o-2024-08-06\\|0\\|10\\|20\\|30\\|0\\|0\\.000225\\|200\$",
 "^carol\\|gpt-4\\.1-2025-04-14\\|0\\|10\\|20\\|30\\|0\\|0\\.000030\\|200\$"]



=== TEST 25: bodies in pieces are joined in the worker's buffer, which one request leaves to the next: each is counted as itself, a larger one after a smaller, a smaller after a larger, and one over 64 KB (joined in the pool)
--- http_config eval: $::Http
--- config
location = /tokens {
    llm_token_info;
}
--- request eval
[::post("/tokens", ::chat(text => join(' ', ('pear') x 400))),
 ::post("/tokens", ::chat(text => join(' ', ('lorem') x 3000))),
 ::post("/tokens", ::chat(text => join(' ', ('pear') x 400))),
 ::post("/tokens", ::chat(text => join(' ', ('lorem') x 14000))),
 ::post("/tokens", ::chat(text => join(' ', ('pear') x 400))),
 ::post("/tokens", ::chat(text => join(' ', ('lorem') x 3000)))]
--- response_body eval
["{\"tokens\":407,\"characters\":1999,\"method\":\"estimate\"}\n",
 "{\"tokens\":3007,\"characters\":17999,\"method\":\"estimate\"}\n",
 "{\"tokens\":407,\"characters\":1999,\"method\":\"estimate\"}\n",
 "{\"tokens\":14007,\"characters\":83999,\"method\":\"estimate\"}\n",
 "{\"tokens\":407,\"characters\":1999,\"method\":\"estimate\"}\n",
 "{\"tokens\":3007,\"characters\":17999,\"method\":\"estimate\"}\n"]



=== TEST 26: a tier with only an input_tokens= window has token headers too: the token window with the least remaining (SPEC 4) is any token window; 1000 less the prompt's estimate (8), then less the 10 used and the next 8
--- http_config eval: $::Http . "    llm_tier inonly input_tokens=1000/m;\n"
--- config
llm_default_tier inonly;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
[::post("/v1/chat/completions", ::chat()),
 ::post("/v1/chat/completions", ::chat())]
--- more_headers eval: $::Auth
--- response_headers eval
["x-ratelimit-limit-tokens: 1000\nx-ratelimit-remaining-tokens: 992",
 "x-ratelimit-limit-tokens: 1000\nx-ratelimit-remaining-tokens: 982"]



=== TEST 27: of a tokens=, an input_tokens= and an output_tokens= window, the one with the least remaining names the headers (here tokens=: 100 less 58 reserved); a cost= window never does
--- http_config eval: $::Http . "    llm_tier mix tokens=100/m input_tokens=1000/m output_tokens=1000/m cost=0.000001/m;\n"
--- config
llm_default_tier mix;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
::post("/v1/chat/completions", ::chat(model => 'free'))
--- more_headers eval: $::Auth
--- error_code: 200
--- response_headers
x-ratelimit-limit-tokens: 100
x-ratelimit-remaining-tokens: 42
