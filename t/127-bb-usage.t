# Black-box findings on token windows, usage reading and the llm_usage /
# llm_token_info handlers, as an operator or an API client sees them.
#
# TESTs 1-2: llm_token_info at a Responses API URI counted a string
# "input" without the message framing that the gateway reserves for it
# (README: "a request in one of the API formats counts its prompt as the
# gateway reserves it"): 2 for "hello there" where the call reserves 9.
# TESTs 3-4: OpenAI's token counting endpoint, POST /v1/responses/
# input_tokens, was taken for a call: it reserved the prompt and
# llm_max_tokens_default and was charged the prompt, where Anthropic's
# /count_tokens and Gemini's :countTokens reserve and cost nothing.
# TEST 5 is the control (Anthropic's count_tokens).
# TESTs 6-7: an answer's tool call that is a JSON object (Gemini's
# functionCall "args", Anthropic's tool_use "input") was not counted as
# generated text when the answer told no usage (a stream the client
# cut), where OpenAI's string "arguments" and Anthropic's streamed
# "partial_json" are.  TESTs 8-9 are their controls: a usage told is
# still what is charged.
# TESTs 1-4 and 6-7 failed before their fixes (b8edbb9, b194c7c).

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat qw(post);

our $Auth = "Authorization: Bearer $Test::LLM::Keys::CAROL";

our $Http = $Test::LLM::Keys::TIERS . <<'_EOC_';
    llm_tier tok tokens=10000/m;
    log_format llm '$llm_model|$llm_prompt_tokens|$llm_completion_tokens|'
                   '$llm_tokens_estimated|$status';
_EOC_

our $Gateway = <<'_EOC_';
access_log logs/access.log llm;
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_buffering off;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location /v1beta/ {
    llm_gateway on;
    proxy_buffering off;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location /count/ {
    llm_token_info;
}
location = /usage {
    llm_usage;
}
_EOC_

# a Gemini stream that calls a tool, a chunk every 0.2 s: the client
# leaves after the first few, before the last chunk's usageMetadata
sub gemini_tool_stream {
    my @c;

    for my $i (1 .. 10) {
        push @c, 'data: {"candidates":[{"content":{"parts":[{"functionCall":'
            . '{"name":"get_weather","args":{"location":"Paris, France, '
            . "the capital city number $i\"}}}],\"role\":\"model\"},"
            . '"index":0}],"modelVersion":"gemini-2.0-flash"}' . "\r\n\r\n",
            { delay => 0.2 };
    }

    push @c, 'data: {"candidates":[{"content":{"parts":[{"text":""}],'
        . '"role":"model"},"finishReason":"STOP","index":0}],'
        . '"usageMetadata":{"promptTokenCount":11,"candidatesTokenCount":'
        . '222,"totalTokenCount":233},"modelVersion":"gemini-2.0-flash"}'
        . "\r\n\r\n";

    return { status => 200,
             headers => { 'Content-Type' => 'text/event-stream' },
             chunks => \@c };
}

run_tests();

__DATA__

=== TEST 1: llm_token_info at a Responses URI counts a string "input" as the call reserves it, one message: 2 + 4 + 3 = 9, as x-ratelimit-remaining-tokens shows (10000 - 9 - 100) (found: 2, the framing left out)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval
[::post("/count/v1/responses",
        '{"model":"gpt-4o","input":"hello there"}'),
 ::post("/v1/responses",
        '{"model":"gpt-4o","input":"hello there","max_output_tokens":100}')]
--- more_headers eval: $::Auth
--- response_body eval
["{\"tokens\":9,\"characters\":11,\"method\":\"estimate\"}\n", undef]
--- response_headers eval
[undef, { 'x-ratelimit-remaining-tokens' => 9891 }]



=== TEST 2: the same with "instructions": two messages, 7 + 8 + 3 = 15, as reserved (10000 - 15 - 100) (found: 11)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval
[::post("/count/v1/responses",
        '{"model":"gpt-4o","instructions":"be nice","input":"hello there"}'),
 ::post("/v1/responses",
        '{"model":"gpt-4o","instructions":"be nice","input":"hello there",'
        . '"max_output_tokens":100}')]
--- more_headers eval: $::Auth
--- response_body eval
["{\"tokens\":15,\"characters\":18,\"method\":\"estimate\"}\n", undef]
--- response_headers eval
[undef, { 'x-ratelimit-remaining-tokens' => 9885 }]



=== TEST 3: OpenAI's token count, POST /v1/responses/input_tokens, reserves no tokens: the window stands whole in its headers (found: 8971, the prompt (5) and 1024 reserved)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => '{"object":"response.input_tokens","input_tokens":11}' };
}
--- request eval
::post("/v1/responses/input_tokens",
       '{"model":"gpt-4o","input":"hello there how are you"}')
--- more_headers eval: $::Auth
--- response_headers
x-ratelimit-remaining-tokens: 10000
--- response_body_like: "input_tokens":11



=== TEST 4: ... and costs none: llm_usage shows nothing used after it (found: 5 used, the prompt's estimate, and $llm_prompt_tokens 5)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => '{"object":"response.input_tokens","input_tokens":11}' };
}
--- request eval
[::post("/v1/responses/input_tokens",
        '{"model":"gpt-4o","input":"hello there how are you"}'),
 "GET /usage"]
--- more_headers eval: $::Auth
--- response_body_like eval
['"input_tokens":11',
 '"dimension":"tokens","period":"1m","limit":10000,"used":0,'
 . '"remaining":10000,']
--- access_log_like
^gpt-4o\|0\|0\|



=== TEST 5: (control for TESTs 3-4) Anthropic's count_tokens reserves and costs nothing
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => '{"input_tokens":14}' };
}
--- request eval
[::post("/v1/messages/count_tokens",
        '{"model":"claude-sonnet-4-5","messages":[{"role":"user",'
        . '"content":"hello there how are you"}]}'),
 "GET /usage"]
--- more_headers eval: $::Auth
--- response_headers eval
[{ 'x-ratelimit-remaining-tokens' => 10000 }, undef]
--- response_body_like eval
['"input_tokens":14',
 '"dimension":"tokens","period":"1m","limit":10000,"used":0,'
 . '"remaining":10000,']



=== TEST 6: a Gemini stream the client leaves in the middle of a tool call is charged the function call's arguments that went out (README: "a stream cut short ... is charged at least the text that went out"), as an OpenAI or Anthropic one is (found: $llm_completion_tokens 0: functionCall "args" is an object, and only strings of text keys are counted)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { ::gemini_tool_stream() }
--- request eval
::post("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
       '{"contents":[{"role":"user","parts":[{"text":"weather?"}]}]}')
--- more_headers eval: $::Auth
--- timeout: 0.7
--- abort
--- ignore_response
--- check eval
sub {
    my ($l) = ::access_lines(1);
    my ($model, $in, $out, $est) = split /\|/, $l;
    return $est eq '1' && $out > 0 ? 1 : (0, "access log: $l");
}



=== TEST 7: a Claude answer without usage (a proxy that drops it) that calls a tool is charged the tool call's input as generated text, as the same call streamed (partial_json) is (found: $llm_completion_tokens 0: tool_use "input" is an object)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => '{"id":"msg_1","type":"message","role":"assistant",'
                . '"model":"claude-sonnet-4-5-20250929","content":[{"type":'
                . '"tool_use","id":"toolu_1","name":"get_weather","input":'
                . '{"location":"Paris, France, and a long argument text '
                . 'that the model wrote out"}}],"stop_reason":"tool_use"}' };
}
--- request eval
::post("/v1/messages", '{"model":"claude-sonnet-4-5","max_tokens":100,'
       . '"messages":[{"role":"user","content":"weather?"}]}')
--- more_headers eval: $::Auth
--- check eval
sub {
    my ($l) = ::access_lines(1);
    my ($model, $in, $out, $est) = split /\|/, $l;
    return $est eq '1' && $out > 0 ? 1 : (0, "access log: $l");
}



=== TEST 8: (control for TEST 6) the same Gemini stream read to its end is charged its usageMetadata, not the estimate
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { ::gemini_tool_stream() }
--- request eval
::post("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
       '{"contents":[{"role":"user","parts":[{"text":"weather?"}]}]}')
--- more_headers eval: $::Auth
--- timeout: 10
--- access_log_like
^gemini-2\.0-flash\|11\|222\|0\|200$



=== TEST 9: (control for TEST 7) a Claude answer with its usage that calls a tool, whose input names a "usage" and a "model" of its own, is charged its usage and named by its model (sent 7 bytes a chunk: read by the lexer)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    my $b = '{"id":"msg_1","type":"message","role":"assistant",'
        . '"model":"claude-sonnet-4-5-20250929","content":[{"type":'
        . '"tool_use","id":"toolu_1","name":"log","input":{"model":'
        . '"other","usage":{"input_tokens":9999,"output_tokens":'
        . '9999}}}],"stop_reason":"tool_use","usage":{'
        . '"input_tokens":40,"output_tokens":50}}';
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             chunks => [ unpack '(a7)*', $b ] };
}
--- request eval
::post("/v1/messages", '{"model":"claude-sonnet-4-5","max_tokens":100,'
       . '"messages":[{"role":"user","content":"log it"}]}')
--- more_headers eval: $::Auth
--- access_log_like
^claude-sonnet-4-5-20250929\|40\|50\|0\|200$
