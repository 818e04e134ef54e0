# Concurrency slots: the limit holds across workers, and every way a request
# can end gives its slot back.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;

our $Tiers = $Test::LLM::Keys::TIERS
    . "llm_tier duo requests=100000/m concurrency=2;\n"
    . "llm_tier solo requests=100000/m concurrency=1;\n";
our $CAROL = $Test::LLM::Keys::CAROL;

run_tests();

__DATA__

=== TEST 1: concurrency=2 admits two of six simultaneous requests
--- workers: 2
--- http_config eval: $::Tiers
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier duo;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub { return { delay => 1.5, status => 200, body => "{}" } }
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- concurrency: 6
--- repeat: 6
--- status_counts: 200=2 429=4
--- timeout: 10



=== TEST 2: slots come back when requests finish: ten in a row under concurrency=1
--- http_config eval: $::Tiers
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier solo;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
[("GET /v1/models") x 10]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[(200) x 10]



=== TEST 3: a slot comes back when the upstream cannot be reached
--- http_config eval: $::Tiers
--- config
location /down/ {
    llm_gateway on;
    llm_default_tier solo;
    proxy_pass http://127.0.0.1:1;
}
location /v1/ {
    llm_gateway on;
    llm_default_tier solo;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["GET /down/x", "GET /down/x", "GET /v1/models"]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[502, 502, 200]



=== TEST 4: a slot comes back when the upstream times out
--- http_config eval: $::Tiers
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier solo;
    proxy_read_timeout 300ms;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub { my $r = shift; return $r->{n} == 1 ? { delay => 3, body => "{}" } : { body => "{}" } }
--- request eval
["GET /v1/slow", "GET /v1/models"]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[504, 200]



=== TEST 5: a slot comes back when the backend drops the connection mid-answer
--- http_config eval: $::Tiers
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier solo;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub { my $r = shift; return $r->{n} == 1 ? { close => 1 } : { body => "{}" } }
--- request eval
["GET /v1/drop", "GET /v1/models"]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[502, 200]



=== TEST 6: a refused request holds no slot
--- http_config eval: $::Tiers . "llm_tier one requests=1/m concurrency=1;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier one;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models"]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[200, 429, 429]
--- response_body_like eval
["", "Rate limit reached for requests", "Rate limit reached for requests"]
