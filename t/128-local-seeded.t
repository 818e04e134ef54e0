# llm_redis with on_error=local: while Redis answers, the zone's windows
# of an account follow what Redis's hold, so that when Redis fails the
# node goes on from the fleet's counts and not from nothing.  Before, the
# zone's windows started empty at the outage: an account that had spent
# its window in Redis got a whole window more from every node (found by
# the load test of session 13; SPEC 9: token windows never over-admit by
# more than the reservations in flight).  TESTs 1-3 failed before (3
# also shows that a window with room still admits); 4 is the control:
# on_error=deny is untouched.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat qw(chat carol_chat);
use Test::LLM::Redis qw(:DEFAULT gw statuses);    # carol's GET /v1/models
use Time::HiRes ();

our $P  = "t128-$$-" . time;
our $CAROL = $Test::LLM::Keys::CAROL;

# a Redis of this file's own, stopped and started by its blocks
our $RP = free_port();
redis_start($RP);

our $Tiers = $Test::LLM::Keys::TIERS . <<'_EOC_';
    llm_tier five requests=5/m;
    llm_tier tok tokens=1000/m;
_EOC_

sub conf {
    my ($block, $more) = @_;
    return $Tiers . "llm_redis 127.0.0.1:$::RP prefix=$::P-$block: "
         . "timeout=300ms" . ($more // '') . ";\n";
}

our $Gateway = <<'_EOC_';
location /v1/ {
    llm_gateway on;
    llm_default_tier five;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location /tok/ {
    llm_gateway on;
    llm_default_tier tok;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT/;
}
_EOC_

# an answer that used what was reserved, near enough: 10 in, 390 out
our $Used400 = '{"id":"c","object":"chat.completion","model":"gpt-4o",'
    . '"choices":[{"index":0,"message":{"role":"assistant","content":"x"},'
    . '"finish_reason":"stop"}],"usage":{"prompt_tokens":10,'
    . '"completion_tokens":390,"total_tokens":400}}';

# carol's POST of a 400-token chat to /tok/: its status
sub tok {
    return http_request("POST /tok/v1/chat/completions",
        more_headers => "Authorization: Bearer $Test::LLM::Keys::CAROL\r\n"
                        . "Content-Type: application/json",
        body => chat(max => 390), timeout => 10)->{status};
}

# Redis stopped, and the workers told (the next command finds it gone)
sub outage {
    redis_stop($::RP);
    Time::HiRes::sleep(0.3);
}

sub back {
    redis_start($::RP);
    ::redis_cli($::RP, 'FLUSHALL');
}

run_tests();

__DATA__

=== TEST 1: requests=5/m: three admitted by Redis, then Redis stops: the zone admits the two that are left and refuses the rest (found: four of four admitted, the zone's window empty)
--- workers: 1
--- http_config eval: ::conf(1)
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code: 200
--- check eval
sub {
    my $in = ::statuses(2);                         # 3 in Redis
    ::outage();
    my $out = ::statuses(4);
    ::back();
    my $got = "redis 200 $in | outage $out";
    my $want = 'redis 200 200 200 | outage 200 200 429 429';
    return $got eq $want ? 1 : (0, "got  $got\nwant $want");
}
--- error_log
requests follow on_error=local



=== TEST 2: tokens=1000/m: two 400-token calls counted in Redis (800 held), then Redis stops: the next 400-token call does not fit what the zone holds and is refused (found: 200 200: the zone started from 0)
--- workers: 1
--- http_config eval: ::conf(2)
--- config eval: $::Gateway
--- mock eval
sub { return { status => 200,
               headers => { 'Content-Type' => 'application/json' },
               body => $::Used400 } }
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- check eval
sub {
    my $in = join ' ', map { ::tok() } 1 .. 2;
    ::outage();
    my $out = join ' ', map { ::tok() } 1 .. 2;
    ::back();
    my $got = "redis $in | outage $out";
    my $want = 'redis 200 200 | outage 429 429';
    return $got eq $want ? 1 : (0, "got  $got\nwant $want");
}



=== TEST 3: a window with room still admits in an outage: one 400-token call in Redis, then Redis stops: one more fits (800 of 1000), the third does not (found: 200 200)
--- workers: 1
--- http_config eval: ::conf(3)
--- config eval: $::Gateway
--- mock eval
sub { return { status => 200,
               headers => { 'Content-Type' => 'application/json' },
               body => $::Used400 } }
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- check eval
sub {
    my $in = ::tok();
    ::outage();
    my $out = join ' ', map { ::tok() } 1 .. 2;
    ::back();
    my $got = "redis $in | outage $out";
    my $want = 'redis 200 | outage 200 429';
    return $got eq $want ? 1 : (0, "got  $got\nwant $want");
}



=== TEST 4: on_error=deny: the outage's requests get 503 store_unavailable, as before
--- workers: 1
--- http_config eval: ::conf(4, ' on_error=deny')
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- check eval
sub {
    ::outage();
    my $out = ::statuses(2);
    ::back();
    return $out eq '503 503' ? 1 : (0, "outage: $out");
}
