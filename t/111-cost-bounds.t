# $llm_cost and the cost windows at the ends of what llm_price takes:
# 10,000 USD per million tokens, and a backend that reports 10^9 tokens
# each way (the most a request is priced for).

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;

our $Http = $Test::LLM::Keys::TIERS . <<'_EOC_';
    llm_tier tok requests=10/m;
    llm_price big input=10000 output=10000;
    log_format cost '$llm_account|$llm_prompt_tokens|'
                    '$llm_completion_tokens|$llm_cost';
_EOC_

our $Gateway = <<'_EOC_';
access_log logs/access.log cost;
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
_EOC_

run_tests();

__DATA__

=== TEST 1: 10^9 input and 10^9 output tokens at 10,000 USD per million each cost 20,000,000 USD (each product fits 64 bits, their sum did not: the cost wrapped to 1,553,255.926291)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub {
    return { headers => { 'Content-Type' => 'application/json' },
             body => '{"id":"c","object":"chat.completion","model":"big",'
                 . '"choices":[],"usage":{"prompt_tokens":1000000000,'
                 . '"completion_tokens":1000000000,'
                 . '"total_tokens":2000000000}}' };
}
--- request
POST /v1/chat/completions
{"model":"big","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}
--- more_headers eval: "Authorization: Bearer $Test::LLM::Keys::CAROL"
--- error_code: 200
--- access_log_like
^carol\|1000000000\|1000000000\|20000000\.000000$
