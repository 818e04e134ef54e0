# Calls whose request names no priced model: Claude on Vertex AI and
# Azure OpenAI name the model (the deployment) in the path, and an alias
# may have no llm_price while the answer names a priced model.  Before,
# such a call reserved no cost, and a cost window, spent or not, let it
# through while its answer was charged (found by a black-box test).
# TESTs 1-4 and 7 failed before their fix; 6 is the control.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat qw(post);

our $Auth = "Authorization: Bearer $Test::LLM::Keys::CAROL";

our $Http = $Test::LLM::Keys::TIERS . <<'_EOC_';
    llm_tier tok tokens=1000000/m;
    llm_tier budget cost=0.010/m;
    llm_price gpt-4o        input=2.50 output=10.00 cache_read=1.25;
    llm_price "gpt-4o-mini*" input=0.15 output=0.60 cache_read=0.075;
    llm_price "gpt-4*"      input=30   output=60;
    llm_price "claude-*"    input=3    output=15 cache_read=0.30 cache_write=3.75;
    llm_price "o3*"         input=2    output=8  cache_read=0.50;
    log_format llm '$llm_model|$llm_prompt_tokens|$llm_completion_tokens|'
                   '$llm_tokens_estimated|$llm_cost|$status';
_EOC_

our $Gateway = <<'_EOC_';
access_log logs/access.log llm;
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_buffering off;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location /openai/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location /budget/ {
    llm_gateway on;
    llm_default_tier budget;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT/;
}
_EOC_

# Claude on Vertex AI: the model and its version are in the URL
# (POST .../publishers/anthropic/models/MODEL@VERSION:rawPredict), the
# body has "anthropic_version" and no "model"
our $Vertex = '/v1/projects/p/locations/us-east5/publishers/anthropic/'
    . 'models/claude-sonnet-4-5@20250929:rawPredict';

sub vertex_body {
    my ($max) = @_;
    return '{"anthropic_version":"vertex-2023-10-16","max_tokens":'
         . $max . ',"messages":[{"role":"user","content":"hi"}]}';
}

# Claude's JSON answer: 472 in, 1,000 written to the cache, 2,000 read
# from it, 503 out: 472 x 3 + 1000 x 3.75 + 2000 x 0.30 + 503 x 15
# = 0.013311 USD, more than the whole 0.010/m budget
our $ClaudeJSON = '{"id":"msg_01","type":"message","role":"assistant",'
    . '"model":"claude-sonnet-4-5-20250929","content":[{"type":"text",'
    . '"text":"Hi"}],"stop_reason":"end_turn","stop_sequence":null,'
    . '"usage":{"input_tokens":472,"cache_creation_input_tokens":1000,'
    . '"cache_read_input_tokens":2000,"cache_creation":'
    . '{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":0},'
    . '"output_tokens":503,"service_tier":"standard"}}';

# Azure OpenAI: the deployment is in the URL, the body names no model; the
# answer names the dated model (Azure's shape, keys sorted, filters)
our $Azure = '/openai/deployments/gpt-4o/chat/completions'
    . '?api-version=2024-10-21';

sub azure_answer {
    my ($in, $out) = @_;
    return '{"choices":[{"content_filter_results":{},"finish_reason":"stop",'
         . '"index":0,"logprobs":null,"message":{"content":"ok",'
         . '"refusal":null,"role":"assistant"}}],"created":1,'
         . '"id":"chatcmpl-A","model":"gpt-4o-2024-08-06",'
         . '"object":"chat.completion","prompt_filter_results":'
         . '[{"prompt_index":0,"content_filter_results":{}}],'
         . '"system_fingerprint":"fp","usage":{"completion_tokens":' . $out
         . ',"prompt_tokens":' . $in . ',"total_tokens":' . ($in + $out)
         . ',"prompt_tokens_details":{"cached_tokens":0}}}';
}

sub json_answer {
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => $_[0] };
}

# the statuses of carol's POSTs of "body" to "uri", "n" times
sub statuses {
    my ($uri, $body, $n) = @_;
    return join ' ', map {
        my $r = http_request("POST $uri",
            more_headers => "$::Auth\r\nContent-Type: application/json",
            body => $body, timeout => 10);
        $r->{status};
    } 1 .. $n;
}

our $RP = $ENV{TEST_NGINX_REDIS_PORT};
our $P  = "t124-$$-" . time;           # this run's Redis keys

run_tests();

__DATA__

=== TEST 1: Claude on Vertex AI under a cost budget: the first call costs 0.013311 USD and spends the 0.010/m window, so the next ones get 429 quota_exceeded, as the same calls to /v1/messages with a "model" do (found: 200 200 200, every call charged 0.013311, 0.039933 spent of 0.010: the model is in the URL only, the reservation prices nothing, and a request that reserves no cost is admitted whatever the window holds)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { ::json_answer($::ClaudeJSON) }
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $vertex = ::statuses("/budget$::Vertex", ::vertex_body(100), 3);
    my @l = ::access_lines(4);
    return $vertex eq '200 429 429' ? 1
        : (0, "Vertex: $vertex\n" . join("\n", @l));
}



=== TEST 2: Claude on Vertex AI: a call whose reservation can never fit the budget (100,000 x 15 USD/M = 1.5 USD > 0.010) is refused up front, as at /v1/messages (found: 200 and charged; $llm_model of a failed call is empty: claude-sonnet-4-5@20250929 in the URL is not read as the request's model, while Gemini's URL model is)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { ::json_answer($::ClaudeJSON) }
--- request eval
::post("/budget$::Vertex", ::vertex_body(100000))
--- more_headers eval: "$::Auth\r\nContent-Type: application/json"
--- error_code: 429
--- response_body_like: "rate_limit_error".*less than this request needs \(1\.500030 USD\)



=== TEST 3: Azure OpenAI under a cost budget: an answer of 1,000 + 100 tokens of gpt-4o-2024-08-06 spends the 0.010/m window (at gpt-4*: 0.036; at gpt-4o: 0.0035, three of them 0.0105), so the window refuses before the budget is overrun many times over (found: 200 200 200 200 200: no "model" in the body, so nothing is reserved and nothing refused, while each answer is charged)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { ::json_answer(::azure_answer(1000, 100)) }
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $s = ::statuses("/budget$::Azure",
        '{"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}', 5);
    my @l = ::access_lines(6);
    return $s eq '200 200 200 429 429' ? 1
        : (0, "Azure: $s\n" . join("\n", @l));
}



=== TEST 4: Azure OpenAI, deployment gpt-4o: with README's own llm_price lines (gpt-4o exact, "gpt-4*" wildcard) the answer's gpt-4o-2024-08-06 is the dated version of the deployment's model and costs gpt-4o's price, 1000 x 2.50 + 100 x 10 = 0.003500, as the same answer to a body naming "gpt-4o" does (found: 0.036000, gpt-4*'s 30/60, ten times too much; without the wildcard it is unpriced and costs nothing)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { ::json_answer(::azure_answer(1000, 100)) }
--- request eval
::post($::Azure, '{"messages":[{"role":"user","content":"hi"}]}')
--- more_headers eval: "$::Auth\r\nContent-Type: application/json"
--- error_code: 200
--- access_log_like
^gpt-4o-2024-08-06\|1000\|100\|0\|0\.003500\|200$



=== TEST 5: (control for TESTs 1 and 3) the same Claude answers to /v1/messages with "model" in the body: the first spends the window and the next two get 429
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { ::json_answer($::ClaudeJSON) }
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $s = ::statuses('/budget/v1/messages', '{"model":"claude-sonnet-4-5",'
        . '"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}', 3);
    return $s eq '200 429 429' ? 1 : (0, "/v1/messages: $s");
}



=== TEST 6: the mechanism behind TESTs 1 and 3, without a cloud URL: a request naming a model alias that has no llm_price (an OpenRouter-style or proxy alias, "my-claude") answered by a priced model (claude-sonnet-4-5-20250929, 0.013311) is admitted again and again by a spent 0.010/m window (found: 200 200 200): once a cost window is spent, a request whose reservation prices to 0 should still be refused, since its answer is charged
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { ::json_answer($::ClaudeJSON) }
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $s = ::statuses('/budget/v1/messages', '{"model":"my-claude",'
        . '"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}', 3);
    my @l = ::access_lines(4);
    return $s eq '200 429 429' ? 1 : (0, "alias: $s\n" . join("\n", @l));
}



=== TEST 7: (guards TEST 6's fix) a token count is no call and costs nothing: a spent cost window still lets Gemini's countTokens and Anthropic's count_tokens through, and refuses an unpriced Gemini generateContent
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    my ($req) = @_;
    return ::json_answer('{"totalTokens":5}') if $req->{path} =~ /countTokens/;
    return ::json_answer('{"input_tokens":5}') if $req->{path} =~ /count_tokens/;
    return ::json_answer($::ClaudeJSON);
}
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $gemini = '{"contents":[{"parts":[{"text":"hi"}]}]}';
    my $s = join ' ',
        ::statuses('/budget/v1/messages', '{"model":"claude-sonnet-4-5",'
            . '"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}',
            1),
        ::statuses('/budget/v1beta/models/gemma-local:countTokens', $gemini, 1),
        ::statuses('/budget/v1/messages/count_tokens', '{"model":"claude-x",'
            . '"messages":[{"role":"user","content":"hi"}]}', 1),
        ::statuses('/budget/v1beta/models/gemma-local:generateContent',
            $gemini, 1);
    return $s eq '200 200 200 429' ? 1 : (0, "got $s, want 200 200 200 429");
}



=== TEST 8: a Gemini path whose model's name has colons of its own (an OpenAI fine-tune behind a Gemini-shaped proxy, Ollama's "llama3:8b"): the model is what comes before the method, after the last segment's last colon, as the API is told from the path; it prices the call (1000 x 0.30 + 100 x 1.20 = 0.000420) and names it in $llm_model (found: "ft", unpriced, 1 micro-dollar reserved and nothing charged)
--- http_config eval
$::Http . 'llm_price "ft:gpt-4o-mini*" input=0.30 output=1.20;'
--- config eval: $::Gateway
--- mock eval
sub {
    return ::json_answer('{"candidates":[{"content":{"parts":[{"text":"ok"}]}}],'
        . '"usageMetadata":{"promptTokenCount":1000,'
        . '"candidatesTokenCount":100}}');
}
--- request eval
::post('/budget/v1beta/models/ft:gpt-4o-mini:org::abc:generateContent',
       '{"contents":[{"parts":[{"text":"hi"}]}]}')
--- more_headers eval: "$::Auth\r\nContent-Type: application/json"
--- error_code: 200
--- access_log_like
^ft:gpt-4o-mini:org::abc\|1000\|100\|0\|0\.000420\|200$



=== TEST 9: TEST 6 with the windows in Redis: the micro-dollar an unpriced alias reserves is asked of Redis's cost window too, and given back when the answer is settled (the first answer spends the window, the next two are refused)
--- http_config eval: $::Http . "llm_redis 127.0.0.1:$::RP prefix=$::P-9:;\n"
--- config eval: $::Gateway
--- mock eval
sub { ::json_answer($::ClaudeJSON) }
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $s = ::statuses('/budget/v1/messages', '{"model":"my-claude",'
        . '"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}', 3);
    my $keys = ::redis_cli($::RP, 'KEYS', "$::P-9:*") // '';
    return (0, "no window in Redis under $::P-9:") unless $keys =~ /\S/;
    return $s eq '200 429 429' ? 1 : (0, "alias in Redis: $s");
}



=== TEST 10: Claude on Vertex AI counts tokens at .../models/count-tokens:rawPredict (its body has "model" and no "max_tokens"): a token count, reserving nothing, that passes a spent cost window as Anthropic's count_tokens does, while the next rawPredict call is refused (found: 400 "max_tokens: Field required", the gateway took it for a call to generate)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    my ($req) = @_;
    return ::json_answer('{"input_tokens":5}')
        if $req->{path} =~ /count-tokens/;
    return ::json_answer($::ClaudeJSON);
}
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $count = '/budget/v1/projects/p/locations/us-east5/publishers/'
        . 'anthropic/models/count-tokens:rawPredict';
    my $s = join ' ',
        ::statuses("/budget$::Vertex", ::vertex_body(100), 1),
        ::statuses($count, '{"anthropic_version":"vertex-2023-10-16",'
            . '"model":"claude-sonnet-4-5@20250929",'
            . '"messages":[{"role":"user","content":"hi"}]}', 1),
        ::statuses("/budget$::Vertex", ::vertex_body(100), 1);
    return $s eq '200 200 429' ? 1 : (0, "got $s, want 200 200 429");
}



=== TEST 11: an exact llm_price for Claude's model (claude-sonnet-4-5 at 1/5 USD, besides "claude-*" at 3/15) prices Claude on Vertex AI's claude-sonnet-4-5@20250929 as it does a body naming claude-sonnet-4-5, answered claude-sonnet-4-5-20250929 both times: 3,472 x 1 + 503 x 5 = 0.005987 (found: 0.013311 on Vertex, the wildcard's: "@20250929" kept the exact name from matching; without the wildcard, unpriced and charged nothing)
--- http_config eval
$::Http . 'llm_price claude-sonnet-4-5 input=1 output=5;'
--- config eval: $::Gateway
--- mock eval
sub { ::json_answer($::ClaudeJSON) }
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    ::statuses($::Vertex, ::vertex_body(100), 1);
    ::statuses('/v1/messages', '{"model":"claude-sonnet-4-5",'
        . '"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}', 1);
    my @l = (::access_lines(3))[1, 2];
    my @cost = map { (split /\|/)[4] } @l;
    return "@cost" eq '0.005987 0.005987' ? 1
        : (0, "Vertex: $l[0]\n/v1/messages: $l[1]");
}
