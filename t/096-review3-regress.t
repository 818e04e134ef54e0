# Review 3 (outage replay rewrite, commits 8432b74..9b65b31): reproducers
# of what it found (each failed before its fix); SPEC 9: "nothing it
# accounts is lost", and nothing is counted twice.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat qw(carol_chat);
use Test::LLM::Redis;
use Time::HiRes ();
use POSIX ();

our $CAROL = $Test::LLM::Keys::CAROL;
our $P     = "t096-$$-" . time;

# a Redis of this file's own
our $RP = free_port();

sub redis_up { redis_start($RP, '--enable-debug-command', 'local') }

redis_up();

sub conf {
    my ($block, $extra) = @_;
    return $Test::LLM::Keys::TIERS
        . "llm_tier two tokens=100000/m tokens=1000000/d;\n"
        . "llm_redis 127.0.0.1:$RP prefix=$P-$block: " . ($extra // '')
        . ";\n";
}

sub window_sum {
    my ($block, $what) = @_;
    return window_total($RP, "$P-$block:{acct:carol}:w:$what");
}

our $Chat = $Test::LLM::Chat::ANSWER;

our $Body = Test::LLM::Chat::chat(model => 'm', max => 1000, text => 'hi');

# carol's chat completion (30 tokens used), from a check
sub chat_req { carol_chat($Body) }

# pipelined anonymous requests, each from its own address; how many 200
sub burst {
    Test::LLM::Client::burst($ENV{TEST_NGINX_SERVER_PORT}, '/v1/models',
                             [@_], 10);
}

run_tests();

__DATA__

=== TEST 1: a settle that failed half-way with a non-"ERR" error reply (Redis 7 passes WRONGTYPE through from redis.call) is not replayed: its first window is settled once (review3: twice)
--- workers: 1
--- http_config eval: ::conf(1, 'timeout=200ms')
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier two;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub {
    # admitted in Redis (both windows hold the reservation); then the
    # day window's key is something else than a hash: the settle script
    # writes the minute window, then fails on the day window with
    # "WRONGTYPE ...", which rstore.c takes for "refused before a write"
    my $k = "$::P-1:{acct:carol}:w:tokens:1d";
    redis_cli($::RP, 'DEL', $k);
    redis_cli($::RP, 'SET', $k, 'not a hash');
    return { delay => 0.2, status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => $::Chat };
}
--- request eval
"POST /v1/chat/completions\n$::Body"
--- more_headers eval
"Authorization: Bearer $::CAROL\nContent-Type: application/json"
--- timeout: 10
--- check eval
sub {
    select undef, undef, undef, 3.5;      # replay ticks
    my $sum = ::window_sum(1, 'tokens:1m');
    return $sum == 30 ? 1
        : (0, "the minute window holds $sum tokens, 30 were used (the "
              . "settle's refund was taken back twice: once by the settle, "
              . "once by its replay)");
}



=== TEST 2: on_error=local with a 1 s window: 411 clients active for about a second of outage all reach Redis (batches by slots of a minute or more, not by the 1 s window's 100 ms; review3: 410 filled the 4,096 batches)
--- workers: 1
--- http_config eval
::conf(2, 'timeout=200ms')
. "llm_tier fast requests=1000/s requests=100000/d;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_anonymous_tier fast;
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
    proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/plain/;
}
location /plain/ {
    return 200 "plain\n";
}
--- request
GET /plain/
--- timeout: 60
--- check eval
sub {
    my ($v) = @_;
    redis_stop($::RP);
    my @addrs = map { sprintf "10.1.%d.%d", $_ >> 8, $_ & 255 } 1 .. 410;
    # 11 rounds, each in a 100 ms slot of its own
    for my $round (1 .. 11) {
        my $t = Time::HiRes::time();
        Time::HiRes::sleep(0.1 - ($t * 10 - int($t * 10)) / 10 + 0.005);
        my $n = ::burst(@addrs);
        return (0, "round $round: $n of 410 answered") if $n != 410;
    }
    # one more client, once
    ::burst('10.9.9.9');
    select undef, undef, undef, 0.3;
    ::redis_up();
    my $log = do { local $/; open(my $fh, '<', "$v->{servroot}/logs/error.log")
                   or die $!; <$fh> };
    return $log =~ /(usage of account "[^"]*" counted locally will not reach Redis[^\n]*)/
        ? (0, "411 clients in a 1.2 s outage: $1")
        : 1;
}



=== TEST 3: on_error=local: a reload just after Redis is back (say, the one that points llm_redis at the mended server) loses nothing: the exiting worker sends every batch it has and waits for them (review3: 64 of 640 reached Redis, the timer was cancelable)
--- workers: 1
--- http_config eval
::conf(3, 'timeout=200ms')
. "llm_tier anon1 requests=1000/m requests=100000/d;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_anonymous_tier anon1;
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
    proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/plain/;
}
location /plain/ {
    return 200 "plain\n";
}
--- request
GET /plain/
--- timeout: 60
--- check eval
sub {
    redis_stop($::RP);
    # 640 clients during the outage: 640 batches, 10 ticks to replay
    my @addrs = map { sprintf "10.2.%d.%d", $_ >> 8, $_ & 255 } 1 .. 640;
    my $n = ::burst(@addrs);
    return (0, "$n of 640 answered") if $n != 640;
    ::redis_up();
    # Redis is back once a new client is admitted there
    my $up;
    for (1 .. 50) {
        ::burst('10.3.0.1');
        $up = redis_cli($::RP, 'EXISTS',
                        "$::P-3:{acct:anon:10.3.0.1}:w:requests:1d");
        last if ($up // '') =~ /^1/;
        select undef, undef, undef, 0.1;
    }
    return (0, 'Redis not back') if ($up // '') !~ /^1/;
    reload_nginx(10) or return (0, 'reload failed');
    select undef, undef, undef, 12;       # every tick there is to come
    my @k = grep { /requests:1d$/ } split /\n/,
        redis_cli($::RP, '--scan', '--pattern',
                  "$::P-3:{acct:anon:10.2.*}:w:requests:1d") // '';
    return @k == 640 ? 1
        : (0, scalar(@k) . " of the 640 clients counted during the outage "
              . "are in Redis; the rest went with the old worker");
}



=== TEST 4: Redis stalls past the timeout: the command that times out closes the connection, and an admission queued behind it, whose own deadline has not passed, falls back to the zone (counted, replayed); Redis, waking, does not count it again (its script deadline is cut to when the connection closes; review3: counted twice, 1098 tokens for 90)
--- workers: 1
--- http_config eval: ::conf(4, 'timeout=300ms')
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier two;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub { return { delay => 0.1, status => 200,
               headers => { 'Content-Type' => 'application/json' },
               body => $::Chat } }
--- request eval
"POST /v1/chat/completions\n$::Body"
--- more_headers eval
"Authorization: Bearer $::CAROL\nContent-Type: application/json"
--- timeout: 20
--- check eval
sub {
    # the request above: Redis admitted and settled it (30 tokens), and
    # this worker knows Redis's clock (admissions carry deadlines)
    system("redis-cli -p $::RP DEBUG SLEEP 0.45 >/dev/null 2>&1 &");
    select undef, undef, undef, 0.03;
    # A at T (times out at T+300 ms: the connection is closed), B at
    # T+250 ms (deadline T+550 ms, on the same connection: one account);
    # Redis wakes at about T+420 ms and runs B, answering nobody
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        ::chat_req();
        POSIX::_exit(0);
    }
    select undef, undef, undef, 0.25;
    my $b = ::chat_req();
    waitpid $pid, 0;
    return (0, "B: status $b->{status}") if ($b->{status} // 0) != 200;
    select undef, undef, undef, 3.5;      # Redis awake, replay ticks
    my $sum = ::window_sum(4, 'tokens:1m');
    return $sum == 90 ? 1
        : (0, "the minute window holds $sum tokens; 3 requests used 30 "
              . "each (B counted in Redis with its reservation and again "
              . "by the replay)");
}
