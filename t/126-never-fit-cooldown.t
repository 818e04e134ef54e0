# A request too large for a window (its max_tokens, or its cost, over the
# window's whole limit) is refused up front with x-should-retry: false.
# It is no sign of a client going too fast, so it must not start the
# tier's cooldown: before, one such request blocked the whole account
# (403 account_suspended for every key of it) for the cooldown.  The
# zone (TESTs 1-3) and Redis (TESTs 4-6) alike: all six failed before.
# TESTs 3 and 6 also show that a window really spent still starts it.
# TESTs 7 and 8: a request refused both by a window it can never fit
# and by a spent window that frees later (requests=1/h) is told the
# one that no wait helps: before, it was told to come back in an hour.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat qw(chat post carol_chat);

our $Auth = "Authorization: Bearer $Test::LLM::Keys::CAROL";

our $Http = $Test::LLM::Keys::TIERS . <<'_EOC_';
    llm_tier cool requests=3/m tokens=1000/m cooldown=30s;
    llm_tier budget cost=0.010/m cooldown=30s;
    llm_tier hourly requests=1/h tokens=1000/m;
    llm_price gpt-4o input=2.50 output=10.00;
_EOC_

our $Gateway = <<'_EOC_';
llm_default_tier cool;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location /hourly/ {
    llm_gateway on;
    llm_default_tier hourly;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT/;
}
location /budget/ {
    llm_gateway on;
    llm_default_tier budget;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT/;
}
_EOC_

our $RP = $ENV{TEST_NGINX_REDIS_PORT};
our $P  = "t126-$$-" . time;           # this run's Redis keys

sub redis { "llm_redis 127.0.0.1:$::RP prefix=$::P-$_[0]:;\n" }

# carol's statuses for POSTs of these bodies to "uri", one after another
sub in_turn {
    my ($uri, @bodies) = @_;
    return join ' ', map {
        http_request("POST $uri",
            more_headers => "$::Auth\r\nContent-Type: application/json",
            body => $_, timeout => 10)->{status};
    } @bodies;
}

our $Big = chat(max => 5000);          # 5,000 > tokens=1000/m
our $Small = chat(max => 50);

run_tests();

__DATA__

=== TEST 1: zone: a request whose max_tokens can never fit tokens=1000/m is refused (429, x-should-retry: false) and the account's next requests are served (found: 403 account_suspended for the next 30 s)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval: ::post("/v1/chat/completions", $::Big)
--- more_headers eval: $::Auth
--- error_code: 429
--- response_headers
x-should-retry: false
--- response_body_like: is less than this request needs \(50\d\d\)
--- check eval
sub {
    my $s = ::in_turn('/v1/chat/completions', $::Small, $::Small);
    return $s eq '200 200' ? 1 : (0, "after the refusal: $s");
}
--- mock_count: 2



=== TEST 2: zone: a request whose cost can never fit cost=0.010/m (5,000 output tokens at 10 USD/M = 0.05 USD) starts no cooldown either; four such at once are all 429, none 403, and the account is then served
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval: ::post("/budget/v1/chat/completions", $::Big)
--- more_headers eval: $::Auth
--- concurrency: 4
--- repeat: 4
--- status_counts: 429=4
--- check eval
sub {
    my $s = ::in_turn('/budget/v1/chat/completions', $::Small);
    return $s eq '200' ? 1 : (0, "after the refusals: $s");
}



=== TEST 3: zone, the control: a window really spent (the 4th request of requests=3/m) still starts the cooldown: the 5th gets 403 account_suspended
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval: ::post("/v1/chat/completions", $::Big)
--- more_headers eval: $::Auth
--- error_code: 429
--- check eval
sub {
    my $s = ::in_turn('/v1/chat/completions', ($::Small) x 5);
    return $s eq '200 200 200 429 403' ? 1 : (0, "statuses: $s");
}



=== TEST 4: Redis: TEST 1 with the windows in Redis (the admission script)
--- http_config eval: $::Http . ::redis(4)
--- config eval: $::Gateway
--- request eval: ::post("/v1/chat/completions", $::Big)
--- more_headers eval: $::Auth
--- error_code: 429
--- response_headers
x-should-retry: false
--- check eval
sub {
    my $s = ::in_turn('/v1/chat/completions', $::Small, $::Small);
    my $cool = ::redis_cli($::RP, 'EXISTS', "$::P-4:{acct:carol}:cool");
    return (0, "after the refusal: $s") unless $s eq '200 200';
    return ($cool // '') =~ /^0/ ? 1 : (0, "cool key: $cool");
}
--- mock_count: 2



=== TEST 5: Redis: TEST 2 with the windows in Redis (four at once: the batch script when they queue together) — all 429, none 403, then served
--- http_config eval: $::Http . ::redis(5)
--- config eval: $::Gateway
--- request eval: ::post("/budget/v1/chat/completions", $::Big)
--- more_headers eval: $::Auth
--- concurrency: 4
--- repeat: 4
--- status_counts: 429=4
--- check eval
sub {
    my $s = ::in_turn('/budget/v1/chat/completions', $::Small);
    return $s eq '200' ? 1 : (0, "after the refusals: $s");
}



=== TEST 6: Redis, the control: TEST 3 with the windows in Redis
--- http_config eval: $::Http . ::redis(6)
--- config eval: $::Gateway
--- request eval: ::post("/v1/chat/completions", $::Big)
--- more_headers eval: $::Auth
--- error_code: 429
--- check eval
sub {
    my $s = ::in_turn('/v1/chat/completions', ($::Small) x 5);
    return $s eq '200 200 200 429 403' ? 1 : (0, "statuses: $s");
}



=== TEST 7: zone: requests=1/h spent, and a request whose max_tokens can never fit tokens=1000/m: the refusal names the tokens window with x-should-retry: false (SPEC 4), not the requests window that frees in an hour (found: "Rate limit reached for requests per hour", no x-should-retry: the client retries in an hour, and is refused again)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval
[::post("/hourly/v1/chat/completions", $::Small),
 ::post("/hourly/v1/chat/completions", $::Big)]
--- more_headers eval: $::Auth
--- error_code eval: [200, 429]
--- response_body_like eval
['', 'less than this request needs \\(5\\d\\d\\d\\)']
--- response_headers eval
['', 'x-should-retry: false']
--- mock_count: 1



=== TEST 8: Redis: TEST 7 with the windows in Redis
--- http_config eval: $::Http . ::redis(8)
--- config eval: $::Gateway
--- request eval
[::post("/hourly/v1/chat/completions", $::Small),
 ::post("/hourly/v1/chat/completions", $::Big)]
--- more_headers eval: $::Auth
--- error_code eval: [200, 429]
--- response_body_like eval
['', 'less than this request needs \\(5\\d\\d\\d\\)']
--- response_headers eval
['', 'x-should-retry: false']
--- mock_count: 1
