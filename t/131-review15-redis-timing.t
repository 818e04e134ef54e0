# Review 15: times in the Redis connection's lifecycle (the skew of
# Redis's clock, deadlines, timeouts).  Each block is a reproducer of
# what the review found; it says what a user sees and what SPEC says.
#
# The blocks talk to a Redis of this file's own through links
# (Test::LLM::Link) that hold an answer back (TEST 1), hold TIME's until
# a gate opens (TEST 2) or answer TIME as a cluster proxy does, with an
# error (TEST 3).  TEST 1 and 2 block the worker in one event-loop
# iteration: its access log in location /stall is a pipe that this
# process fills, and the worker's write() waits until it is read.  A
# block whose setup did not happen as meant (a machine too slow for its
# margins) says so and passes.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Link;
use Test::LLM::Redis;
use IO::Socket::INET;
use Time::HiRes ();
use POSIX ();

our $CAROL = $Test::LLM::Keys::CAROL;
our $P     = "t131-$$-" . time;

our $RP = free_port();
redis_start($RP);

our $Gateway = <<'_EOC_';
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /plain {
    return 200 "plain\n";
}
_EOC_

our $HOLD = "$Test::LLM::Nginx::ROOT/t/servroot/redis-$RP/hold";

# hold(ms): the answer that next follows a script call (or TIME) waits ms
sub hold { hold_set($HOLD, $_[0]) }
sub peek_hold { hold_peek($HOLD) }
sub held { hold_take($HOLD) }

sub held_answer {
    my ($conn, $argv, $v) = @_;
    return ($v, join(' ', @$argv) =~ /EVAL|TIME/ ? held() : 0, 0);
}

hold(0);
our $LP = free_port();
link_start($LP, $RP, answer => \&held_answer);

# the blocks' configuration, with Redis behind link "port" (default $LP)
sub conf {
    my ($block, $extra, $port) = @_;
    $port //= $LP;
    return $Test::LLM::Keys::TIERS
        . "llm_tier tok requests=1000/m;\n"
        . "llm_redis 127.0.0.1:$port prefix=$P-$block: connections=1"
        . " on_error=deny " . ($extra // '') . ";\n";
}

sub get_models {
    my ($port) = @_;
    my $r = http_request("GET /v1/models", port => $port,
                         more_headers => "Authorization: Bearer $::CAROL");
    return ($r->{status} // 0, $r->{elapsed} // 0);
}

# a request sent, its answer read later (read_answer)
sub send_models {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $ENV{TEST_NGINX_SERVER_PORT},
                                  Proto => 'tcp', Timeout => 5)
        or die "connect: $!\n";
    print $s "GET /v1/models HTTP/1.1\r\nHost: localhost\r\n"
        . "Authorization: Bearer $::CAROL\r\nConnection: close\r\n\r\n";
    return $s;
}

sub read_answer {
    my ($s) = @_;
    my $buf = '';
    local $SIG{ALRM} = sub { die "read timed out\n" };
    alarm 10;
    1 while sysread($s, $buf, 65536, length $buf);
    alarm 0;
    my ($status) = $buf =~ m{^HTTP/1.1 (\d+)};
    return $status // 0;
}

# the link has taken the hold (Redis has answered, the link holds it);
# 0: not within "wait" s
sub hold_taken {
    my ($wait) = @_;
    my $until = Time::HiRes::time() + $wait;
    while (peek_hold()) {
        return 0 if Time::HiRes::time() > $until;
        Time::HiRes::sleep(0.002);
    }
    return 1;
}

# the access log of location /stall: a pipe this process keeps open
# (reading and writing), so that nginx opens it at once; filled here, a
# worker's next line waits in write() until the pipe is read
our $FIFO = "$Test::LLM::Nginx::ROOT/t/servroot/redis-$RP/log.fifo";
unlink $FIFO;
POSIX::mkfifo($FIFO, 0600) or die "mkfifo $FIFO: $!";
sysopen(our $FIFO_FH, $FIFO, POSIX::O_RDWR() | POSIX::O_NONBLOCK())
    or die "$FIFO: $!";

our $Stall = $Gateway . <<"_EOC_";
location = /stall {
    access_log $FIFO;
    return 200 "stall\n";
}
_EOC_

sub fill_fifo {
    my $chunk = 'x' x 4096;
    1 while defined syswrite($FIFO_FH, $chunk);
    syswrite($FIFO_FH, 'x') while defined syswrite($FIFO_FH, 'x' x 64);
}

sub drain_fifo {
    1 while sysread($FIFO_FH, my $buf, 65536);
}

# the worker is in write() (its access log line to the full pipe)
sub writing {
    my ($pid) = @_;
    open(my $fh, '<', "/proc/$pid/syscall") or return 0;
    my ($nr) = split ' ', scalar(<$fh>) // '';
    close $fh;
    return defined $nr && $nr eq '1';
}

# TEST 2: a link of its own, whose answers to TIME wait while its gate
# (a file) exists, from before nginx starts
our $GATE2 = "$Test::LLM::Nginx::ROOT/t/servroot/redis-$RP/gate2";
open(my $g2, '>', $GATE2) or die "$GATE2: $!";
close $g2;
our $LP2 = free_port();
link_start($LP2, $RP, gate => $GATE2, answer => sub {
    my ($conn, $argv, $v) = @_;
    return ($v, 0, join(' ', @$argv) =~ /^TIME/ ? 1 : 0);
});

sub conf2 {
    my ($block, $extra) = @_;
    return $Test::LLM::Keys::TIERS
        . "llm_tier tok requests=1000/m;\n"
        . "llm_redis 127.0.0.1:$LP2 prefix=$P-$block: connections=1"
        . " on_error=deny " . ($extra // '') . ";\n";
}

# TEST 3: a link that answers TIME as Redis Cluster Proxy does (an
# unsupported command: its COMMANDS.md lists TIME and SCRIPT so)
our $LP3 = free_port();
link_start($LP3, $RP, answer => sub {
    my ($conn, $argv, $v) = @_;
    my $cmd = uc($argv->[0] // '');
    return (['-', "ERR Unsupported command '$cmd'"], 0, 0)
        if $cmd eq 'TIME' || $cmd eq 'SCRIPT';
    return ($v, 0, 0);
});

# the process has stopped (SIGSTOP): 0 if not within a second
sub stopped {
    my ($pid) = @_;
    my $until = Time::HiRes::time() + 1;
    while (Time::HiRes::time() < $until) {
        open(my $fh, '<', "/proc/$pid/stat") or return 0;
        my ($state) = ((scalar <$fh>) // '') =~ /\) (\S)/;
        close $fh;
        return 1 if ($state // '') eq 'T';
        Time::HiRes::sleep(0.001);
    }
    return 0;
}

# a request sent, not read
sub send_plain {
    my ($uri) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $ENV{TEST_NGINX_SERVER_PORT},
                                  Proto => 'tcp', Timeout => 5)
        or die "connect: $!\n";
    print $s "GET $uri HTTP/1.1\r\nHost: localhost\r\n"
        . "Connection: close\r\n\r\n";
    return $s;
}

run_tests();

__DATA__

=== TEST 1: llm_redis timeout=1s on_error=deny: a worker that blocks 2 s in one event-loop iteration (an access log on a slow disk or a full pipe, as here; a starved machine) while Redis's answer to an admission waits in its socket reads that answer 2 s after Redis ran the script, and ngx_http_llm_redis_clock_seen() took Redis's clock in it, short by more than timeout, for Redis's clock set back: the skew went 2 s back.  The next request's admission then carries a deadline a second in Redis's past; Redis refuses to run it ("past its deadline") and the request is denied (503) though Redis answers at once.  SPEC 3: on_error applies while Redis is unreachable or slow -- this one is neither
--- workers: 1
--- http_config eval: ::conf(1, 'timeout=1s')
--- config eval: $::Stall
--- request
GET /plain
--- timeout: 30
--- check eval
sub {
    # the connection is up, Redis's clock known
    my ($s0) = ::get_models();
    return (0, "first request: $s0") unless $s0 == 200;
    Time::HiRes::sleep(0.3);

    my ($w) = worker_pids();
    ::fill_fifo();

    # the next answer to a script call is held 600 ms in the link; the
    # worker blocks in the access log of /stall meanwhile, for 2 s
    ::hold(600);
    my $a = ::send_models();
    my $taken = ::hold_taken(3);
    my $t0 = Time::HiRes::time();
    my $st = ::send_plain('/stall');
    my $blocked = 0;
    while (Time::HiRes::time() < $t0 + 0.4) {
        if (::writing($w)) { $blocked = 1; last }
        Time::HiRes::sleep(0.002);
    }
    my $at = Time::HiRes::time() - $t0;
    Time::HiRes::sleep($t0 + 2.6 - Time::HiRes::time());
    ::drain_fifo();
    my $sa = ::read_answer($a);
    ::read_answer($st);
    ::drain_fifo();

    if (!$taken || !$blocked) {
        ::hold(0);
        Test::More::diag(sprintf("TEST 1 not run as meant: the link "
            . "%s the admission's answer, the worker %s", $taken ? "held"
            : "never held", $blocked ? sprintf("blocked %.3f s after",
            $at) : "did not block within 0.4 s"));
        return 1;
    }
    return (0, "the request whose answer waited got $sa, want 200")
        unless $sa == 200;

    my ($s2, $t2) = ::get_models();
    return (0, sprintf("the request after the stall got %d after %.3f s,"
                       . " want 200", $s2, $t2))
        unless $s2 == 200;
    return 1;
}
--- no_error_log
past its deadline



=== TEST 2: llm_redis timeout=3500ms on_error=deny: a worker just started (a start, a restart) whose connection's TIME answer comes in the same event-loop iteration as a request that blocks the worker 2 s (an access log on a slow disk or a full pipe, as here; a starved machine), after it: the admission that waited for Redis's clock is sent with a deadline on it short by those 2 s (the first guess's slack, how long TIME waited, was counted on the loop's cached clock, which had not seen the block), in Redis's past: Redis refuses to run it ("past its deadline") and the request is denied (503) 2.5 s after it came, within its 3.5 s, though Redis answered everything at once.  SPEC 3: on_error applies while Redis is unreachable or slow
--- workers: 1
--- http_config eval: ::conf2(2, 'timeout=3500ms')
--- config eval: $::Stall
--- request
GET /plain
--- timeout: 30
--- check eval
sub {
    my ($w) = worker_pids();
    my $age = ::proc_age($w) // -1;
    if ($age < 0 || $age > 1.5) {
        unlink $::GATE2;
        Test::More::diag(sprintf("TEST 2 not run as meant: the worker is"
            . " %.2f s old, its TIME's timer too near", $age));
        return 1;
    }

    # an idle keep-alive connection
    my $k = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $ENV{TEST_NGINX_SERVER_PORT},
                                  Proto => 'tcp', Timeout => 5)
        or die "connect: $!\n";
    print $k "GET /plain HTTP/1.1\r\nHost: localhost\r\n\r\n";
    my $got = '';
    while ($got !~ /\r\n\r\nplain\n/) {
        sysread($k, $got, 4096, length $got) or die "keep-alive: $!\n";
    }

    # the admission waits for Redis's clock (TIME's answer is gated)
    my $t0 = Time::HiRes::time();
    my $a = ::send_models();
    Time::HiRes::sleep(0.2);
    ::fill_fifo();

    # the worker stopped, a request on the keep-alive connection, then
    # TIME's answer: one epoll_wait() returns both, in this order
    kill 'STOP', $w;
    my $stopped = ::stopped($w);
    print $k "GET /stall HTTP/1.1\r\nHost: localhost\r\n"
        . "Connection: close\r\n\r\n";
    Time::HiRes::sleep(0.1);
    unlink $::GATE2;
    Time::HiRes::sleep(0.4);
    kill 'CONT', $w;

    my $blocked = 0;
    my $t1 = Time::HiRes::time();
    while (Time::HiRes::time() < $t1 + 0.5) {
        if (::writing($w)) { $blocked = 1; last }
        Time::HiRes::sleep(0.002);
    }
    Time::HiRes::sleep($t1 + 2 - Time::HiRes::time());
    ::drain_fifo();
    my $sa = ::read_answer($a);
    my $ta = Time::HiRes::time() - $t0;
    ::read_answer($k);
    ::drain_fifo();

    if (!$blocked || !$stopped) {
        Test::More::diag("TEST 2 not run as meant: the worker did not "
                         . ($stopped ? "block in its access log"
                                     : "stop within a second"));
        return 1;
    }
    return (0, sprintf("the request that waited for Redis's clock got "
                       . "%d after %.3f s, want 200", $sa, $ta))
        unless $sa == 200;
    return 1;
}
--- no_error_log
past its deadline



=== TEST 3: llm_redis behind a cluster proxy that does not pass TIME (Redis Cluster Proxy answers TIME and SCRIPT with an error; the module's own log line for a Cluster node says "use a standalone Redis or a cluster proxy"), timeout=1s on_error=deny: Redis's clock is never read, every admission waits for it until its time is up and is denied (503 after 1 s), request after request, though every script call would be answered at once (EVALSHA's NOSCRIPT falls back to EVAL, and each admission's answer tells Redis's clock).  SPEC 3: on_error applies while Redis is unreachable or slow; SPEC 9: a stalled Redis delays requests by at most timeout -- this one delays every request by timeout, and admits none
--- workers: 1
--- http_config eval: ::conf(3, 'timeout=1s', $::LP3)
--- config eval: $::Gateway
--- request
GET /plain
--- timeout: 30
--- check eval
sub {
    # the connection is up and its TIME answered (with an error)
    Time::HiRes::sleep(0.3);
    my @got;
    for (1 .. 3) {
        my ($s, $t) = ::get_models();
        push @got, sprintf("%d after %.3f s", $s, $t);
        return (0, "requests got: " . join(', ', @got) . "; want 200")
            unless $s == 200;
    }
    my $sum = window_total($::RP, "$::P-3:{acct:carol}:w:requests:1m");
    return (0, "Redis's window holds $sum, want 3") unless $sum == 3;
    return 1;
}
--- no_error_log
past its deadline
