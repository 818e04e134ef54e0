# Regressions found in reviews of the Redis code: llm_usage reached by an
# internal redirect after a Redis admission (it read the admission's state,
# which has no usage array: a worker crashed).

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;

our $CAROL = $Test::LLM::Keys::CAROL;
our $P     = "t094-$$-" . time;

# a Redis of this file's own
our $RP = free_port();
redis_start($RP);

sub conf {
    my ($block, $extra) = @_;
    return $Test::LLM::Keys::TIERS
        . "llm_tier roomy requests=1000/m;\n"
        . "llm_tier tok tokens=100000/m;\n"
        . "llm_tier many requests=1000/m;\n"
        . "llm_redis 127.0.0.1:$RP prefix=$P-$block: " . ($extra // '')
        . ";\n";
}

run_tests();

__DATA__

=== TEST 1: llm_usage after an internal redirect from a request admitted by Redis: no crash (a Redis read of its own)
--- http_config eval: ::conf(1)
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier roomy;
    proxy_pass http://127.0.0.1:$TEST_NGINX_DEAD_PORT;
    error_page 502 = /usage;
}
location = /usage {
    llm_usage;
}
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code: 200
--- response_body_like: "account":"carol"
--- no_error_log
signal 11
[alert]
