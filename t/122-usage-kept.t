# Usage that a later object of the same answer tells only in part: an
# Anthropic message_delta that names input_tokens without the cache's
# counts, and a Gemini JSON-array stream (no alt=sse) that arrives in one
# buffer with its usage in its first chunk only; a Responses API stream
# whose events name their type in their data only.  TESTs 1, 3 and 5
# failed before their fix; 2 and 4 guard what must not change.  TEST 6,
# a Gemini JSON object whose usage comes before its text, in pieces,
# failed before its fix; 7 guards it.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat qw(post);

our $Auth = "Authorization: Bearer $Test::LLM::Keys::CAROL";

our $Http = $Test::LLM::Keys::TIERS . <<'_EOC_';
    llm_tier tok tokens=100000/m;
    llm_price "gemini-1.5-flash*" input=0.075 output=0.30;
    llm_price "claude-*" input=3 output=15;
    llm_price "o3*" input=2 output=8;
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

# an SSE event named "name"
sub sse {
    my ($json, $name) = @_;
    return "event: $name\ndata: $json\n\n";
}

# an Anthropic stream whose message_start tells 25 input tokens, 100
# written to the cache and 50 read from it, then "delta"'s usage
sub claude {
    my ($delta) = @_;
    return { status => 200,
             headers => { 'Content-Type' => 'text/event-stream' },
             chunks => [
        sse('{"type":"message_start","message":{"id":"m","type":"message",'
            . '"role":"assistant","model":"claude-3-haiku","content":[],'
            . '"usage":{"input_tokens":25,"cache_creation_input_tokens":100,'
            . '"cache_read_input_tokens":50,"output_tokens":1}}}',
            'message_start'),
        sse('{"type":"content_block_delta","index":0,"delta":'
            . '{"type":"text_delta","text":"Hello there."}}',
            'content_block_delta'),
        sse('{"type":"message_delta","delta":{"stop_reason":"end_turn"},'
            . "\"usage\":$delta}", 'message_delta'),
        sse('{"type":"message_stop"}', 'message_stop') ] };
}

our $Claude = '{"model":"claude-3-haiku","max_tokens":1000,"stream":true,'
    . '"messages":[{"role":"user","content":"hi"}]}';

# a Gemini candidate with "text", and a usage
sub part {
    my ($text) = @_;
    return "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"$text\"}],"
         . '"role":"model"}}]';
}

our $Usage = ',"usageMetadata":{"promptTokenCount":5,'
    . '"candidatesTokenCount":%d,"totalTokenCount":%d},'
    . '"modelVersion":"gemini-1.5-flash"}';

# 200 words, about 200 tokens
our $Words = 'the quick brown fox jumps ' x 40;

our $Gemini = '{"contents":[{"parts":[{"text":"hi"}]}]}';

# a Responses API stream (as OpenAI sends it, event lines optional):
# reasoning summary (10 x 3 words), 40 text deltas of 5 words (200 words,
# about 200 tokens), then the .done events that repeat the text, then cut
# before response.completed
sub responses_cut {
    my ($named, $last) = @_;
    my $w = 'the quick brown fox jumps ';
    my $all = $w x 40;
    my $sum = 'thinking about foxes ' x 10;
    my $seq = 0;
    my $ev = sub {
        my ($type, $rest) = @_;
        # "type" last: the keys in the OpenAI SDK's (alphabetical) order,
        # as a proxy that writes out its objects sends them
        return ($named ? "event: $type\n" : '')
             . ($last ? "data: {$rest,\"sequence_number\":" . $seq++
                        . ",\"type\":\"$type\"}\n\n"
                      : "data: {\"type\":\"$type\",\"sequence_number\":"
                        . $seq++ . ",$rest}\n\n");
    };
    my $resp = '"response":{"id":"resp_1","object":"response",'
        . '"created_at":1741290958,"status":"in_progress","error":null,'
        . '"instructions":null,"model":"o3-2025-04-16","output":[],'
        . '"reasoning":{"effort":"medium","summary":"auto"},'
        . '"text":{"format":{"type":"text"}},"usage":null}';
    my @e = ( $ev->('response.created', $resp),
              $ev->('response.in_progress', $resp),
              $ev->('response.output_item.added', '"output_index":0,'
                    . '"item":{"id":"rs_1","type":"reasoning","summary":[]}') );
    push @e, $ev->('response.reasoning_summary_text.delta', '"item_id":"rs_1",'
                   . '"output_index":0,"summary_index":0,'
                   . '"delta":"thinking about foxes "') for 1 .. 10;
    push @e, $ev->('response.reasoning_summary_text.done', '"item_id":"rs_1",'
                   . "\"output_index\":0,\"summary_index\":0,\"text\":\"$sum\"");
    push @e, $ev->('response.output_item.added', '"output_index":1,"item":'
                   . '{"id":"msg_1","type":"message","status":"in_progress",'
                   . '"role":"assistant","content":[]}');
    push @e, $ev->('response.output_text.delta', '"item_id":"msg_1",'
                   . '"output_index":1,"content_index":0,'
                   . "\"delta\":\"$w\",\"logprobs\":[]") for 1 .. 40;
    push @e,
        $ev->('response.output_text.done', '"item_id":"msg_1",'
              . '"output_index":1,"content_index":0,'
              . "\"text\":\"$all\",\"logprobs\":[]"),
        $ev->('response.content_part.done', '"item_id":"msg_1",'
              . '"output_index":1,"content_index":0,"part":'
              . "{\"type\":\"output_text\",\"annotations\":[],\"text\":\"$all\"}"),
        $ev->('response.output_item.done', '"output_index":1,"item":'
              . '{"id":"msg_1","type":"message","status":"completed",'
              . '"role":"assistant","content":[{"type":"output_text",'
              . "\"annotations\":[],\"text\":\"$all\"}]}");
    return { status => 200,
             headers => { 'Content-Type' => 'text/event-stream' },
             chunks => [ @e, { close => 1 } ] };
}

run_tests();

__DATA__

=== TEST 1: an Anthropic message_delta whose usage names input_tokens but not the cache's counts keeps what message_start told of them: the prompt is charged 25 + 100 + 50 = 175 (before: 25, the cache's 150 tokens charged to nobody)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { ::claude('{"input_tokens":25,"output_tokens":15}') }
--- request eval
::post("/v1/messages", $::Claude)
--- more_headers eval: "$::Auth\r\nContent-Type: application/json"
--- error_code: 200
--- access_log_like
^claude-3-haiku\|175\|15\|0\|0\.000750\|200$



=== TEST 2: (guards TEST 1's fix) a message_delta that names all three input counts replaces them: 30 + 0 + 60 = 90
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    ::claude('{"input_tokens":30,"cache_creation_input_tokens":0,'
             . '"cache_read_input_tokens":60,"output_tokens":15}')
}
--- request eval
::post("/v1/messages", $::Claude)
--- more_headers eval: "$::Auth\r\nContent-Type: application/json"
--- error_code: 200
--- access_log_like
^claude-3-haiku\|90\|15\|0\|0\.000495\|200$



=== TEST 3: a Gemini stream sent as a JSON array (no alt=sse) with a Content-Length, whose usage came in its first chunk only, is charged at least the 200 words that followed, and $llm_tokens_estimated is 1, as the same answer in pieces is (before, in one buffer: 1 output token, estimated 0)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => '[' . ::part('a') . sprintf($::Usage, 1, 6) . ",\r\n"
                   . ::part($::Words) . "}]" };
}
--- request eval
::post("/v1beta/models/gemini-1.5-flash:streamGenerateContent", $::Gemini)
--- more_headers eval: "$::Auth\r\nContent-Type: application/json"
--- error_code: 200
--- access_log_like
^gemini-1\.5-flash\|5\|(1[5-9][0-9]|2[0-5][0-9])\|1\|0\.0000[0-9]{2}\|200$



=== TEST 4: (guards TEST 3's fix) a Gemini JSON array in one buffer whose last chunk tells the usage is charged as told, nothing estimated
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => '[' . ::part('a') . "},\r\n"
                   . ::part($::Words) . sprintf($::Usage, 300, 305) . ']' };
}
--- request eval
::post("/v1beta/models/gemini-1.5-flash:streamGenerateContent", $::Gemini)
--- more_headers eval: "$::Auth\r\nContent-Type: application/json"
--- error_code: 200
--- access_log_like
^gemini-1\.5-flash\|5\|300\|0\|0\.000091\|200$



=== TEST 5: a Responses API stream whose events name their type in the data only (no "event:" lines; the OpenAI SDK reads "type" from the data), cut before response.completed, is charged its text once (about 230 tokens: 200 of text, 30 of summary), as the same stream with event lines is (found: 872, the text of output_text.done, content_part.done and output_item.done counted again)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { my ($req) = @_; ::responses_cut($req->{n} == 2) }
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $body = '{"model":"o3","stream":true,"input":"hi"}';
    http_request("POST /v1/responses",      # the mock's 2nd: event lines
        more_headers => "$::Auth\r\nContent-Type: application/json",
        body => $body, timeout => 10);
    http_request("POST /v1/responses",      # 3rd: data lines only
        more_headers => "$::Auth\r\nContent-Type: application/json",
        body => $body, timeout => 10);
    my @l = (::access_lines(3))[1, 2];
    my @out = map { (split /\|/)[2] } @l;
    return $out[0] == $out[1] && $out[0] >= 180 && $out[0] <= 300
        ? 1 : (0, "with event lines: $l[0]\nwithout: $l[1]");
}
=== TEST 6: a Gemini generateContent answer (a JSON object, a whole answer) whose usageMetadata comes before its text, in pieces, is charged as told, nothing estimated, as the same answer in one buffer is (TEST 7); before: at least the text, estimated 1
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             chunks => [ '{"usageMetadata":{"promptTokenCount":5,'
                         . '"candidatesTokenCount":3,"totalTokenCount":8},'
                         . '"modelVersion":"gemini-1.5-flash",',
                         { delay => 0.1 },
                         substr(::part($::Words), 1) . '}' ] };
}
--- request eval
::post("/v1beta/models/gemini-1.5-flash:generateContent", $::Gemini)
--- more_headers eval: "$::Auth\r\nContent-Type: application/json"
--- error_code: 200
--- access_log_like
^gemini-1\.5-flash\|5\|3\|0\|0\.000002\|200$



=== TEST 7: (guards TEST 6) the same answer in one buffer
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => '{"usageMetadata":{"promptTokenCount":5,'
                     . '"candidatesTokenCount":3,"totalTokenCount":8},'
                     . '"modelVersion":"gemini-1.5-flash",'
                     . substr(::part($::Words), 1) . '}' };
}
--- request eval
::post("/v1beta/models/gemini-1.5-flash:generateContent", $::Gemini)
--- more_headers eval: "$::Auth\r\nContent-Type: application/json"
--- error_code: 200
--- access_log_like
^gemini-1\.5-flash\|5\|3\|0\|0\.000002\|200$



=== TEST 8: TEST 5's stream without event lines and with "type" last in each event's data (a proxy that writes out the OpenAI SDK's objects, whose keys are in alphabetical order): the text is charged once, as with event lines (found: the .done events' text counted again: their type comes after it)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { my ($req) = @_; ::responses_cut($req->{n} == 2, $req->{n} == 3) }
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $body = '{"model":"o3","stream":true,"input":"hi"}';
    http_request("POST /v1/responses",      # the mock's 2nd: event lines
        more_headers => "$::Auth\r\nContent-Type: application/json",
        body => $body, timeout => 10);
    http_request("POST /v1/responses",      # 3rd: data only, "type" last
        more_headers => "$::Auth\r\nContent-Type: application/json",
        body => $body, timeout => 10);
    my @l = (::access_lines(3))[1, 2];
    my @out = map { (split /\|/)[2] } @l;
    return $out[0] == $out[1] && $out[0] >= 180 && $out[0] <= 300
        ? 1 : (0, "with event lines: $l[0]\nwithout, type last: $l[1]");
}
