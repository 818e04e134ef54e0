# Review 5: the token path (issue 3) -- reading the request body, the
# response observer, the log-phase settle.  Each block is a reproducer
# of what the review found; it says what a user sees and what SPEC says.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat qw(chat post);
use Test::LLM::Examples;

our $KEYS = $Test::LLM::Keys::KEY_FILE;
our $CAROL = $Test::LLM::Keys::CAROL;

our $Http = <<"_EOC_";
    llm_zone llm:1m;
    llm_key_file $KEYS;
    llm_tier small requests=3/m;
    llm_tier quota requests=2/d requests=100/m;
    llm_tier tok tokens=100000/m input_tokens=90000/m output_tokens=50000/m;
    llm_price gpt-4o input=2.50 output=10.00;
    log_format llm '\$llm_account|\$llm_model|\$llm_stream|\$llm_prompt_tokens|'
                   '\$llm_completion_tokens|\$llm_total_tokens|'
                   '\$llm_tokens_estimated|\$llm_cost|\$status';
_EOC_

our $Gateway = <<'_EOC_';
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
_EOC_

our $Auth = "Authorization: Bearer $CAROL";

# what /usage says was used in the "tokens" and "output_tokens" windows
sub used {
    my $r = http_request("GET /usage", more_headers => $::Auth);
    my ($tok) = $r->{body} =~ /"tokens","period":"1m","limit":\d+,"used":(\d+)/;
    my ($out) = $r->{body} =~ /"output_tokens","period":"1m","limit":\d+,"used":(\d+)/;
    return ($tok, $out, $r->{body});
}

run_tests();

__DATA__

=== TEST 1: an Anthropic stream the client cuts off is charged what was streamed (SPEC 7: "A client that disconnects mid-stream is charged what was streamed"); message_start's usage says output_tokens 1 and made the observer stop estimating: 13 words went out, 1 output token was charged
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { mock_anthropic_stream(delay => 0.1, text => join(' ', ('word') x 40)) }
--- request eval: ::post("/v1/messages", ::chat(model => "claude-x", stream => 1))
--- more_headers eval: $::Auth
--- timeout: 1.5
--- abort
--- ignore_response
--- wait: 0.5
--- check eval
sub {
    my ($tok, $out, $body) = ::used();
    return (0, "usage: $body") unless defined $out;
    # about 13 of 40 words went out in 1.5 s (one per 0.1 s)
    return ($out >= 5 && $out <= 30, "output tokens charged: $out");
}



=== TEST 2: a gzip-encoded answer is charged nothing: a client that sends "Accept-Encoding: gzip" to a backend that compresses gets its answers free of every token window (the log line says "its usage is estimated", SPEC 7: the reservation is replaced by reported usage, else estimated); expected: at least the prompt and $llm_tokens_estimated 1
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    require IO::Compress::Gzip;
    my $json = '{"id":"x","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"}}],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}';
    my $gz;
    IO::Compress::Gzip::gzip(\$json => \$gz);
    return { headers => { 'Content-Type' => 'application/json',
                          'Content-Encoding' => 'gzip' },
             body => $gz };
}
--- request eval: ::post("/v1/chat/completions", ::chat())
--- more_headers eval: "$::Auth\nAccept-Encoding: gzip"
--- response_headers
Content-Encoding: gzip
--- check eval
sub {
    my ($tok, $out, $body) = ::used();
    return (0, "usage: $body") unless defined $tok;
    return ($tok > 0, "tokens charged for a whole answer: $tok");
}
--- access_log_like
^carol\|gpt-4o\|0\|[1-9]\d*\|\d+\|[1-9]\d*\|1\|



=== TEST 3: a model name with CR LF (JSON escapes "\r\n") is taken as is into $llm_model: "proxy_set_header X-Model $llm_model" (a variable SPEC 4 offers "for logs and routing") then writes a header of the client's choosing into the upstream request; SPEC 9: injection gets the 400 invalid_request_error, as a NUL in the model already does
--- http_config eval: $::Http
--- config
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_set_header X-Model $llm_model;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval: ::post("/v1/chat/completions", '{"model":"gpt-4o\r\nX-Injected: yes","max_tokens":5,"messages":[{"role":"user","content":"Hi"}]}')
--- more_headers eval: $::Auth
--- error_code: 400
--- response_body_like: "code":"invalid_request_error"
--- mock_log_unlike
^X-Injected:



=== TEST 4: with conf.examples/caching.conf's location (proxy_cache_key $llm_cache_key; GET is always cached), every GET -- and every multipart POST, whose body the gateway does not read -- has an empty $llm_cache_key, so they all share one cache entry: a client asking for its file gets another request's answer from the cache (another account's file, with the per-account key's $llm_account prefix only a same-account mix-up); SPEC 4: $llm_cache_key is the hash of the canonical request
--- http_config eval
$::Http . <<'_EOC_';
    proxy_cache_path cache levels=1 keys_zone=llmcache:1m;
_EOC_
--- config
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_cache llmcache;
    proxy_cache_methods POST;
    proxy_cache_key $llm_cache_key;
    proxy_cache_valid 200 10m;
    proxy_ignore_headers Cache-Control Expires Set-Cookie;
    add_header X-Cache $upstream_cache_status always;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub { my ($req) = @_; return { headers => { 'Content-Type' => 'application/json' }, body => "{\"path\":\"$req->{path}\"}" } }
--- request eval
["GET /v1/files/file-AAA/content", "GET /v1/files/file-BBB/content",
 "POST /v1/audio/transcriptions\n--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nAAA\r\n--x--\r\n",
 "POST /v1/audio/translations\n--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.wav\"\r\n\r\nBBB\r\n--x--\r\n"]
--- more_headers eval: "$::Auth\nContent-Type: multipart/form-data; boundary=x"
--- response_body eval
['{"path":"/v1/files/file-AAA/content"}', '{"path":"/v1/files/file-BBB/content"}',
 '{"path":"/v1/audio/transcriptions"}', '{"path":"/v1/audio/translations"}']
--- mock_count: 4



=== TEST 5: a GET generates nothing, yet its answer is read for usage: downloading a batch's output file (JSONL whose lines carry each call's "usage") is charged the last line's usage, and listing a thread's messages is charged their text as output tokens; SPEC 7: the backend's reported usage of the call replaces the reservation -- a GET reserves and uses no tokens
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    my ($req) = @_;
    return { headers => { 'Content-Type' => 'application/json' },
             body => '{"object":"list","data":[{"id":"msg_1","role":"assistant","content":[{"type":"text","text":{"value":"' . join(' ', ('word') x 300) . '"}}]},{"id":"msg_2","content":"' . join(' ', ('word') x 300) . '"}]}' }
        if $req->{path} =~ /messages/;
    my $line = '{"id":"batch_req_1","custom_id":"r1","response":{"status_code":200,"body":{"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":4000,"completion_tokens":3000,"total_tokens":7000}}}}';
    return { headers => { 'Content-Type' => 'application/octet-stream' },
             body => "$line\n$line\n" };
}
--- request eval
["GET /v1/files/file-abc/content", "GET /v1/threads/thread_1/messages"]
--- more_headers eval: $::Auth
--- check eval
sub {
    my ($tok, $out, $body) = ::used();
    return (0, "usage: $body") unless defined $tok;
    return ($tok == 0, "tokens charged for two GETs: $tok");
}



=== TEST 6: an OpenAI Responses API stream (text in "delta" strings of response.output_text.delta events) that the client cuts off is charged no output token: the observer counts "content", "text", ... but not "delta"; SPEC 7: "A client that disconnects mid-stream is charged what was streamed"
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    my @ev = ("event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"model\":\"gpt-4o\",\"status\":\"in_progress\",\"output\":[],\"usage\":null}}\n\n");
    for my $i (1 .. 40) {
        push @ev, { delay => 0.1 },
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"word \"}\n\n";
    }
    return { headers => { 'Content-Type' => 'text/event-stream' }, chunks => \@ev };
}
--- request eval: ::post("/v1/responses", '{"model":"gpt-4o","stream":true,"max_output_tokens":500,"input":"Say word forty times"}')
--- more_headers eval: $::Auth
--- timeout: 1.5
--- abort
--- ignore_response
--- wait: 0.5
--- check eval
sub {
    my ($tok, $out, $body) = ::used();
    return (0, "usage: $body") unless defined $out;
    # about 13 of 40 words went out in 1.5 s (one per 0.1 s)
    return ($out >= 5 && $out <= 30, "output tokens charged: $out");
}



=== TEST 7: "llm_stream_usage on" adds stream_options.include_usage to an OpenAI Responses API stream too (POST /v1/responses), whose stream_options knows only include_obfuscation and whose response.completed event carries the usage anyway: OpenAI refuses an unknown parameter with a 400, so every streamed Responses call through such a location fails; only chat completions and completions take include_usage
--- http_config eval: $::Http
--- config
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    llm_stream_usage on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub { return { headers => { 'Content-Type' => 'text/event-stream' }, body => "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":7}}}\n\n" } }
--- request eval
[::post("/v1/responses", '{"model":"gpt-4o","stream":true,"input":"Hi"}'),
 ::post("/v1/chat/completions", ::chat(stream => 1))]
--- more_headers eval: $::Auth
--- check eval
sub {
    my @r = mock_requests();
    return (0, "responses: $r[0]{body}") if $r[0]{body} =~ /include_usage/;
    return (0, "chat: $r[1]{body}") unless $r[1]{body} =~ /include_usage/;
    return 1;
}



=== TEST 8: POST endpoints of the three APIs whose bodies are not a generation are refused with a 400 before the backend sees them, at a token-counted "location /v1/" (every example's): Anthropic's token counting (/v1/messages/count_tokens: messages without max_tokens, "max_tokens: Field required") and Message Batches ({"requests":[...]}), OpenAI's Batch API ({"input_file_id":...}) and Gemini's embedContent ({"content":...}, "request has no contents array"); SPEC 4 gives the 400 to a body that is not the API's shape, and these are the APIs' own shapes: they should reach the backend, and count_tokens reserves no output
--- http_config eval: $::Http
--- config
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
--- mock eval
sub {
    my ($req) = @_;
    return { headers => { 'Content-Type' => 'application/json' },
             body => $req->{path} =~ /count_tokens/ ? '{"input_tokens":12}'
                     : $req->{path} =~ /embedContent/ ? '{"embedding":{"values":[0.1,0.2]}}'
                     : '{"id":"batch_1","object":"batch","status":"validating"}' };
}
--- request eval
[::post("/v1/messages/count_tokens", '{"model":"claude-x","messages":[{"role":"user","content":"Hi"}]}'),
 ::post("/v1/messages/batches", '{"requests":[{"custom_id":"r1","params":{"model":"claude-x","max_tokens":100,"messages":[{"role":"user","content":"Hi"}]}}]}'),
 ::post("/v1/batches", '{"input_file_id":"file-abc","endpoint":"/v1/chat/completions","completion_window":"24h"}'),
 ::post("/v1beta/models/text-embedding-004:embedContent", '{"content":{"parts":[{"text":"Hi"}]}}'),
 "GET /usage"]
--- more_headers eval: $::Auth
--- response_body_like eval
['"input_tokens":12', '"id":"batch_1"', '"id":"batch_1"', '"embedding"', '"dimension":"output_tokens","period":"1m","limit":50000,"used":0,']
--- mock_count: 4



=== TEST 9: conf.examples/caching.conf caches GETs for an hour: proxy_cache always adds GET and HEAD to proxy_cache_methods ("LLM calls are POSTs", says its comment), so polling a batch's status (GET /v1/batches/ID) answers "in_progress" from the cache for an hour after the backend says "completed"
--- config
location = /x { return 204; }
--- request
GET /x
--- error_code: 204
--- mock eval
sub {
    my ($req) = @_;
    return { headers => { 'Content-Type' => 'application/json' },
             body => '{"id":"batch_1","status":"' . ($req->{n} == 1 ? 'in_progress' : 'completed') . '"}' };
}
--- check eval
sub {
    my ($port, $stop, $dir) = ::start_example('caching.conf',
        cache => "proxy_cache_path " . servroot() . "/example/cache keys_zone=llm_cache:1m");

    my @r = map {
        http_request("GET /v1/batches/batch_1", port => $port,
                     more_headers => "Authorization: Bearer $::CAROL")
    } 1 .. 2;

    $stop->();

    return (0, "second poll: $r[1]{status} $r[1]{body}")
        unless $r[1]{body} =~ /completed/;
    return 1;
}



=== TEST 10: (guards TEST 8's fix) a body that prompts nothing is let through but reserves the default answer: an assistant's run, which generates, is refused once the output window cannot hold llm_max_tokens_default, not admitted at no cost (SPEC 9: token windows never over-admit by more than the reservations in flight)
--- http_config eval
$::Http . "    llm_tier out output_tokens=1500/m;\n"
--- config
llm_default_tier out;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub { return { headers => { 'Content-Type' => 'application/json' },
               body => '{"id":"run_1","object":"thread.run","status":"completed","usage":{"prompt_tokens":10,"completion_tokens":1000,"total_tokens":1010}}' } }
--- request eval
[::post("/v1/threads/thread_1/runs", '{"assistant_id":"asst_1"}'),
 ::post("/v1/threads/thread_1/runs", '{"assistant_id":"asst_1"}')]
--- more_headers eval: $::Auth
--- error_code eval: [200, 429]
--- mock_count: 1



=== TEST 11: Gemini's countTokens (free, answers {"totalTokens":N}) is charged its prompt's estimate in the token windows, and reserves maxOutputTokens or llm_max_tokens_default: a client that counts before it sends pays twice; a token count generates nothing and costs nothing (Anthropic's count_tokens costs nothing since TEST 8's fix)
--- http_config eval: $::Http
--- config eval: $::Gateway . "location /v1beta/ { llm_gateway on; proxy_pass http://127.0.0.1:\$TEST_NGINX_MOCK_PORT; }\n"
--- mock eval
sub { return { headers => { 'Content-Type' => 'application/json' }, body => '{"totalTokens":250}' } }
--- request eval
::post("/v1beta/models/gemini-2.0-flash:countTokens", '{"contents":[{"role":"user","parts":[{"text":"' . join(' ', ('word') x 200) . '"}]}]}')
--- more_headers eval: $::Auth
--- response_headers_like
x-ratelimit-limit-tokens: ^50000$
x-ratelimit-remaining-tokens: ^50000$
--- check eval
sub {
    my ($tok, $out, $body) = ::used();
    return (0, "usage: $body") unless defined $tok;
    return ($tok == 0, "tokens charged for a token count: $tok");
}



=== TEST 12: with "satisfy any", an access module that grants access (allow) ends the access phase before the gateway's handler, which runs last: a client from an allowed address is neither authenticated nor counted, and its own API key goes upstream (SPEC 4: every credential form is removed from what goes upstream; SPEC 1: keys are authenticated in the access phase)
--- http_config eval: $::Http
--- config
llm_default_tier small;
location /v1/ {
    satisfy any;
    allow 127.0.0.1;
    deny all;
    auth_basic "x";
    auth_basic_user_file /nonexistent;
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models", "GET /v1/models", "GET /v1/models"]
--- more_headers
Authorization: Bearer sk-llm-not-a-key-of-anyone-aaaaaaaaaaaaaaaaaaaaaaaaaa
--- error_code: 401
--- mock_log_unlike
sk-llm-not-a-key



=== TEST 13: (guards TEST 12's fix) with "satisfy any" the gateway decides first and the others after it: a valid key from an allowed address is counted (tier small: 3 a minute)
--- http_config eval: $::Http
--- config
location /v1/ {
    satisfy any;
    allow 127.0.0.1;
    deny all;
    auth_basic "x";
    auth_basic_user_file /nonexistent;
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models", "GET /v1/models"]
--- more_headers eval: "Authorization: Bearer $Test::LLM::Keys::ALICE"
--- error_code eval: [200, 200, 200, 429]
--- mock_count: 3



=== TEST 14: (guards TEST 12's fix) with "satisfy any", a valid key from a denied address without basic credentials gets nginx's 401
--- http_config eval: $::Http
--- config
location /v2/ {
    satisfy any;
    deny all;
    auth_basic "x";
    auth_basic_user_file /dev/null;
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request
GET /v2/models
--- more_headers eval: $::Auth
--- error_code: 401
--- response_headers_like
WWW-Authenticate: Basic
--- mock_count: 0



=== TEST 15: "llm_api auto" takes any URI with "/messages" for Anthropic's, so OpenAI's Assistants API (POST /v1/threads/ID/messages, {"role","content"}) is read as an Anthropic Messages request and refused with a 400 "request has no \"messages\"" in Anthropic's shape; SPEC 3: auto picks the format by URI, and this URI is OpenAI's
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { return { headers => { 'Content-Type' => 'application/json' }, body => '{"id":"msg_1","object":"thread.message","role":"user"}' } }
--- request eval
[::post("/v1/threads/thread_1/messages", '{"role":"user","content":"Hi"}'),
 "GET /v1/threads/thread_1/messages"]
--- more_headers eval: "Authorization: Bearer sk-llm-wrong"
--- error_code: 401
--- response_body_like: ^\{"error":\{"message":"Incorrect API key provided\.","type":"invalid_request_error","param":null,"code":"invalid_api_key"\}\}$



=== TEST 16: the same with a valid key: the Assistants message reaches the backend
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { return { headers => { 'Content-Type' => 'application/json' }, body => '{"id":"msg_1","object":"thread.message","role":"user"}' } }
--- request eval: ::post("/v1/threads/thread_1/messages", '{"role":"user","content":"Hi"}')
--- more_headers eval: $::Auth
--- response_body_like: "thread\.message"
--- mock_count: 1
