# Review 15, the request side.  Each block failed before its fix.
#
# Numbers in a request body as JSON has them: an integer beyond 64 bits
# (a tool's schema may name 18446744073709551615) is a valid request, and
# the gateway forwards it as written, sets stream_options in place without
# writing the body anew, and gives it a cache key of its own.  Before:
# every such request was refused with 400 "a number in the request body is
# out of range", and a body that had stream_options was re-serialized
# (1.10 became 1.1, spacing and key order changed).

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat qw(chat post);

our $Auth = "Authorization: Bearer $Test::LLM::Keys::CAROL";

our $Http = $Test::LLM::Keys::TIERS . <<"_EOC_";
    llm_tier tok tokens=100000/m;
    log_format nums '\$llm_account|\$llm_prompt_tokens|\$llm_total_tokens|\$status';
_EOC_

# a chat request with one function whose schema names integers beyond
# 64 bits, one each way
our $Tools = '"tools":[{"type":"function","function":{"name":"pick",'
    . '"parameters":{"type":"object","properties":{"id":{"type":"integer",'
    . '"minimum":-99999999999999999999999,"maximum":18446744073709551615}}}}}]';

our $Big = '{"model":"gpt-4o","max_tokens":20,"messages":[{"role":"user",'
    . '"content":"Pick an id"}],' . $Tools . '}';

run_tests();

__DATA__

=== TEST 1: a request whose tool schema names integers beyond 64 bits is answered 200, charged, and reaches the backend byte for byte (before: 400 "a number in the request body is out of range", never sent)
--- http_config eval: $::Http
--- config
access_log logs/access.log nums;
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
::post("/v1/chat/completions", $::Big)
--- more_headers eval: $::Auth
--- error_code: 200
--- response_body_like: "usage"
--- mock_count: 1
--- check eval
sub {
    my @r = mock_requests();
    return (0, "the backend got: $r[0]{body}") unless $r[0]{body} eq $::Big;
    return 1;
}
--- access_log_like
^carol\|\d+\|30\|200$



=== TEST 2: with llm_stream_usage on, a stream whose stream_options says include_usage false gets true in its place and every other byte as the client wrote it: spacing, key order, 1.10, 1e2 and an integer beyond 64 bits (before: 1.10 became 1.1 and the spacing went; with the big integer, the request failed)
--- http_config eval: $::Http
--- config
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    llm_stream_usage on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
[::post("/v1/chat/completions", '{"stream":true, "stream_options": {"include_usage": false, "x": 1}, "temperature": 1.10, "top_p": 1e-1, "seed": 18446744073709551616, "model":"m","max_tokens":5,"messages":[{"role":"user","content":"Hi"}]}'),
 ::post("/v1/chat/completions", '{"model":"m","stream":true,"stream_options":{ },"max_tokens":5,"messages":[],"n":1.0}'),
 ::post("/v1/chat/completions", '{"model":"m","stream":true,"stream_options":null,"max_tokens":5,"messages":[]}')]
--- more_headers eval: $::Auth
--- error_code eval
[200, 200, 200]
--- response_body_like eval
["data: \\[DONE\\]", "data: \\[DONE\\]", "data: \\[DONE\\]"]
--- check eval
sub {
    my @r = mock_requests();
    my @want = (
        '{"stream":true, "stream_options": {"include_usage": true, "x": 1}, "temperature": 1.10, "top_p": 1e-1, "seed": 18446744073709551616, "model":"m","max_tokens":5,"messages":[{"role":"user","content":"Hi"}]}',
        '{"model":"m","stream":true,"stream_options":{"include_usage":true },"max_tokens":5,"messages":[],"n":1.0}',
        '{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":5,"messages":[]}',
    );
    for my $i (0 .. 2) {
        return (0, "request $i reached the backend as: $r[$i]{body}")
            unless defined $r[$i] && $r[$i]{body} eq $want[$i];
        return (0, "request $i: Content-Length "
                   . "$r[$i]{headers}{'content-length'}")
            unless $r[$i]{headers}{'content-length'} == length $want[$i];
    }
    return 1;
}



=== TEST 3: $llm_cache_key for bodies with an integer beyond 64 bits: the same body twice is one backend call, and a body that differs only in that integer's last digit is another (two such integers may be one double: the key must not merge them)
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
    add_header X-Cache $upstream_cache_status always;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
[::post("/v1/chat/completions", '{"model":"gpt-4o","max_tokens":9,"seed":18446744073709551616,"messages":[{"role":"user","content":"Hi"}]}'),
 ::post("/v1/chat/completions", '{"model":"gpt-4o","max_tokens":9,"seed":18446744073709551616,"messages":[{"role":"user","content":"Hi"}]}'),
 ::post("/v1/chat/completions", '{"model":"gpt-4o","max_tokens":9,"seed":18446744073709551617,"messages":[{"role":"user","content":"Hi"}]}')]
--- more_headers eval: $::Auth
--- error_code eval
[200, 200, 200]
--- response_headers eval
["X-Cache: MISS", "X-Cache: HIT", "X-Cache: MISS"]
--- mock_count: 2



=== TEST 4: a number a double cannot hold is still refused before the backend, an integer of 400 digits as 1e400 is
--- http_config eval: $::Http
--- config
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
[::post("/v1/chat/completions", '{"model":"m","max_tokens":5,"seed":1' . ('0' x 400) . ',"messages":[]}'),
 ::post("/v1/chat/completions", '{"model":"m","max_tokens":5,"seed":-1' . ('0' x 400) . ',"messages":[]}'),
 ::post("/v1/chat/completions", '{"model":"m","max_tokens":18446744073709551616,"messages":[]}')]
--- more_headers eval: $::Auth
--- error_code eval
[400, 400, 400]
--- response_body_like eval
['"message":"a number in the request body is out of range"',
 '"message":"a number in the request body is out of range"',
 '"message":"\\\\"max_tokens\\\\" must be an integer from 1 to 2147483647"']
--- mock_count: 0



=== TEST 5: a Responses API stream posted to /v1/responses/ (a trailing slash) is left as it is, as at /v1/responses: its stream_options takes no include_usage, which OpenAI refuses (before: include_usage was added)
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
[::post("/v1/responses/", '{"model":"gpt-4o","stream":true,"input":"Hi"}'),
 ::post("/v1/chat/completions/", ::chat(stream => 1))]
--- more_headers eval: $::Auth
--- error_code eval
[200, 200]
--- check eval
sub {
    my @r = mock_requests();
    return (0, "responses: $r[0]{body}")
        unless $r[0]{body} eq '{"model":"gpt-4o","stream":true,"input":"Hi"}';
    return (0, "chat: $r[1]{body}") unless $r[1]{body} =~ /include_usage/;
    return 1;
}



=== TEST 6: after the stream_options edit, $content_length is the new body's length, as uwsgi_params and fastcgi_params send it (CONTENT_LENGTH) and as "proxy_set_header Content-Length $content_length" does (before: the client's length, so such a backend read a cut body, or waited for bytes that never came, and a keepalive connection carried the rest into the next request)
--- http_config eval: $::Http
--- config
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    llm_stream_usage on;
    proxy_set_header X-Content-Length $content_length;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
[::post("/v1/chat/completions", '{"model":"m","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'),
 ::post("/v1/chat/completions", '{"model":"m","stream":true,"stream_options":{"include_usage":false},"max_tokens":5,"messages":[]}')]
--- more_headers eval: $::Auth
--- error_code eval
[200, 200]
--- check eval
sub {
    my @r = mock_requests();
    for my $q (@r) {
        my $len = length $q->{body};
        return (0, "body of $len bytes with X-Content-Length "
                   . ($q->{headers}{'x-content-length'} // 'none'))
            unless ($q->{headers}{'x-content-length'} // '') eq $len
                   && $q->{body} =~ /"include_usage":true/;
    }
    return 1;
}



=== TEST 7: a JSON body the client compressed (Content-Encoding: gzip) is refused with a 400 that says so, in the API's shape, not with "not valid JSON at byte 0"; an odd encoding name is quoted safely
--- http_config eval: $::Http
--- config
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
[::post("/v1/chat/completions", "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"),
 ::post("/v1/messages", "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"),
 ::post("/v1/chat/completions", "\x1f\x8b\x08\x00")]
--- more_headers eval
["$::Auth\r\nContent-Encoding: gzip", "$::Auth\r\nContent-Encoding: gzip", "$::Auth\r\nContent-Encoding: x\"y"]
--- error_code eval
[400, 400, 400]
--- response_body_like eval
['^\{"error":\{"message":"request body is encoded \(Content-Encoding: gzip\): the gateway reads it uncompressed","type":"invalid_request_error"',
 '^\{"type":"error","error":\{"type":"invalid_request_error","message":"request body is encoded \(Content-Encoding: gzip\)',
 '"message":"request body is encoded \(Content-Encoding: x\\\\"y\): the gateway']
--- mock_count: 0
