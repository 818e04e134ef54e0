# llm_price's cache_read= and cache_write=: the prompt's tokens that a
# provider's prompt cache read (OpenAI cached_tokens, the Responses API's
# input_tokens_details, Anthropic cache_read_input_tokens, Gemini
# cachedContentTokenCount) or wrote (Anthropic
# cache_creation_input_tokens) are priced apart, in $llm_cost and in the
# cost windows; without them they cost "input", as before.

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
    llm_tier tiny cost=0.000001/m;
    llm_price gpt-4o input=2.50 output=10.00 cache_read=1.25;
    llm_price gpt-4o-plain input=2.50 output=10.00;
    llm_price "gpt-4.1*" input=2 output=8 cache_read=0.50;
    llm_price "claude-*" input=3 output=15 cache_read=0.30 cache_write=3.75;
    llm_price "gemini-2.5*" input=1.25 output=10 cache_read=0.31;
    llm_price "claude-opus*" input=15 output=75 cache_read=1.50
              cache_write=18.75 cache_write_1h=30;
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
location /budget/ {
    llm_gateway on;
    llm_default_tier budget;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT/v1/;
}
location /tiny/ {
    llm_gateway on;
    llm_default_tier tiny;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT/v1/;
}
_EOC_

# an OpenAI chat answer by "model": 2,000 prompt tokens of which 1,600
# came from the cache, 100 out
sub openai {
    my ($model) = @_;
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => "{\"id\":\"c\",\"object\":\"chat.completion\","
                   . "\"model\":\"$model\",\"choices\":[{\"index\":0,"
                   . '"message":{"role":"assistant","content":"ok"},'
                   . '"finish_reason":"stop"}],"usage":{"prompt_tokens":2000,'
                   . '"completion_tokens":100,"total_tokens":2100,'
                   . '"prompt_tokens_details":{"cached_tokens":1600}}}' };
}

sub chat_body {
    my ($model) = @_;
    return "{\"model\":\"$model\",\"max_tokens\":10,"
         . '"messages":[{"role":"user","content":"hi"}]}';
}

# the statuses of "n" POSTs of "model" to "uri", by carol
sub statuses {
    my ($uri, $model, $n) = @_;
    return join ' ', map {
        my $r = http_request("POST $uri",
            more_headers => "$::Auth\r\nContent-Type: application/json",
            body => chat_body($model), timeout => 10);
        $r->{status};
    } 1 .. $n;
}

our $RP = $ENV{TEST_NGINX_REDIS_PORT};
our $P  = "t123-$$-" . time;           # this run's Redis keys

run_tests();

__DATA__

=== TEST 1: OpenAI's prompt_tokens_details.cached_tokens are priced at cache_read: 400 x 2.50 + 1,600 x 1.25 + 100 x 10 = 0.004000 USD (at input's price: 0.006000)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { ::openai('gpt-4o') }
--- request eval
::post("/v1/chat/completions", ::chat_body('gpt-4o'))
--- more_headers eval: "$::Auth\r\nContent-Type: application/json"
--- error_code: 200
--- access_log_like
^gpt-4o\|2000\|100\|0\|0\.004000\|200$



=== TEST 2: a model whose llm_price has no cache_read= prices its cached tokens as input: 2,000 x 2.50 + 100 x 10 = 0.006000
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { ::openai('gpt-4o-plain') }
--- request eval
::post("/v1/chat/completions", ::chat_body('gpt-4o-plain'))
--- more_headers eval: "$::Auth\r\nContent-Type: application/json"
--- error_code: 200
--- access_log_like
^gpt-4o-plain\|2000\|100\|0\|0\.006000\|200$



=== TEST 3: an Anthropic stream: 25 x 3 + 100 written x 3.75 + 50 read x 0.30 + 15 x 15 = 0.000690
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    my $ev = sub { "event: $_[1]\ndata: $_[0]\n\n" };
    return { status => 200,
             headers => { 'Content-Type' => 'text/event-stream' },
             chunks => [
        $ev->('{"type":"message_start","message":{"id":"m","type":"message",'
              . '"role":"assistant","model":"claude-3-haiku","content":[],'
              . '"usage":{"input_tokens":25,'
              . '"cache_creation_input_tokens":100,'
              . '"cache_read_input_tokens":50,"output_tokens":1}}}',
              'message_start'),
        $ev->('{"type":"content_block_delta","index":0,"delta":'
              . '{"type":"text_delta","text":"Hello."}}',
              'content_block_delta'),
        $ev->('{"type":"message_delta","delta":{"stop_reason":"end_turn"},'
              . '"usage":{"output_tokens":15}}', 'message_delta'),
        $ev->('{"type":"message_stop"}', 'message_stop') ] };
}
--- request eval
::post("/v1/messages", '{"model":"claude-3-haiku","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}]}')
--- more_headers eval: "$::Auth\r\nContent-Type: application/json"
--- error_code: 200
--- access_log_like
^claude-3-haiku\|175\|15\|0\|0\.000690\|200$



=== TEST 4: Gemini's cachedContentTokenCount: 200 x 1.25 + 800 x 0.31 + 100 x 10 = 0.001498
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => '{"candidates":[{"content":{"parts":[{"text":"ok"}],'
                   . '"role":"model"}}],"usageMetadata":{'
                   . '"promptTokenCount":1000,"cachedContentTokenCount":800,'
                   . '"candidatesTokenCount":100,"totalTokenCount":1100},'
                   . '"modelVersion":"gemini-2.5-pro"}' };
}
--- request eval
::post("/v1beta/models/gemini-2.5-pro:generateContent", '{"contents":[{"parts":[{"text":"hi"}]}]}')
--- more_headers eval: "$::Auth\r\nContent-Type: application/json"
--- error_code: 200
--- access_log_like
^gemini-2\.5-pro\|1000\|100\|0\|0\.001498\|200$



=== TEST 5: the Responses API's input_tokens_details.cached_tokens: 100 x 2 + 800 x 0.50 + 5 x 8 = 0.000640
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => '{"id":"resp_1","object":"response",'
                   . '"model":"gpt-4.1-2025-04-14","output":[],'
                   . '"usage":{"input_tokens":900,"input_tokens_details":'
                   . '{"cached_tokens":800},"output_tokens":5,'
                   . '"output_tokens_details":{"reasoning_tokens":0},'
                   . '"total_tokens":905}}' };
}
--- request eval
::post("/v1/responses", '{"model":"gpt-4.1","input":"hi","max_output_tokens":10}')
--- more_headers eval: "$::Auth\r\nContent-Type: application/json"
--- error_code: 200
--- access_log_like
^gpt-4\.1-2025-04-14\|900\|5\|0\|0\.000640\|200$



=== TEST 6: a cost window counts the cached price: with cost=0.010/m, two answers at 0.004 leave room for a third; two at input's price (0.006) spend it, and the third gets 429
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { my ($req) = @_; ::openai($req->{json}{model} // "none") }
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $cached = ::statuses('/budget/chat/completions', 'gpt-4o', 3);
    return $cached eq '200 200 200' ? 1 : (0, "gpt-4o: $cached");
}



=== TEST 7: (the other half of TEST 6) without cache_read=, the same answers spend the window after two
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { my ($req) = @_; ::openai($req->{json}{model} // "none") }
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $plain = ::statuses('/budget/chat/completions', 'gpt-4o-plain', 3);
    return $plain eq '200 200 429' ? 1 : (0, "gpt-4o-plain: $plain");
}



=== TEST 8: cache_read= takes the same USD as input=
--- http_config
llm_zone llm:1m;
llm_price gpt-4o input=2.50 output=10 cache_read=1,25;
--- config
--- must_die
--- error_log eval
qr/invalid price "cache_read=1,25", expected USD per million tokens/



=== TEST 9: a price named twice is refused
--- http_config
llm_zone llm:1m;
llm_price "claude-*" input=3 output=15 cache_write=3.75 cache_write=6;
--- config
--- must_die
--- error_log
llm_price "claude-*" names a price twice



=== TEST 10: TEST 6 and 7 with the windows in Redis: the cost settled there is the cached price too (one worker: from two, a settle and the next admission go on two connections, which Redis may serve in either order)
--- workers: 1
--- http_config eval: $::Http . "llm_redis 127.0.0.1:$::RP prefix=$::P-10:;\n"
--- config eval: $::Gateway
--- mock eval
sub { my ($req) = @_; ::openai($req->{json}{model} // "none") }
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $cached = ::statuses('/budget/chat/completions', 'gpt-4o', 3);
    return (0, "gpt-4o: $cached") unless $cached eq '200 200 200';
    ::redis_cli($::RP, 'EVAL', "for _, k in ipairs(redis.call('KEYS', "
                . "ARGV[1])) do redis.call('DEL', k) end", 0, "$::P-10:*");
    my $plain = ::statuses('/budget/chat/completions', 'gpt-4o-plain', 3);
    return $plain eq '200 200 429' ? 1 : (0, "gpt-4o-plain: $plain");
}



=== TEST 11: the reservation prices the prompt at cache_write= when it is dearer than input= (the cache may write all of it): "claude-*" reserves 8 x 3.75 + 1 x 15, gpt-4o (cache_read= only) 8 x 2.50 + 1 x 10
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { ::openai('none') }
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my @got;
    for my $model ('claude-3-haiku', 'gpt-4o') {
        my $r = http_request("POST /tiny/messages",
            more_headers => "$::Auth\r\nContent-Type: application/json",
            body => "{\"model\":\"$model\",\"max_tokens\":1,"
                  . '"messages":[{"role":"user","content":"hi"}]}',
            timeout => 10);
        push @got, $r->{body} =~ /needs \(([0-9.]+) USD\)/ ? $1 : $r->{body};
    }
    my $got = join ' ', @got;
    return $got eq '0.000045 0.000030' ? 1 : (0, "got $got");
}



=== TEST 12: Anthropic's writes the cache keeps for an hour (cache_creation.ephemeral_1h_input_tokens) are priced at cache_write_1h=, the rest of the writes at cache_write=: 25 x 15 + 50 x 1.50 + 60 x 18.75 + 40 x 30 + 15 x 75 = 0.003900
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => '{"id":"m","type":"message","role":"assistant",'
                   . '"model":"claude-opus-4-1-20250805","content":[{"type":'
                   . '"text","text":"ok"}],"stop_reason":"end_turn",'
                   . '"usage":{"input_tokens":25,'
                   . '"cache_creation_input_tokens":100,'
                   . '"cache_read_input_tokens":50,"cache_creation":'
                   . '{"ephemeral_5m_input_tokens":60,'
                   . '"ephemeral_1h_input_tokens":40},"output_tokens":15}}' };
}
--- request eval
::post("/v1/messages", '{"model":"claude-opus-4-1","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}')
--- more_headers eval: "$::Auth\r\nContent-Type: application/json"
--- error_code: 200
--- access_log_like
^claude-opus-4-1-20250805\|175\|15\|0\|0\.003900\|200$



=== TEST 13: the reservation prices the prompt at cache_write_1h= when it is the dearest: 8 x 30 + 1 x 75 = 0.000315
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval
::post("/tiny/messages", '{"model":"claude-opus-4-1","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}')
--- more_headers eval: "$::Auth\r\nContent-Type: application/json"
--- error_code: 429
--- response_body_like: needs \(0\.000315 USD\)



=== TEST 14: cache_write_1h= named twice is refused
--- http_config
llm_zone llm:1m;
llm_price "claude-*" input=3 output=15 cache_write_1h=6 cache_write_1h=6;
--- config
--- must_die
--- error_log
llm_price "claude-*" names a price twice



=== TEST 15: cached_tokens above prompt_tokens are taken as the whole prompt, read from the cache: 2,000 x 1.25 + 100 x 10 = 0.003500 (the uncached part must not wrap below 0)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    my $r = ::openai('gpt-4o');
    $r->{body} =~ s/"cached_tokens":1600/"cached_tokens":3000/ or die;
    return $r;
}
--- request eval
::post("/v1/chat/completions", ::chat_body('gpt-4o'))
--- more_headers eval: "$::Auth\r\nContent-Type: application/json"
--- error_code: 200
--- access_log_like
^gpt-4o\|2000\|100\|0\|0\.003500\|200$



=== TEST 16: an empty cache_read= is refused
--- http_config
llm_zone llm:1m;
llm_price gpt-4o input=2.50 output=10 cache_read=;
--- config
--- must_die
--- error_log eval
qr/invalid price "cache_read=", expected USD per million tokens/



=== TEST 17: cache_read= and cache_write= without input= are refused, in any order
--- http_config
llm_zone llm:1m;
llm_price gpt-4o cache_write=1 output=10 cache_read=1;
--- config
--- must_die
--- error_log
llm_price "gpt-4o" needs input= and output=



=== TEST 18: a proxy that tells Anthropic's usage in OpenAI's shape (LiteLLM: prompt_tokens counts every prompt token, prompt_tokens_details.cached_tokens the reads, cache_creation_input_tokens the writes) is priced by parts: 100 x 3 + 1,000 x 0.30 + 900 x 3.75 + 100 x 15 = 0.005475 (before: the writes at input=, 0.004800)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    return { status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => '{"id":"chatcmpl-1","object":"chat.completion",'
                   . '"model":"claude-3-haiku","choices":[{"index":0,'
                   . '"message":{"role":"assistant","content":"ok"},'
                   . '"finish_reason":"stop"}],"usage":{"prompt_tokens":2000,'
                   . '"completion_tokens":100,"total_tokens":2100,'
                   . '"prompt_tokens_details":{"cached_tokens":1000},'
                   . '"cache_creation_input_tokens":900}}' };
}
--- request eval
::post("/v1/chat/completions", ::chat_body('claude-3-haiku'))
--- more_headers eval: "$::Auth\r\nContent-Type: application/json"
--- error_code: 200
--- access_log_like
^claude-3-haiku\|2000\|100\|0\|0\.005475\|200$
