# llm_redis timeout bounds all that one request waits for Redis (SPEC 3,
# SPEC 9: "a stalled Redis delays only requests that need it, by at most
# timeout"): a key read from Redis (two HMGETs), then the admission (or
# llm_usage's read), share one budget of timeout; a batch of admissions
# lets each request go at its own deadline.
#
# Redis stalls through a link of this file's own (stall_link below): a
# command that reaches Redis while it runs freezes it (SIGSTOP) for the
# next number of the schedule file (ms), then SIGCONT; commands that come
# meanwhile wait for the same SIGCONT.  So each step of a request takes
# at least its stall, whatever the machine's load: the old per-command
# timer let a request wait for the sum of its steps.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Redis;
use IO::Select ();
use IO::Socket::INET ();
use POSIX ();
use Time::HiRes ();

our $P    = "t095-$$-" . time;
our $ROOT = $Test::LLM::Nginx::ROOT;
our $CAROL = $Test::LLM::Keys::CAROL;

# a redis-server of this file's own (it is frozen), and the link to it
our $RP = free_port();
our $LP = free_port();
our $SCHEDULE = "$ROOT/t/servroot/redis-$RP/stalls";

# keys known to Redis only: name => [key, digest]
our %K = map { $_ => $Test::LLM::Keys::REDIS_ONLY{$_} } qw(zed yola);

redis_start($RP);
stall(());

our $LINK = stall_link($LP, $RP);

END { kill 'TERM', $LINK if $LINK }

# stall(ms, ...): the next commands that find Redis running freeze it
sub stall {
    open(my $fh, '>', "$SCHEDULE.tmp") or die "$SCHEDULE: $!";
    print $fh join(' ', @_), "\n";
    close $fh;
    rename "$SCHEDULE.tmp", $SCHEDULE or die "$SCHEDULE: $!";
}

sub next_stall {
    open(my $fh, '<', $SCHEDULE) or return 0;
    my @ms = split ' ', (<$fh> // '');
    close $fh;
    return 0 unless @ms;
    my $ms = shift @ms;
    stall(@ms);
    return $ms;
}

# a TCP link to Redis on 127.0.0.1:$port that freezes it (see the top)
sub stall_link {
    my ($port, $rport) = @_;

    my $rpid = redis_pid($rport);
    my $ls = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                   LocalPort => $port, Listen => 64,
                                   ReuseAddr => 1)
        or die "stall link on $port: $!\n";

    my $parent = $$;
    my $pid = fork // die "fork: $!\n";

    if ($pid) {
        close $ls;
        return $pid;
    }

    my $sel = IO::Select->new($ls);
    my (%peer, %client);
    my $until = 0;

    $SIG{TERM} = sub { kill 'CONT', $rpid; POSIX::_exit(0) };

    while (1) {
        my $now = Time::HiRes::time();

        # the test has gone without stopping its link
        if (getppid() != $parent) {
            kill 'CONT', $rpid;
            POSIX::_exit(0);
        }

        if ($until && $now >= $until) {
            kill 'CONT', $rpid;
            $until = 0;
        }

        my @ready = $sel->can_read($until ? $until - $now : 1);

        for my $s (@ready) {
            if ($s == $ls) {
                my $c = $ls->accept or next;
                my $r = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                              PeerPort => $rport);
                if (!$r) {
                    close $c;
                    next;
                }
                $peer{fileno $c} = $r;
                $peer{fileno $r} = $c;
                $client{fileno $c} = 1;
                $sel->add($c, $r);
                next;
            }

            my $other = $peer{fileno $s} or next;
            my $n = sysread($s, my $buf, 65536);

            if (!$n) {
                $sel->remove($s, $other);
                delete $peer{fileno $_} for $s, $other;
                delete $client{fileno $_} for $s, $other;
                close $s;
                close $other;
                next;
            }

            if ($client{fileno $s} && !$until) {
                my $ms = next_stall();
                if ($ms > 0) {
                    kill 'STOP', $rpid;
                    $until = Time::HiRes::time() + $ms / 1000;
                }
            }

            my $off = 0;
            while ($off < $n) {
                my $w = syswrite($other, $buf, $n - $off, $off);
                last unless defined $w;
                $off += $w;
            }
        }
    }
}

sub key  { $K{$_[0]}[0] }

sub key_record {
    my ($block, $who, @fv) = @_;
    redis_cli($RP, 'HSET', "$P-$block:{key:$K{$who}[1]}", @fv);
}

sub conf {
    my ($block, $extra) = @_;
    return $Test::LLM::Keys::TIERS
        . "llm_tier roomy requests=1000/m;\n"
        . "llm_redis 127.0.0.1:$LP prefix=$P-$block: $extra;\n";
}

our $Gateway = <<'_EOC_';
location /v1/ {
    llm_gateway on;
    llm_default_tier roomy;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    add_header X-Result "$llm_limit_result" always;
}
location = /usage {
    llm_default_tier roomy;
    llm_usage;
}
location = /plain {
    return 200 "plain\n";
}
_EOC_

# one request with "who"'s key (a name of %K, or a key; undef: none):
# [status, seconds, end, X-Result, the response]
sub timed {
    my ($who, $path) = @_;
    my $t = Time::HiRes::time();
    my $r = http_request("GET " . ($path // '/v1/models'),
                         more_headers => defined $who
                             ? "Authorization: Bearer "
                               . ($K{$who} ? key($who) : $who)
                             : undef);
    my $end = Time::HiRes::time();
    return [$r->{status} // 'none', $end - $t, $end,
            $r->{header}{'x-result'} // '', $r];
}

# the same, started "delay" seconds from now in a child: a sub that
# waits for it and returns what timed() returns (without the response)
sub timed_later {
    my ($delay, $who, $path) = @_;
    pipe(my $rd, my $wr) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        close $rd;
        Time::HiRes::sleep($delay);
        my $t = timed($who, $path);
        print $wr join(' ', @$t[0 .. 3]), "\n";
        close $wr;
        POSIX::_exit(0);
    }
    close $wr;
    return sub {
        my $line = <$rd> // '';
        waitpid $pid, 0;
        chomp $line;
        return [split / /, $line, 4];
    };
}

sub window_sum {
    my ($block, $acct) = @_;
    return window_total($RP, "$P-$block:{acct:$acct}:w:requests:1m");
}

# waits (5 s at most) until the window holds n
sub wait_sum {
    my ($block, $acct, $n) = @_;
    return wait_until(5, sub { window_sum($block, $acct) >= $n });
}

key_record(1, 'zed', account => 'zed');
key_record(2, 'zed', account => 'zed');
key_record(3, 'zed', account => 'acme');
key_record(3, 'yola', account => 'acme');
key_record($_, 'zed', account => 'zed') for 4 .. 6;

run_tests();

kill 'TERM', $LINK;
waitpid $LINK, 0;
$LINK = 0;

__DATA__

=== TEST 1: timeout=200ms, Redis frozen 120 ms at each command: the key lookup's two HMGETs no longer add up (503 by the timeout, not 200 after three stalls); the lookup goes on alone and is cached, so the next request waits for its admission only and Redis counts it
--- workers: 1
--- http_config eval: ::conf(1, "timeout=200ms")
--- config eval: $::Gateway
--- request
GET /plain
--- timeout: 10
--- check eval
sub {
    # the scripts are loaded, Redis's clock is known
    my $warm = ::timed($::CAROL);

    # 120 ms: two stalls (240 ms) pass the timeout, one leaves 80 ms for
    # the link and the worker (with 160 ms, a loaded machine took more
    # than the 40 ms left: the lookup's second HMGET timed out, the key
    # was not cached and the next request was a 503 too)
    ::stall(120, 120, 120, 120);
    my $a = ::timed('zed');
    Time::HiRes::sleep(0.3);
    ::stall(120, 120);
    my $b = ::timed('zed');
    ::stall();
    Time::HiRes::sleep(1.5);
    my $sum = ::window_sum(1, 'zed');

    my $got = sprintf "%s | %s %s | %s %s | %d", $warm->[0], $a->[0],
                      $a->[3], $b->[0], $b->[3], $sum;
    Test::More::note(sprintf "TEST 1: %.3fs %.3fs", $a->[1], $b->[1]);
    return (0, "got $got") unless $got eq '200 | 503 store_error | 200 passed | 1';
    return (0, "the body: $a->[4]{body}")
        unless $a->[4]{body} =~ /"code":"store_unavailable"/;
    for my $t ($a, $b) {
        return (0, sprintf "a request took %.3fs", $t->[1]) if $t->[1] > 0.4;
    }
    return 1;
}
--- error_log
key lookup failed (no answer within llm_redis timeout)



=== TEST 2: timeout=1s, Redis frozen 400 ms at each HMGET of the key lookup, then 2 s at the admission: the admission gets what is left, the request is admitted by the zone (on_error=local) within the timeout, a plain location answers at once, and after SIGCONT Redis holds it once (replayed; the late script changed nothing)
--- workers: 1
--- http_config eval: ::conf(2, "timeout=1s on_error=local")
--- config eval: $::Gateway
--- request
GET /plain
--- timeout: 15
--- check eval
sub {
    # the scripts are loaded, Redis's clock is known
    my $warm = ::timed($::CAROL);

    ::stall(400, 400, 2000);
    my $later = ::timed_later(0.9, undef, '/plain');
    my $a = ::timed('zed');
    my $plain = $later->();
    ::stall();

    ::wait_sum(2, 'zed', 1);
    Time::HiRes::sleep(1.5);
    my $sum = ::window_sum(2, 'zed');

    my $got = sprintf "%s | %s %s | %s | %d", $warm->[0], $a->[0], $a->[3],
                      $plain->[0], $sum;
    Test::More::note(sprintf "TEST 2: %.3fs, /plain %.3fs", $a->[1],
                             $plain->[1]);
    return (0, "got $got") unless $got eq '200 | 200 passed | 200 | 1';
    return (0, sprintf "the request took %.3fs", $a->[1]) if $a->[1] > 1.3;
    return (0, sprintf "/plain took %.3fs", $plain->[1]) if $plain->[1] > 0.2;
    return 1;
}
--- error_log
no decision for "zed" (no answer in time), on_error applies



=== TEST 3: timeout=1s, one account, two keys from Redis, the second asked 200 ms after the first: both lookups are answered together, both admissions go in one batch frozen for 2 s, and each request leaves at its own deadline (zone, on_error=local), the first first; Redis then holds both once
--- workers: 1
--- http_config eval: ::conf(3, "timeout=1s on_error=local connections=1")
--- config eval: $::Gateway
--- request
GET /plain
--- timeout: 15
--- check eval
sub {
    my $warm = ::timed($::CAROL);

    ::stall(450, 300, 2000);
    my $later = ::timed_later(0.2, 'yola');
    my $a = ::timed('zed');
    my $b = $later->();
    ::stall();

    ::wait_sum(3, 'acme', 2);
    Time::HiRes::sleep(1.5);
    my $sum = ::window_sum(3, 'acme');

    my $got = sprintf "%s | %s %s | %s %s | %d", $warm->[0], $a->[0],
                      $a->[3], $b->[0], $b->[3], $sum;
    Test::More::note(sprintf "TEST 3: %.3fs %.3fs, ends %.3fs apart",
                             $a->[1], $b->[1], $b->[2] - $a->[2]);
    return (0, "got $got")
        unless $got eq '200 | 200 passed | 200 passed | 2';
    for my $t ($a, $b) {
        return (0, sprintf "a request took %.3fs", $t->[1]) if $t->[1] > 1.3;
    }
    return (0, sprintf "the second ended %.3fs after the first",
                       $b->[2] - $a->[2])
        if $b->[2] - $a->[2] < 0.05;
    return 1;
}



=== TEST 4: llm_usage, timeout=1s, Redis frozen 400 ms at each HMGET, then 2 s at the usage read: the read gets what is left, the zone's figures answer within the timeout
--- workers: 1
--- http_config eval: ::conf(4, "timeout=1s")
--- config eval: $::Gateway
--- request
GET /plain
--- timeout: 15
--- check eval
sub {
    my $warm = ::timed($::CAROL, '/usage');

    ::stall(400, 400, 2000);
    my $a = ::timed('zed', '/usage');
    ::stall();
    Time::HiRes::sleep(1.5);
    Test::More::note(sprintf "TEST 4: %.3fs", $a->[1]);

    return (0, "got $a->[0]: $a->[4]{body}")
        unless $a->[0] eq '200' && $a->[4]{body} =~ /"account":"zed"/;
    return (0, sprintf "the request took %.3fs", $a->[1]) if $a->[1] > 1.3;
    return 1;
}



=== TEST 5: batch=1 and on_error=deny, timeout=1s, Redis frozen 400 ms at each HMGET, then 2 s at the admission: 503 store_unavailable within the timeout
--- workers: 1
--- http_config eval: ::conf(5, "timeout=1s on_error=deny batch=1")
--- config eval: $::Gateway
--- request
GET /plain
--- timeout: 15
--- check eval
sub {
    my $warm = ::timed($::CAROL);

    ::stall(400, 400, 2000);
    my $a = ::timed('zed');
    ::stall();
    Time::HiRes::sleep(1.5);
    my $sum = ::window_sum(5, 'zed');
    Test::More::note(sprintf "TEST 5: %.3fs", $a->[1]);

    my $got = sprintf "%s | %s %s | %d", $warm->[0], $a->[0], $a->[3], $sum;
    return (0, "got $got") unless $got eq '200 | 503 store_error | 0';
    return (0, "the body: $a->[4]{body}")
        unless $a->[4]{body} =~ /"code":"store_unavailable"/;
    return (0, sprintf "the request took %.3fs", $a->[1]) if $a->[1] > 1.3;
    return 1;
}



=== TEST 6: timeout=1s, the first admission of a worker (its deadline on Redis's clock comes from the connection's TIME): Redis frozen 450 ms at each HMGET, then 500 ms at the admission, which Redis runs after the request has gone to the zone (on_error=local): it changes nothing (past its deadline), and Redis holds the request once (replayed)
--- workers: 1
--- http_config eval: ::conf(6, "timeout=1s on_error=local")
--- config eval: $::Gateway
--- request
GET /plain
--- timeout: 15
--- check eval
sub {
    ::stall(450, 450, 500);
    my $a = ::timed('zed');
    ::wait_sum(6, 'zed', 1);
    ::stall();
    Time::HiRes::sleep(2);
    my $sum = ::window_sum(6, 'zed');
    Test::More::note(sprintf "TEST 6: %.3fs", $a->[1]);

    my $got = sprintf "%s %s | %d", $a->[0], $a->[3], $sum;
    return (0, "got $got") unless $got eq '200 passed | 1';
    return (0, sprintf "the request took %.3fs", $a->[1]) if $a->[1] > 1.3;
    return 1;
}




=== TEST 7: timeout=1s, a fresh start (another nginx) while Redis is frozen for 4 s from its first command: no TIME has answered, so the admission waits in the worker for Redis's clock; at its deadline it goes to the zone (on_error=local) and is never sent, and Redis, thawed, holds the request once (replayed). Before, an admission sent before Redis's clock was known had no deadline, and Redis counted it twice
--- workers: 1
--- http_config eval: ::conf(7, "timeout=1s on_error=local")
--- config eval: $::Gateway
--- request
GET /plain
--- timeout: 20
--- check eval
sub {
    my $port = free_port();
    ::stall(4000);
    start_extra_nginx($port);
    # its worker has connected, and its first command froze Redis
    Time::HiRes::sleep(0.3);
    my $t = Time::HiRes::time();
    my $r = http_request("GET /v1/models", port => $port,
                         more_headers => "Authorization: Bearer $::CAROL");
    my $took = Time::HiRes::time() - $t;
    ::wait_sum(7, 'carol', 1);
    Time::HiRes::sleep(2);
    my $sum = ::window_sum(7, 'carol');
    my $logs = stop_extra_nginx();
    my $got = sprintf "%s %s | %d", $r->{status} // 'none',
                      $r->{header}{'x-result'} // '', $sum;
    return (0, "got $got") unless $got eq '200 passed | 1';
    return (0, sprintf "the request took %.3fs", $took) if $took > 1.3;
    return (0, "extra nginx: $1") if $logs =~ /(\[(?:alert|crit|emerg)\].*)/;
    return 1;
}
