# Regressions found in reviews of the Redis code: llm_usage reached by an
# internal redirect after a Redis admission (it read the admission's state,
# which has no usage array: a worker crashed); the outage replay (SPEC 9:
# usage counted locally during an outage is added to Redis when it
# returns, usage of every completed request reaches the store): a refund
# settled after its reservation's batch was frozen was dropped, a batch
# was stamped with its last request's time, and a settle that could not
# be sent was lost.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat qw(carol_chat);
use Test::LLM::Redis;
use Time::HiRes ();
use POSIX ();
use Socket ();

our $CAROL = $Test::LLM::Keys::CAROL;
our $P     = "t094-$$-" . time;

# a Redis of this file's own, stopped and started again by the tests
# (DEBUG SLEEP stalls it)
our $RP = free_port();

sub redis_up { redis_start($RP, '--enable-debug-command', 'local') }

redis_up();

sub conf {
    my ($block, $extra) = @_;
    return $Test::LLM::Keys::TIERS
        . "llm_tier roomy requests=1000/m;\n"
        . "llm_tier tok tokens=100000/m;\n"
        . "llm_tier many requests=1000/m;\n"
        . "llm_redis 127.0.0.1:$RP prefix=$P-$block: " . ($extra // '')
        . ";\n";
}

sub window_sum {
    my ($block, $what) = @_;
    return window_total($RP, "$P-$block:{acct:carol}:w:$what");
}

# the slots (6 s wide for 1m) of a window and their counts
sub slots {
    my ($block, $what) = @_;
    return window_slots($RP, "$P-$block:{acct:carol}:w:$what");
}

# the window's sum once it is "want", or after "secs" what it is
sub wait_sum {
    my ($block, $what, $want, $secs) = @_;
    my $sum;
    wait_until($secs, sub { ($sum = window_sum($block, $what)) == $want });
    return $sum;
}

our $Chat = $Test::LLM::Chat::ANSWER;

# fewer prompt tokens than estimated: a settle takes back in every
# dimension, and its replay is refunds alone
(our $Chat21 = $Chat) =~ s/"prompt_tokens":10,/"prompt_tokens":1,/;
$Chat21 =~ s/"total_tokens":30/"total_tokens":21/;

our $Body = Test::LLM::Chat::chat(model => 'm', max => 1000, text => 'hi');

# for "secs" seconds, a listener on "port" whose accept queue is full:
# a connect to it neither succeeds nor fails (its SYNs are dropped)
sub black_hole {
    my ($port, $secs) = @_;
    my $pid = fork // die "fork: $!";
    return if $pid;
    POSIX::close($_) for 3 .. 1023;    # the mock's sockets stay its own
    my $to = Socket::sockaddr_in($port, Socket::inet_aton('127.0.0.1'));
    my $l;
    socket($l, Socket::PF_INET(), Socket::SOCK_STREAM(), 0)
        && setsockopt($l, Socket::SOL_SOCKET(), Socket::SO_REUSEADDR(), 1)
        && bind($l, $to) && listen($l, 0)
        or POSIX::_exit(1);
    my @fill;
    for (1 .. 4) {
        socket(my $c, Socket::PF_INET(), Socket::SOCK_STREAM(), 0)
            or POSIX::_exit(1);
        fcntl($c, POSIX::F_SETFL(), POSIX::O_NONBLOCK());
        connect($c, $to);
        push @fill, $c;
        select undef, undef, undef, 0.02;
    }
    select undef, undef, undef, $secs;
    POSIX::_exit(0);
}

sub chat { carol_chat($Body) }

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



=== TEST 2: on_error=local: a refund settled after its reservation's batch was frozen reaches Redis (SPEC 9: nothing accounted is lost)
--- workers: 1
--- http_config eval: ::conf(2, 'timeout=200ms')
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier tok;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /plain {
    return 200 "plain\n";
}
--- mock eval
sub { return { delay => 1.6, status => 200,
               headers => { 'Content-Type' => 'application/json' },
               body => $::Chat21 } }
--- request
GET /plain
--- timeout: 20
--- check eval
sub {
    redis_stop($::RP);
    # the replay tick freezes the reservation's batch while the backend
    # answers; the settle's refund comes after it
    my $r = ::chat();
    return (0, "status $r->{status}") if ($r->{status} // 0) != 200;
    ::redis_up();
    my $sum = ::wait_sum(2, 'tokens:1m', 21, 5);
    select undef, undef, undef, 2.5;      # every later tick
    $sum = ::window_sum(2, 'tokens:1m');
    return $sum == 21 ? 1 : (0, "Redis holds $sum tokens, 21 were used");
}



=== TEST 3: on_error=local: usage counted during an outage is replayed into the slots it was counted in, not all into the slot of the last request
--- workers: 1
--- http_config eval: ::conf(3, 'timeout=200ms')
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier many;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /plain {
    return 200 "plain\n";
}
--- request
GET /plain
--- timeout: 40
--- check eval
sub {
    my $gw = sub { http_request("GET /v1/models", more_headers =>
                                "Authorization: Bearer $::CAROL")->{status} };
    redis_stop($::RP);
    # the first request, then (after the first replay tick froze it as
    # a batch) five more in a 6 s slot of their own, then one 13 s later
    $gw->();
    select undef, undef, undef, 1.5;
    my $t5 = int(Time::HiRes::time() * 1000 / 6000);
    $gw->() for 1 .. 5;
    my $t5b = int(Time::HiRes::time() * 1000 / 6000);
    select undef, undef, undef, 13;
    $gw->();
    ::redis_up();
    my %s;
    for (1 .. 50) {
        %s = ::slots(3, 'requests:1m');
        my $n = 0; $n += $_ for values %s;
        last if $n >= 7;
        select undef, undef, undef, 0.1;
    }
    my $got = join ' ', map { "$_=$s{$_}" } sort keys %s;
    return (0, "slots $got; the five of slot $t5 are elsewhere")
        if ($s{$t5} // 0) + ($t5b != $t5 ? $s{$t5b} // 0 : 0) < 5;
    return 1;
}



=== TEST 4: a request admitted in Redis whose settle cannot be sent (Redis gone before the answer): its usage reaches Redis when it is back (SPEC 9)
--- workers: 1
--- http_config eval: ::conf(4, 'timeout=200ms')
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier tok;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub {
    # admitted in Redis, which then goes away (what it holds kept)
    redis_cli($::RP, 'SAVE');
    redis_cli($::RP, 'SHUTDOWN', 'NOSAVE');
    return { delay => 0.5, status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => $::Chat };
}
--- request eval
"POST /v1/chat/completions\n$::Body"
--- more_headers eval
"Authorization: Bearer $::CAROL\nContent-Type: application/json"
--- timeout: 10
--- error_log
replayed when Redis is back
--- check eval
sub {
    ::redis_up();
    unlink servroot() . "/../redis-$::RP/dump.rdb";
    my $sum = ::wait_sum(4, 'tokens:1m', 30, 6);
    return $sum == 30 ? 1 : (0, "Redis holds $sum tokens, 30 were used");
}



=== TEST 5: a settle that was sent and lost its answer (Redis stalled past the timeout) is not replayed: Redis ran it, once
--- workers: 1
--- http_config eval: ::conf(5, 'timeout=200ms')
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier tok;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub {
    my ($req) = @_;
    # the second: Redis stalls while the answer goes out, and the settle
    # waits (the first has loaded the settle script: no NOSCRIPT)
    system("redis-cli -p $::RP DEBUG SLEEP 1 >/dev/null 2>&1 &")
        if $req->{n} == 2;
    return { delay => 0.2, status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => $::Chat };
}
--- request eval
["POST /v1/chat/completions\n$::Body", "POST /v1/chat/completions\n$::Body"]
--- more_headers eval
"Authorization: Bearer $::CAROL\nContent-Type: application/json"
--- timeout: 10
--- error_log
may not be settled
--- check eval
sub {
    select undef, undef, undef, 3.5;      # Redis awake, replay ticks
    my $sum = ::window_sum(5, 'tokens:1m');
    return $sum == 60 ? 1 : (0, "Redis holds $sum tokens, 60 were used");
}



=== TEST 6: a settle that Redis refused before running it (an error reply: out of memory) is replayed when Redis takes writes again
--- workers: 1
--- http_config eval: ::conf(6, 'timeout=200ms')
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier tok;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub {
    # admitted in Redis, which then refuses every write
    redis_cli($::RP, 'CONFIG', 'SET', 'maxmemory', '1');
    return { delay => 0.3, status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => $::Chat };
}
--- request eval
"POST /v1/chat/completions\n$::Body"
--- more_headers eval
"Authorization: Bearer $::CAROL\nContent-Type: application/json"
--- timeout: 10
--- error_log
not settled (error reply), replayed when Redis is back
--- check eval
sub {
    select undef, undef, undef, 1.5;      # a replay tick refused too
    my $held = ::window_sum(6, 'tokens:1m');
    redis_cli($::RP, 'CONFIG', 'SET', 'maxmemory', '0');
    my $sum = ::wait_sum(6, 'tokens:1m', 30, 5);
    return (0, "Redis holds $sum tokens, 30 were used") if $sum != 30;
    return $held > 30 ? 1 : (0, "the refusal was not one ($held)");
}



=== TEST 7: a settle queued on a connection that never came up (its connect hangs) is replayed: it never left the worker (the connection's TIME, queued first, times out after 1 s and closes it)
--- workers: 1
--- http_config eval: ::conf(7, 'timeout=1s')
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier tok;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub {
    # admitted in Redis, which then goes away (what it holds kept); in
    # its place a listener that takes no connection: connects hang
    redis_cli($::RP, 'SAVE');
    redis_cli($::RP, 'SHUTDOWN', 'NOSAVE');
    ::black_hole($::RP, 3);
    return { delay => 0.5, status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => $::Chat };
}
--- request eval
"POST /v1/chat/completions\n$::Body"
--- more_headers eval
"Authorization: Bearer $::CAROL\nContent-Type: application/json"
--- timeout: 10
--- error_log
not settled (timed out (an earlier command)), replayed when Redis is back
--- check eval
sub {
    select undef, undef, undef, 3;        # the black hole is gone
    ::redis_up();
    unlink servroot() . "/../redis-$::RP/dump.rdb";
    my $sum = ::wait_sum(7, 'tokens:1m', 30, 6);
    return $sum == 30 ? 1 : (0, "Redis holds $sum tokens, 30 were used");
}



=== TEST 8: a settle that cannot be sent and adds to its reservation (more used than reserved, a 7 s answer): what it gives back is replayed in the reservation's slot, what it adds in the slot of the time it was known, as the settle script would count an excess (review3)
--- workers: 1
--- http_config eval: ::conf(8, 'timeout=200ms')
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier tok;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub {
    redis_cli($::RP, 'SAVE');
    redis_cli($::RP, 'SHUTDOWN', 'NOSAVE');
    return { delay => 7, status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => $::Chat };
}
--- request eval
"POST /v1/chat/completions\n"
. '{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}'
--- more_headers eval
"Authorization: Bearer $::CAROL\nContent-Type: application/json"
--- timeout: 20
--- error_log
replayed when Redis is back
--- check eval
sub {
    ::redis_up();
    unlink servroot() . "/../redis-$::RP/dump.rdb";
    my $sum = ::wait_sum(8, 'tokens:1m', 30, 6);
    return (0, "Redis holds $sum tokens, 30 were used") if $sum != 30;
    # 6 s slots: the reservation's, then one at least 7 s later
    my %s = ::slots(8, 'tokens:1m');
    my @k = sort { $a <=> $b } keys %s;
    return (0, "one slot holds it all: " . join ' ', %s) if @k != 2;
    return $s{$k[1]} > $s{$k[0]} && $s{$k[1]} > 15 ? 1
        : (0, "the excess is not in the later slot: " . join ' ', %s);
}
