# The three APIs' token counts (Anthropic /v1/messages/count_tokens,
# Gemini :countTokens, OpenAI /v1/responses/input_tokens) are free: the
# log line says which model was counted, that nothing was charged, and
# that nothing was estimated.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat qw(post);

our $CAROL = $Test::LLM::Keys::CAROL;

our $Http = $Test::LLM::Keys::TIERS . "    llm_tier tok tokens=100000/m;\n" . <<"_EOC_";
    llm_price claude-x input=3 output=15;
    llm_price gemini-2.0-flash input=0.10 output=0.40;
    llm_price gpt-4o input=2.50 output=10.00;
    log_format llm '\$llm_model|\$llm_prompt_tokens|\$llm_completion_tokens|'
                   '\$llm_total_tokens|\$llm_tokens_estimated|\$llm_cost|'
                   '\$status';
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

our $Mock = <<'_EOC_';
sub {
    my ($req) = @_;
    my $body = $req->{path} =~ /count_tokens/ ? '{"input_tokens":12}'
        : $req->{path} =~ /countTokens/ ? '{"totalTokens":12}'
        : '{"object":"response.input_tokens","input_tokens":12}';
    return { headers => { 'Content-Type' => 'application/json' },
             body => $body };
}
_EOC_

run_tests();

__DATA__

=== TEST 1: the three token counts log their model and charge nothing, estimated nothing ($llm_tokens_estimated 0: SPEC 4 says 1 when no usage came back, and a count has no usage to come back).  Before 7 Dec 2026 each logged 1, and Anthropic's logged the model "-": its body, without max_tokens, was read as a call refused for want of one
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval: $::Mock
--- request eval
[::post("/v1/messages/count_tokens", '{"model":"claude-x","messages":[{"role":"user","content":"Hi there"}]}'),
 ::post("/v1beta/models/gemini-2.0-flash:countTokens", '{"contents":[{"role":"user","parts":[{"text":"Hi there"}]}]}'),
 ::post("/v1/responses/input_tokens", '{"model":"gpt-4o","input":"Hi there"}')]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval: [200, 200, 200]
--- check eval
sub {
    my @l = access_lines(3);
    my $want = "claude-x|0|0|0|0|0.000000|200\n"
             . "gemini-2.0-flash|0|0|0|0|0.000000|200\n"
             . "gpt-4o|0|0|0|0|0.000000|200\n";
    my $got = join('', map { "$_\n" } @l);
    return $got eq $want ? 1 : (0, "log lines:\n$got");
}
