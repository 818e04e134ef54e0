# Review 14: what the gateway reads in backends' answers (the model it
# prices, the usage it charges, the text it estimates when no usage comes)
# with answers a real backend sends.  Each block failed before its fix;
# it says what a user sees and what README says.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat qw(chat post);

our $Auth = "Authorization: Bearer $Test::LLM::Keys::CAROL";

our $Http = $Test::LLM::Keys::TIERS . <<'_EOC_';
    llm_tier tok tokens=100000/m;
    llm_price gpt-4o input=2.50 output=10.00;
    llm_price "gemini-1.5-flash*" input=0.075 output=0.30;
    llm_price "claude-*" input=3 output=15;
    log_format llm '$llm_model|$llm_prompt_tokens|$llm_completion_tokens|'
                   '$llm_tokens_estimated|$llm_cost|$status';
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
_EOC_

# an SSE event: "data: JSON\n\n", with "event: NAME\n" before it if named
sub sse {
    my ($json, $name) = @_;
    return (defined $name ? "event: $name\n" : '') . "data: $json\n\n";
}

# carol's POST of "body" to "uri": the response
sub carol {
    my ($uri, $body) = @_;
    return http_request("POST $uri",
        more_headers => "$::Auth\r\nContent-Type: application/json",
        body => $body, timeout => 10);
}

# the fields of the access log's "n"th line (0: the block's own request):
# model, prompt, completion, estimated, cost, status
sub logged {
    my ($n) = @_;
    return split /\|/, (access_lines($n + 1))[$n];
}

# an Anthropic stream: message_start (25 in, the placeholder 1 out), 200
# words of text in 40 deltas, "tail" events, and an overload error where
# message_stop would be
sub claude_chunks {
    my (@tail) = @_;
    my @d = map {
        sse('{"type":"content_block_delta","index":0,"delta":'
            . '{"type":"text_delta","text":"the quick brown fox jumps "}}',
            'content_block_delta')
    } 1 .. 40;
    return ( sse('{"type":"message_start","message":{"id":"m",'
                 . '"type":"message","role":"assistant",'
                 . '"model":"claude-3-haiku","content":[],'
                 . '"usage":{"input_tokens":25,"output_tokens":1}}}',
                 'message_start'),
             sse('{"type":"content_block_start","index":0,'
                 . '"content_block":{"type":"text","text":""}}',
                 'content_block_start'),
             @d, @tail,
             sse('{"type":"error","error":{"type":"overloaded_error",'
                 . '"message":"Overloaded"}}', 'error') );
}

# an answer streaming "chunks" (SSE events, { close => 1 } to cut it)
sub sse_answer {
    return { status => 200,
             headers => { 'Content-Type' => 'text/event-stream' },
             chunks => [ @_ ] };
}

# carol's POST of "body" to "uri", then what it was charged: "IN text 1"
# when its output was the text the tests stream (200 words, about 200
# tokens) and estimated
sub charged {
    carol(@_);
    my ($m, $in, $out, $est) = logged(1);
    return "$in " . ($out >= 150 && $out <= 260 ? 'text' : $out) . " $est";
}

sub claude_charged {
    return charged('/v1/messages', '{"model":"claude-3-haiku",'
        . '"max_tokens":1000,"stream":true,'
        . '"messages":[{"role":"user","content":"hi"}]}');
}

our $Gemini = '{"contents":[{"parts":[{"text":"hi"}]}]}';

# a Gemini candidate whose function call's arguments name a "model"
our $Call = '{"content":{"role":"model","parts":[{"functionCall":'
    . '{"name":"find_car","args":{"make":"Honda","model":"gpt-4o"}}}]},'
    . '"finishReason":"STOP"}';

run_tests();

__DATA__

=== TEST 1: a Gemini answer whose function call's arguments name a "model" is priced as the model that answered (modelVersion), not as the arguments say, in a JSON body and in a stream (before: $llm_model gpt-4o, cost 0.012500 for gemini-1.5-flash-002's 0.000375; the model's own output set the price)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    my ($req) = @_;
    my $usage = '"usageMetadata":{"promptTokenCount":1000,'
              . '"candidatesTokenCount":1000,"totalTokenCount":2000},'
              . '"modelVersion":"gemini-1.5-flash-002"';
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => "{\"candidates\":[$::Call],$usage}" }
        if $req->{path} =~ /:generateContent$/;
    return ::sse_answer(::sse("{\"candidates\":[$::Call]}"),
                        ::sse("{\"candidates\":[],$usage}"));
}
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    ::carol('/v1beta/models/gemini-1.5-flash:generateContent', $::Gemini);
    ::carol('/v1beta/models/gemini-1.5-flash:streamGenerateContent?alt=sse',
            $::Gemini);
    my @l = (::access_lines(3))[1, 2];
    my $got = join "\n", @l;
    my $want = "gemini-1.5-flash-002|1000|1000|0|0.000375|200\n"
             . "gemini-1.5-flash-002|1000|1000|0|0.000375|200";
    return $got eq $want ? 1 : (0, "got\n$got\nwant\n$want");
}



=== TEST 2: an Anthropic answer with its keys sorted (its tool_use input, naming a "model", comes before the message's own "model") is priced as claude (before: gpt-4o's price)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => '{"content":[{"id":"t1","input":{"model":"gpt-4o"},'
                   . '"name":"f","type":"tool_use"}],"id":"msg_1",'
                   . '"model":"claude-3-haiku","role":"assistant",'
                   . '"stop_reason":"tool_use","type":"message",'
                   . '"usage":{"input_tokens":1000,"output_tokens":1000}}' };
}
--- request eval
::post("/v1/messages", '{"model":"claude-3-haiku","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}')
--- more_headers eval: $::Auth
--- access_log_like
^claude-3-haiku\|1000\|1000\|0\|0\.018000\|200$



=== TEST 3: an Anthropic stream that ends with an error event instead of message_delta (an overload mid-answer) is charged at least the text that went out, not message_start's placeholder output_tokens of 1, and $llm_tokens_estimated is 1 (before: 1 output token, estimated 0)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    return ::sse_answer(::claude_chunks());
}
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $got = ::claude_charged();
    return $got eq '25 text 1' ? 1 : (0, "got $got, want 25 text 1");
}



=== TEST 4: an OpenAI audio answer's transcript deltas, cut by the backend before its usage, are charged as the text that went out (before: 0 output tokens, as if nothing had been generated)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    my @d = map {
        ::sse('{"id":"c","object":"chat.completion.chunk","model":"gpt-4o",'
              . '"choices":[{"index":0,"delta":{"audio":{"id":"a",'
              . '"transcript":"the quick brown fox jumps ",'
              . '"data":"AAAA"}}}]}')
    } 1 .. 40;
    return ::sse_answer(@d, { close => 1 });
}
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $got = ::charged('/v1/chat/completions', '{"model":"gpt-4o",'
        . '"stream":true,"max_tokens":1000,"modalities":["text","audio"],'
        . '"messages":[{"role":"user","content":"hi"}]}');
    return $got =~ /^\d+ text 1$/ ? 1 : (0, "got $got, want N text 1");
}



=== TEST 5: a Responses API stream cut before response.completed is charged its text once, although output_text.done, content_part.done and output_item.done each repeat all of it (before: four times as much, one more each)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    my ($req) = @_;
    my $word = 'the quick brown fox jumps ';
    my $all = $word x 40;
    my @d = map {
        ::sse('{"type":"response.output_text.delta","item_id":"i",'
              . "\"output_index\":0,\"content_index\":0,\"delta\":\"$word\"}",
              'response.output_text.delta')
    } 1 .. 40;
    my @done = (
        ::sse('{"type":"response.output_text.done","item_id":"i",'
              . "\"text\":\"$all\"}", 'response.output_text.done'),
        ::sse('{"type":"response.content_part.done","item_id":"i",'
              . "\"part\":{\"type\":\"output_text\",\"text\":\"$all\"}}",
              'response.content_part.done'),
        ::sse('{"type":"response.output_item.done","item":{"id":"i",'
              . '"type":"message","content":[{"type":"output_text",'
              . "\"text\":\"$all\"}]}}", 'response.output_item.done'));
    return ::sse_answer(@d, ($req->{n} == 2 ? @done : ()),
                        { close => 1 });
}
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $body = '{"model":"gpt-4o","stream":true,"input":"hi"}';
    ::carol('/v1/responses', $body);    # the mock's 2nd request: with .done
    ::carol('/v1/responses', $body);    # 3rd: deltas only
    my @l = (::access_lines(3))[1, 2];
    my @out = map { (split /\|/)[2] } @l;
    return $out[0] == $out[1] && $out[0] >= 150 && $out[0] <= 260
        ? 1 : (0, "with the .done events: $l[0]\nwithout: $l[1]");
}



=== TEST 6: a usage that names the output but not the prompt: the prompt is charged its estimate, not 0, and $llm_tokens_estimated is 1 (before: 0 input tokens charged for a prompt of about 400)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => '{"id":"c","object":"chat.completion","model":"gpt-4o",'
                   . '"choices":[{"index":0,"message":{"role":"assistant",'
                   . '"content":"ok"},"finish_reason":"stop"}],'
                   . '"usage":{"completion_tokens":20}}' };
}
--- request eval
::post("/v1/chat/completions", ::chat(text => join(' ', ('the quick brown fox jumps') x 80)))
--- more_headers eval: $::Auth
--- access_log_like
^gpt-4o\|[34]\d\d\|20\|1\|



=== TEST 7: the Responses API's string "input" is the user's message: its reservation counts the message's framing, as the same text in an array of one message does (before: 1 token for "hi", against 8); the backend fails both, so neither costs anything
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { return { status => 500, body => 'failed' } }
--- request eval
[::post("/v1/responses", '{"model":"gpt-4o","max_output_tokens":10,"input":"hi"}'),
 ::post("/v1/responses", '{"model":"gpt-4o","max_output_tokens":10,"input":[{"role":"user","content":"hi"}]}')]
--- more_headers eval: $::Auth
--- response_headers_like eval
["x-ratelimit-remaining-tokens: ^99982\$", "x-ratelimit-remaining-tokens: ^99982\$"]
--- error_code eval
[500, 500]



=== TEST 8: (guards TEST 6's fix) an embedding's usage names no output, and none was generated: it is charged as told, nothing estimated
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { return mock_openai_embeddings(model => 'text-embedding-3-small', prompt_tokens => 8) }
--- request eval
::post("/v1/embeddings", '{"model":"text-embedding-3-small","input":"hi"}')
--- more_headers eval: $::Auth
--- access_log_like
^text-embedding-3-small\|8\|0\|0\|



=== TEST 9: (guards TEST 3's fix) a message_delta whose usage names no count ({} or a null) does not make message_start's placeholder final: the stream is still charged the text that went out (found by review: an empty usage object was counted as the final one)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    return ::sse_answer(::claude_chunks(
               ::sse('{"type":"message_delta","delta":{"stop_reason":'
                     . 'null},"usage":{"output_tokens":null}}',
                     'message_delta')));
}
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $got = ::claude_charged();
    return $got eq '25 text 1' ? 1 : (0, "got $got, want 25 text 1");
}



=== TEST 10: (guards TEST 5's fix) the last "event" line of an event names it, and a bare "event" names none (SSE): the text of an event whose "response.output_text.done" is overridden so counts (found by review)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    my @d = map {
        "event: response.output_text.done\nevent\n"
        . 'data: {"type":"response.output_text.delta","delta":'
        . "\"the quick brown fox jumps \"}\n\n"
    } 1 .. 40;
    return ::sse_answer(@d, { close => 1 });
}
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $got = ::charged('/v1/responses',
                        '{"model":"gpt-4o","stream":true,"input":"hi"}');
    return $got =~ /^\d+ text 1$/ ? 1 : (0, "got $got, want N text 1");
}
