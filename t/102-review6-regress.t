# Review 6: settles coalesced per account and tier (d6fce40) and the
# TIME handshake (4296ab5).  Each block is a reproducer of what the
# review found; it says what a user sees and what SPEC says.
#
# TEST 1 stops the worker (SIGSTOP) so that one epoll_wait() returns
# two events; TEST 2 and 4 run a node under libfaketime, 10 minutes
# behind Redis (skipped without it, and under ASan); TEST 3, 5 and 6 talk
# to Redis through a link (Test::LLM::Link) that holds
# an answer, or keeps its listen queue full so that a connect waits
# for its SYN to be sent again.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Link;
use Test::LLM::Chat ();
use Test::LLM::Redis;
use IO::Socket::INET;
use Time::HiRes ();
use POSIX ();

our $CAROL = $Test::LLM::Keys::CAROL;
our $P     = "t102-$$-" . time;
our $RP    = $ENV{TEST_NGINX_REDIS_PORT} || 6379;

sub conf {
    my ($block, $extra) = @_;
    return $Test::LLM::Keys::TIERS
        . "llm_tier tok requests=1000/m tokens=200/m;\n"
        . "llm_redis 127.0.0.1:$RP prefix=$P-$block: timeout=5s "
        . ($extra // '') . ";\n";
}

our $Gateway = <<'_EOC_';
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /usage {
    llm_usage;
}
location = /plain {
    return 200 "plain\n";
}
_EOC_

our $Body = Test::LLM::Chat::chat(model => 'm', max => 100, text => 'hi');

our $Chat = $Test::LLM::Chat::ANSWER;

# the second chat request (the one the test holds) is answered 1 s late
our $Mock = sub {
    my ($req) = @_;
    return { delay => ($req->{n} == 2 ? 1 : 0), status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => $::Chat };
};

sub raw {
    my ($method, $uri, $conn, $body) = @_;
    return "$method $uri HTTP/1.1\r\nHost: localhost\r\n"
        . "Authorization: Bearer $::CAROL\r\nConnection: $conn\r\n"
        . (defined $body
           ? "Content-Type: application/json\r\n"
             . "Content-Length: " . length($body) . "\r\n\r\n$body"
           : "\r\n");
}

sub connect_nginx {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $ENV{TEST_NGINX_SERVER_PORT},
                                  Proto => 'tcp', Timeout => 5);
    die "connect: $!\n" unless $s;
    return $s;
}

sub read_all {
    my ($s) = @_;
    my $buf = '';
    local $SIG{ALRM} = sub { die "read timed out\n" };
    alarm 10;
    1 while sysread($s, $buf, 65536, length $buf);
    alarm 0;
    return $buf;
}

# One event-loop iteration of the only worker sees the end of a chat
# answer (its settle is queued) and then a second request of the same
# account on an idle keep-alive connection ($second: its method, uri,
# body).  The worker is stopped while both arrive, so that one
# epoll_wait() returns both.  Returns the second request's response.
sub same_iteration {
    my ($second_method, $second_uri, $second_body) = @_;

    # a first chat request, settled: the key is known, 30 tokens used
    my $r = http_request("POST /v1/chat/completions",
                         body => $::Body,
                         more_headers => "Authorization: Bearer $::CAROL\n"
                                         . "Content-Type: application/json");
    die "first chat: $r->{status}\n" unless $r->{status} == 200;

    # an idle keep-alive connection
    my $k = connect_nginx();
    print $k raw('GET', '/plain', 'keep-alive');
    my $got = '';
    while ($got !~ /\r\n\r\nplain\n/) {
        sysread($k, $got, 4096, length $got) or die "keep-alive: $!\n";
    }

    # the chat request whose answer comes 1 s late (mock request 2)
    my $s = connect_nginx();
    print $s raw('POST', '/v1/chat/completions', 'close', $::Body);

    my $t0;
    for (1 .. 100) {
        my @m = mock_requests();
        if (@m >= 2) { $t0 = Time::HiRes::time(); last }
        Time::HiRes::sleep(0.05);
    }
    die "the mock never saw the second chat\n" unless $t0;

    my @w = worker_pids();
    kill 'STOP', @w;
    Time::HiRes::sleep($t0 + 1.4 - Time::HiRes::time());
    print $k raw($second_method, $second_uri, 'close', $second_body);
    Time::HiRes::sleep(0.2);
    kill 'CONT', @w;

    my $a = read_all($s);
    my $b = read_all($k);
    die "the held chat: " . substr($a, 0, 40) . "\n"
        unless $a =~ m{^HTTP/1.1 200};
    return $b;
}

# a Redis of this file's own, which TEST 2 stops and starts
our $RP2 = free_port();
redis_start($RP2);

our $FakeLib = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';

sub conf2 {
    my ($block) = @_;
    return $Test::LLM::Keys::TIERS
        . "llm_tier tok requests=1000/m tokens=200/m;\n"
        . "llm_redis 127.0.0.1:$RP2 prefix=$P-$block: timeout=200ms"
        . " on_error=local;\n";
}

# TEST 3: a Redis of its own behind a link that can hold one answer
our $RP3 = free_port();
our $LP3 = free_port();
our $HOLD = "$Test::LLM::Nginx::ROOT/t/servroot/redis-$RP3/hold";

# hold(ms): the answer that next follows a script call (or TIME) waits ms
sub hold { hold_set($HOLD, $_[0]) }
sub peek_hold { hold_peek($HOLD) }
sub held { hold_take($HOLD) }

redis_start($RP3);
hold(0);
link_start($LP3, $RP3, answer => \&held_answer);

sub conf3 {
    my ($block) = @_;
    return $Test::LLM::Keys::TIERS
        . "llm_tier tok requests=1000/m tokens=200/m;\n"
        . "llm_redis 127.0.0.1:$LP3 prefix=$P-$block: timeout=300ms"
        . " connections=1 on_error=deny;\n";
}

# in the link (Test::LLM::Link), each of Redis's answers: the answer to
# a script call or to TIME (a command that names EVAL or TIME) waits
# what hold() said, once
sub held_answer {
    my ($conn, $argv, $v) = @_;
    return ($v, join(' ', @$argv) =~ /EVAL|TIME/ ? held() : 0, 0);
}

sub conf4 {
    my ($block) = @_;
    return $Test::LLM::Keys::TIERS
        . "llm_tier tok requests=1000/m tokens=200/m;\n"
        . "llm_redis 127.0.0.1:$LP3 prefix=$P-$block: timeout=3s"
        . " connections=1 on_error=deny;\n";
}

# TEST 5 and 6: the same Redis behind links whose listen queue is full
# until their gate (a file) exists
our @FILL;
sub full_link {
    my ($gate) = @_;
    my $port = free_port();
    unlink $gate;
    link_start($port, $RP3, answer => \&held_loads, accept_after => $gate);
    for (1 .. 4) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port, Blocking => 0);
        push @FILL, $s if $s;
    }
    return $port;
}

our $GATE5 = "$Test::LLM::Nginx::ROOT/t/servroot/redis-$RP3/gate5";
our $GATE6 = "$Test::LLM::Nginx::ROOT/t/servroot/redis-$RP3/gate6";
our $LP5 = full_link($GATE5);
our $LP6 = full_link($GATE6);

# on these links, what follows a held TIME on its connection (the
# SCRIPT LOADs) waits 50 ms longer, so that it is still on its way when
# TIME's answer lets the admissions go
our %LATE;
sub held_loads {
    my ($conn, $argv, $v) = @_;
    my $cmd = join(' ', @$argv);
    if ($cmd =~ /^TIME/) {
        my $ms = held();
        $LATE{$conn} = $ms + 50 if $ms;
        return ($v, $ms, 0);
    }
    return ($v, $cmd =~ /^SCRIPT/ ? $LATE{$conn} // 0 : 0, 0);
}

sub conf5 {
    my ($block, $port) = @_;
    return $Test::LLM::Keys::TIERS
        . "llm_tier tok requests=1000/m tokens=200/m;\n"
        . "llm_redis 127.0.0.1:$port prefix=$P-$block: timeout=1500ms"
        . " connections=1 on_error=deny;\n";
}

# TEST 5 and 6: the worker's connect loses its first SYN (the link's
# listen queue is full) and sends it again 1 s after the worker
# connected; the gate opens before that (or the next try comes 2 s
# later and the connect alone passes the timeout, which is not these
# blocks' case).  TIME's answer is held 700 ms.  The request goes while
# the connect waits ("early"), or once the link has TIME's answer (the
# hold file read back to 0).  A machine that got there too early or too
# late says so and passes.
sub slow_connect {
    my ($block, $gate, $early) = @_;
    my ($w) = worker_pids();
    my $age = sub { proc_age($w) // -1 };
    my $a0 = $age->();
    if ($a0 < 0 || $a0 > 0.6) {
        Test::More::diag(sprintf("TEST $block not run as meant: the "
            . "worker is %.2f s old, near its connect's first SYN retry",
            $a0));
        return 1;
    }
    hold(700);
    open(my $fh, '>', $gate) or die "$gate: $!";
    close $fh;
    my $a1 = $age->();
    if ($early) {
        # late enough that the request's own timeout (1.5 s) is not
        # near: the answer comes 1.75 s after the worker began
        Time::HiRes::sleep(0.75 - $a1) if $a1 < 0.75;
    } else {
        my $until = Time::HiRes::time() + 4;
        Time::HiRes::sleep(0.005)
            while peek_hold() && Time::HiRes::time() < $until;
    }
    my $a2 = $age->();
    my ($s, $t) = get_models();
    my $times = sprintf("worker %.3f s old at the check, %.3f at the gate,"
        . " %.3f when the request went; it got %d after %.3f s",
        $a0, $a1, $a2, $s, $t);
    # as meant: the request went before the connect's SYN retry (early)
    # or after it, when the connect had taken about 1 s, long enough
    # that connect and TIME together pass the timeout, short enough
    # that the connect alone does not
    if ($early ? $a2 > 0.95 : $a2 < 0.8 || $a2 > 1.4) {
        Test::More::diag("TEST $block not run as meant: $times");
        return 1;
    }
    return (0, "a command timed out: $times") if errlog() =~ /timed out/;
    return (0, "want 200: $times") unless $s == 200;
    return 1;
}

sub get_models {
    my ($port) = @_;
    my $r = http_request("GET /v1/models", port => $port,
                         more_headers => "Authorization: Bearer $::CAROL");
    return ($r->{status} // 0, $r->{elapsed} // 0);
}

run_tests();

__DATA__

=== TEST 1: llm_redis batch=1: a settle queued in an event-loop iteration goes to Redis after an admission of the same account made later in that iteration, which Redis thus decides against the earlier request's reservation (100 tokens) instead of its usage (30): the second request is refused (429) although 60 of 200 tokens are used.  Before d6fce40 the settle left at once, before the answer's last bytes; SPEC 9: token windows never over-admit by more than the reservations in flight -- nor should they under-admit by a reservation already settled
--- workers: 1
--- http_config eval: ::conf(1, 'batch=1')
--- config eval: $::Gateway
--- mock eval: $::Mock
--- request
GET /plain
--- timeout: 30
--- check eval
sub {
    my $b = ::same_iteration('POST', '/v1/chat/completions', $::Body);
    my ($status) = $b =~ m{^HTTP/1.1 (\d+)};
    return (0, "the second chat got $status, want 200: "
               . substr($b, 0, 300))
        unless ($status // 0) == 200;
    return 1;
}




=== TEST 2: a node whose workers start while Redis is down (a start or a reload during an outage) has never read Redis's clock: with Redis's clock 10 minutes ahead of the node's (faked with libfaketime on the node), what on_error=local counted during the outage is replayed at the node's time taken for Redis's, 10 minutes before Redis's now, outside the 1-minute window: the window holds 0 of the 3 requests when Redis is back.  SPEC 9: usage counted locally during a Redis outage is added to Redis when it returns
--- skip_eval: 1: !-e $::FakeLib || ($ENV{LLM_MODULE} // '') =~ /asan/
--- workers: 1
--- http_config eval: ::conf2(2)
--- config eval: $::Gateway
--- mock eval: $::Mock
--- request
GET /plain
--- timeout: 30
--- check eval
sub {
    redis_stop($::RP2);

    my $port = free_port();
    {
        local $ENV{LD_PRELOAD} = $::FakeLib;
        local $ENV{FAKETIME} = '-10m';
        local $ENV{FAKETIME_DONT_FAKE_MONOTONIC} = 1;
        start_extra_nginx($port);
    }

    for (1 .. 3) {
        my $r = Test::LLM::Client::exchange(
            port => $port,
            %{ Test::LLM::Client::build_request(
                   "GET /v1/models",
                   more_headers => "Authorization: Bearer $::CAROL") });
        return (0, "request $_ on the node: " . ($r->{status} // 'none'))
            unless ($r->{status} // 0) == 200;
    }

    redis_start($::RP2);

    my $sum;
    for (1 .. 50) {
        Time::HiRes::sleep(0.2);
        $sum = window_total($::RP2, "$::P-2:{acct:carol}:w:requests:1m");
        last if $sum == 3;
    }
    return $sum == 3 ? 1
        : (0, "the 1-minute requests window holds $sum, want 3");
}



=== TEST 3: llm_redis timeout=300ms on_error=deny: one admission answer that reaches the worker 200 ms after Redis ran the script (a busy worker, a slow network) leaves the skew 200 ms short, for every later request: the next admission, which Redis runs 150 ms after it was sent (Redis busy), is past the deadline it carries, 100 ms on Redis's clock, and the request is denied (503) after 150 of its 300 ms.  Each answer's clock is Redis's clock when the script ran, earlier than when the worker reads it: the largest of the guesses is the nearest.  SPEC 3: timeout bounds every Redis operation; on_error applies while Redis is unreachable or slow -- this Redis answered within it
--- workers: 1
--- http_config eval: ::conf3(3)
--- config eval: $::Gateway
--- mock eval: $::Mock
--- request
GET /plain
--- timeout: 30
--- check eval
sub {
    my ($s1) = ::get_models();
    return (0, "first request: $s1") unless $s1 == 200;

    # its settle goes to Redis just after the answer: the hold is for
    # the next admission's answer, not for the settle's
    Time::HiRes::sleep(0.2);

    ::hold(200);
    my ($s2, $t2) = ::get_models();
    return (0, "second request: $s2") unless $s2 == 200;

    # the backend answers it 1 s late, the link held Redis's 200 ms
    return (0, sprintf("the second request took %.3fs, want 1.2 s: the "
                       . "link did not hold the answer", $t2))
        unless $t2 >= 1.15;

    my $rpid = redis_pid($::RP3);

    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        Time::HiRes::sleep(0.02);
        kill 'STOP', $rpid;
        Time::HiRes::sleep(0.15);
        kill 'CONT', $rpid;
        POSIX::_exit(0);
    }
    Time::HiRes::sleep(0.03);
    my ($s3, $t3) = ::get_models();
    waitpid $pid, 0;
    kill 'CONT', $rpid;

    return (0, sprintf("the third request got %d after %.3fs (Redis "
                       . "frozen 150 ms), want 200", $s3, $t3))
        unless $s3 == 200;
    return 1;
}
--- no_error_log
past its deadline



=== TEST 4: a worker that starts (a start, a reload) with Redis's clock 10 minutes ahead of its own (faked with libfaketime on the node), while its connection's TIME has not answered yet (held 1 s here; a Redis far away, a busy one): the admission queued behind TIME carries a deadline of the node's clock guessed as Redis's, 10 minutes in Redis's past: Redis refuses to run it and the request is denied (503, on_error=deny) though Redis answers within timeout (3 s).  Before 4296ab5 an admission carried no deadline until the skew was known.  SPEC 3: on_error applies while Redis is unreachable or slow
--- skip_eval: 1: !-e $::FakeLib || ($ENV{LLM_MODULE} // '') =~ /asan/
--- workers: 1
--- http_config eval: ::conf4(4)
--- config eval: $::Gateway
--- mock eval: $::Mock
--- request
GET /plain
--- timeout: 30
--- check eval
sub {
    my $port = free_port();

    # this block's own nginx answers (its worker is up, and so its
    # connection's TIME, answered long before the hold is set)
    my $r = Test::LLM::Client::exchange(
        port => $ENV{TEST_NGINX_SERVER_PORT},
        %{ Test::LLM::Client::build_request("GET /v1/models") });
    return (0, "this node's own request without a key got "
               . ($r->{status} // 'nothing') . ", want 401")
        unless ($r->{status} // 0) == 401;
    Time::HiRes::sleep(0.2);

    ::hold(1000);
    {
        local $ENV{LD_PRELOAD} = $::FakeLib;
        local $ENV{FAKETIME} = '-10m';
        local $ENV{FAKETIME_DONT_FAKE_MONOTONIC} = 1;
        start_extra_nginx($port);
    }
    my ($s, $t) = ::get_models($port);
    return (0, sprintf("the node's first request got %d after %.3fs, "
                       . "want 200", $s, $t))
        unless $s == 200;
    return (0, sprintf("the node's first request took %.3fs, want 1 s "
                       . "or more: the link did not hold TIME", $t))
        unless $t >= 0.95;
    return 1;
}



=== TEST 5: llm_redis timeout=1500ms: a connect that takes 1 s (its first SYN lost: a far or busy Redis) and a TIME that Redis answers 0.7 s after it was written: the connection is closed as timed out (TIME's timer counts from before the connect), and the request queued behind TIME is denied (503, on_error=deny) though each step took less than timeout.  Before 4296ab5 nothing was queued at connect without AUTH or SELECT: with a round trip between timeout/2 and timeout (connect and TIME take two), every connection now closes before it is up.  Here the request goes once the link has TIME's answer, and the SCRIPT LOADs' answers come 50 ms after TIME's: before 7 Dec 2026 the admission that TIME's answer let go was cut to a deadline in Redis's past (see TEST 6): 503 after 0.8 s in 4 runs of 4
--- workers: 1
--- http_config eval: ::conf5(5, $::LP5)
--- config eval: $::Gateway
--- mock eval: $::Mock
--- request
GET /plain
--- timeout: 30
--- check eval
sub { ::slow_connect(5, $::GATE5, 0) }



=== TEST 6: as TEST 5, with the request sent while the connect waits for its SYN retry: the admission waits for Redis's clock and goes when TIME answers, 1.7 s after the connect began.  Before 7 Dec 2026 the handshake's commands kept the time they were queued, before the connect, for ngx_http_llm_redis_closes(): the admission's deadline was cut to when the connection would have closed had the connect not been slow, in Redis's past, and Redis said no decision: 503 after 1.46 s (on_error=deny), in CI on a slower machine and here in 1 of 4 runs
--- workers: 1
--- http_config eval: ::conf5(6, $::LP6)
--- config eval: $::Gateway
--- mock eval: $::Mock
--- request
GET /plain
--- timeout: 30
--- check eval
sub { ::slow_connect(6, $::GATE6, 1) }
