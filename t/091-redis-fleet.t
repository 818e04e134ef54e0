# llm_redis across nodes and faults: three nginx on one Redis count one
# window exactly; Redis stopped, restarted, frozen (SIGSTOP), refusing the
# password, out of memory, flushed of its scripts, answering errors; unix
# sockets and SELECT.  Afterwards no connection is left in any Redis.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Client ();
use Test::LLM::Redis qw(:DEFAULT gw statuses);    # carol's GET /v1/models
use Test::More ();
use Time::HiRes ();

our $CAROL = $Test::LLM::Keys::CAROL;
our $P     = "t091-$$-" . time;
our $ROOT  = $Test::LLM::Nginx::ROOT;

# redis-servers of this file's own: plain, with a password, out of
# memory, and one that also listens on a unix socket
our $RP   = free_port();
our $AP   = free_port();
our $OP   = free_port();
our $UP   = free_port();
our $SOCK = "$ROOT/t/servroot/redis-$UP/redis.sock";

redis_start($RP);
redis_start($AP, '--requirepass', 'sesame');
redis_start($OP, '--maxmemory', '100kb', '--maxmemory-policy', 'noeviction');
redis_start($UP, '--unixsocket', $SOCK, '--unixsocketperm', '700');

our $Tiers = $Test::LLM::Keys::TIERS
    . "llm_tier fleet requests=20/m;\n"
    . "llm_tier five requests=5/m;\n"
    . "llm_tier pair requests=5/m concurrency=2;\n";

sub conf {
    my ($block, $redis) = @_;
    return $Tiers . "llm_redis $redis prefix=$P-$block:;\n";
}

our $Gateway = <<'_EOC_';
location /v1/ {
    llm_gateway on;
    llm_default_tier five;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    add_header X-Result "$llm_limit_result" always;
}
location = /plain {
    return 200 "plain\n";
}
_EOC_

# what carol's requests:1m window of block holds in the Redis on port
sub window_sum {
    my ($port, $block, @auth) = @_;
    return window_total($port, "$P-$block:{acct:carol}:w:requests:1m", @auth);
}

# waits (5 s at most) until the window of block holds n
sub wait_sum {
    my ($block, $n) = @_;
    return wait_until(5, sub { window_sum($RP, $block) >= $n });
}

run_tests(extra => 1);

# every nginx has quit: no connection of ours is left in any Redis
my %left;
for my $port ($RP, $AP, $OP, $UP, $ENV{TEST_NGINX_REDIS_PORT}) {
    my @auth = $port == $AP ? ('-a', 'sesame', '--no-auth-warning') : ();
    for (1 .. 100) {
        $left{$port} = redis_clients($port, @auth);
        last if !$left{$port};
        select undef, undef, undef, 0.05;
    }
}
Test::More::is(join(' ', map { $left{$_} } sort keys %left),
               join(' ', map { 0 } keys %left),
               'no Redis connection left after the run');

__DATA__

=== TEST 1: three nginx nodes on one Redis, 300 concurrent requests, requests=20/m: exactly 20 admitted
--- http_config eval
$::Tiers . "llm_redis 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} prefix=$::P-1: timeout=5s on_error=deny;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier fleet;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /plain {
    return 200 "plain\n";
}
--- request
GET /plain
--- timeout: 30
--- check eval
sub {
    my @ports = ($ENV{TEST_NGINX_SERVER_PORT}, free_port(), free_port());
    start_extra_nginx($_) for @ports[1, 2];

    my $req = Test::LLM::Client::build_request("GET /v1/models",
        more_headers => "Authorization: Bearer $::CAROL");

    my @res = Test::LLM::Client::exchange_all(
        port => $ports[0], concurrency => 150,
        exchanges => [ map { { %$req, port => $ports[$_ % 3],
                               timeout => 20 } } 0 .. 299 ]);

    my $logs = stop_extra_nginx();

    my $got = Test::LLM::Client::status_counts(@res);

    return (0, "extra nodes' logs: $1")
        if $logs =~ /(.*(?:\[alert\]|\[crit\]|\[emerg\]|AddressSanitizer|exited on signal).*)/;
    return (0, "got $got") unless $got eq '200=20 429=280';
    my $sum = ::window_sum($ENV{TEST_NGINX_REDIS_PORT}, 1);
    return $sum == 20 ? 1 : (0, "window holds $sum");
}



=== TEST 2: Redis stopped: the zone counts (on_error=local) from what Redis held (3 of requests=5/m: two more, not a whole window more, t/128); restarted (empty: no persistence): the zone's two come back to Redis, which counts again; one log line per switch
--- workers: 1
--- http_config eval: ::conf(2, "127.0.0.1:$::RP timeout=200ms")
--- config eval: $::Gateway
--- request
GET /plain
--- timeout: 15
--- check eval
sub {
    my ($c) = @_;
    my $a = ::statuses(3);
    my $s1 = ::window_sum($::RP, 2);
    redis_stop($::RP);
    my $b = ::statuses(6);
    redis_start($::RP);
    ::wait_sum(2, 2);
    my $d = ::statuses(4);
    my $s2 = ::window_sum($::RP, 2);
    my $log = errlog();
    my $got = "$a | $b | $d | $s1 $s2 | " . ::switches($log);
    my $want = '200 200 200 | 200 200 429 429 429 429 | '
               . '200 200 200 429 | 3 5 | 1 down, 1 up';
    return $got eq $want ? 1 : (0, "got  $got\nwant $want");
}



=== TEST 3: Redis stopped with on_error=deny: 503 store_unavailable, then 200 when it is back
--- workers: 1
--- http_config eval: ::conf(3, "127.0.0.1:$::RP timeout=200ms on_error=deny")
--- config eval: $::Gateway
--- request
GET /plain
--- check eval
sub {
    my $a = ::statuses(1);
    redis_stop($::RP);
    my $r = ::gw();
    my $b = $r->{status};
    redis_start($::RP);
    sleep 1.5;
    my $d = ::statuses(2);
    my $got = "$a | $b | $d";
    return (0, "got $got") unless $got eq '200 | 503 | 200 200';
    return $r->{body} =~ /"code":"store_unavailable"/
           ? 1 : (0, "body $r->{body}");
}



=== TEST 4: Redis frozen (SIGSTOP): a plain location answers at once, gateway requests within the timeout, then Redis counts again (with the five counted locally)
--- workers: 1
--- http_config eval: ::conf(4, "127.0.0.1:$::RP timeout=300ms")
--- config eval: my $g = $::Gateway; $g =~ s/llm_default_tier five/llm_default_tier fleet/; $g
--- request
GET /plain
--- timeout: 10
--- check eval
sub {
    my $pid = ::redis_pid($::RP);
    my $first = ::statuses(1);
    kill 'STOP', $pid;

    my $gw = Test::LLM::Client::build_request("GET /v1/models",
        more_headers => "Authorization: Bearer $::CAROL");
    my $plain = Test::LLM::Client::build_request("GET /plain");

    my @res = Test::LLM::Client::exchange_all(
        port => $ENV{TEST_NGINX_SERVER_PORT}, concurrency => 6,
        exchanges => [ map { ($gw, $plain) } 1 .. 3 ]);

    my @more = map { my $t = Time::HiRes::time(); my $r = ::gw();
                    [$r, Time::HiRes::time() - $t] } 1 .. 2;

    kill 'CONT', $pid;
    ::wait_sum(4, 6);
    my $before = ::window_sum($::RP, 4);
    my $last = ::statuses(1);
    my $after = ::window_sum($::RP, 4);

    for my $i (0 .. $#res) {
        my $r = $res[$i];
        return (0, "response $i: " . ($r->{error} // $r->{status}))
            if ($r->{status} // 0) != 200;
        my $limit = $i % 2 ? 0.15 : 0.3 + 0.5;
        return (0, sprintf "response %d took %.3fs", $i, $r->{elapsed})
            if $r->{elapsed} > $limit;
    }
    for my $m (@more) {
        return (0, sprintf "a gateway request took %.3fs", $m->[1])
            if $m->[1] > 0.8 || $m->[0]{status} != 200;
    }
    return (0, "counted $before -> $after")
        unless "$first $last" eq '200 200' && $before == 6
               && $after == $before + 1;
    return 1;
}



=== TEST 5: a wrong password: 503 with on_error=deny, the reply in the error log
--- http_config eval: ::conf(5, "127.0.0.1:$::AP on_error=deny password_file=$ENV{TEST_NGINX_SERVROOT}/redis.pass")
--- config eval: $::Gateway
--- user_files
>>> redis.pass
open-sesame
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code: 503
--- response_body_like: "code":"store_unavailable"
--- error_log eval
qr/llm_redis "[^"]+" failed: (WRONGPASS|ERR invalid password)/



=== TEST 6: no password where Redis wants one: NOAUTH, on_error=deny
--- http_config eval: ::conf(6, "127.0.0.1:$::AP on_error=deny")
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code: 503
--- error_log eval
qr/llm_redis "[^"]+" failed: (NOAUTH|ERR Protocol error: unauthenticated)/



=== TEST 7: password_file and db=3: AUTH and SELECT on every connection
--- http_config eval: ::conf(7, "127.0.0.1:$::AP timeout=1s on_error=deny db=3 password_file=$ENV{TEST_NGINX_SERVROOT}/redis.pass")
--- config eval: $::Gateway
--- user_files
>>> redis.pass
sesame
--- request eval
[("GET /v1/models") x 2]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[200, 200]
--- check eval
sub {
    my @auth = ('-a', 'sesame', '--no-auth-warning');
    my $db3 = ::window_sum($::AP, 7, @auth, '-n', 3);
    my $db0 = ::window_sum($::AP, 7, @auth);
    return "$db3 $db0" eq '2 0' ? 1 : (0, "db3 $db3, db0 $db0");
}
--- no_error_log
llm_redis



=== TEST 8: Redis out of memory: a clear error, on_error=local decides
--- http_config eval: ::conf(8, "127.0.0.1:$::OP")
--- config eval: $::Gateway
--- request eval
[("GET /v1/models") x 6]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[200, 200, 200, 200, 200, 429]
--- error_log eval
qr/llm_redis "[^"]+" failed: .*OOM/



=== TEST 9: SCRIPT FLUSH: NOSCRIPT is answered by EVAL, nothing is lost, nothing logged
--- http_config eval: ::conf(9, "127.0.0.1:$::RP timeout=1s on_error=deny")
--- config eval: $::Gateway
--- request
GET /plain
--- check eval
sub {
    my $a = ::statuses(2);
    redis_cli($::RP, 'SCRIPT', 'FLUSH');
    my $b = ::statuses(2);
    my $sum = ::window_sum($::RP, 9);
    return "$a | $b | $sum" eq '200 200 | 200 200 | 4'
           ? 1 : (0, "got $a | $b | $sum");
}
--- no_error_log
llm_redis



=== TEST 10: an error from the script (a key of the wrong type): on_error=deny, logged once, recovers
--- workers: 1
--- http_config eval: ::conf(10, "127.0.0.1:$::RP timeout=1s on_error=deny")
--- config eval: $::Gateway
--- request
GET /plain
--- check eval
sub {
    my $key = "$::P-10:{acct:carol}:w:requests:1m";
    redis_cli($::RP, 'SET', $key, 'garbage');
    my $a = ::statuses(2);
    redis_cli($::RP, 'DEL', $key);
    my $b = ::statuses(1);
    my $log = errlog();
    my $got = "$a | $b | " . ::switches($log);
    return (0, "got $got") unless $got eq '503 503 | 200 | 1 down, 1 up';
    return $log =~ /failed: .*WRONGTYPE/ ? 1 : (0, 'no WRONGTYPE in the log');
}



=== TEST 11: a unix socket
--- http_config eval: ::conf(11, "unix:$::SOCK timeout=1s on_error=deny")
--- config eval: $::Gateway
--- request eval
[("GET /v1/models") x 2]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[200, 200]
--- check eval
sub {
    my $sum = ::window_sum($::UP, 11);
    return $sum == 2 ? 1 : (0, "sum $sum");
}



=== TEST 12: usage counted locally during an outage is added to Redis when it is back (SPEC 9)
--- workers: 1
--- http_config eval: ::conf(12, "127.0.0.1:$::RP timeout=200ms")
--- config eval: $::Gateway
--- request
GET /plain
--- timeout: 15
--- check eval
sub {
    my ($c) = @_;
    my $a = ::statuses(1);
    redis_stop($::RP);
    my $b = ::statuses(3);
    redis_start($::RP);        # empty: the first request is forgotten
    ::wait_sum(12, 3);
    my $sum = ::window_sum($::RP, 12);
    my $d = ::statuses(3);
    my $after = ::window_sum($::RP, 12);
    my $log = errlog();
    my $got = "$a | $b | $sum | $d | $after";
    return (0, "got $got")
        unless $got eq '200 | 200 200 200 | 3 | 200 200 429 | 5';
    return $log =~ /\[notice\].*usage counted locally during the outage is in Redis now \([12] batches\)/
           ? 1 : (0, 'no replay line in the log');
}



=== TEST 13: a client that goes away while its admission waits for Redis (SIGSTOP): the request ends at once, nothing is proxied, and what Redis grants later goes back (lease and charge)
--- workers: 1
--- http_config eval: ::conf(13, "127.0.0.1:$::RP timeout=5s on_error=deny")
--- config eval: my $g = $::Gateway; $g =~ s/llm_default_tier five/llm_default_tier pair/; $g
--- request
GET /plain
--- timeout: 15
--- check eval
sub {
    my ($c) = @_;
    my $pid = ::redis_pid($::RP);
    my $first = ::statuses(1);
    kill 'STOP', $pid;
    my @gone = Test::LLM::Client::exchange_all(
        port => $ENV{TEST_NGINX_SERVER_PORT}, concurrency => 2,
        exchanges => [ map { { %{ Test::LLM::Client::build_request(
                                  "GET /v1/models", more_headers =>
                                  "Authorization: Bearer $::CAROL") },
                               timeout => 0.5 } } 1 .. 2 ]);
    select undef, undef, undef, 0.3;
    kill 'CONT', $pid;
    my ($conc, $sum);
    for (1 .. 50) {
        $conc = redis_cli($::RP, 'ZCARD', "$::P-13:{acct:carol}:conc") + 0;
        $sum = ::window_sum($::RP, 13);
        last if $conc == 0 && $sum == 1;
        select undef, undef, undef, 0.1;
    }
    my $log = errlog();
    my $closed = () = $log =~ /\[info\].*client prematurely closed connection/g;
    my $got = "$first | " . join(' ', map { $_->{status} // 'gone' } @gone)
              . " | leases $conc, window $sum, closed $closed";
    return (0, "got $got") unless $got eq
        '200 | gone gone | leases 0, window 1, closed 2';
    return $log =~ /(\[(?:warn|error|crit|alert)\].*)/
           ? (0, "logged: $1") : 1;
}
--- mock_count: 1


=== TEST 14: admissions of one account in one loop iteration are coalesced: fewer script calls than requests, every one counted once
--- http_config eval
$::Tiers . "llm_tier many requests=1000/m;\n"
. "llm_redis 127.0.0.1:$::RP prefix=$::P-14: timeout=5s on_error=deny;\n"
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
--- timeout: 30
--- check eval
sub {
    ::redis_cli($::RP, 'CONFIG', 'RESETSTAT');

    my $req = Test::LLM::Client::build_request("GET /v1/models",
        more_headers => "Authorization: Bearer $::CAROL");

    my @res = Test::LLM::Client::exchange_all(
        port => $ENV{TEST_NGINX_SERVER_PORT}, concurrency => 64,
        exchanges => [ map { { %$req, timeout => 20 } } 1 .. 300 ]);

    my $got = Test::LLM::Client::status_counts(@res);
    return (0, "got $got") unless $got eq '200=300';

    my $stats = ::redis_cli($::RP, 'INFO', 'commandstats');
    my ($calls) = $stats =~ /cmdstat_time:calls=(\d+)/;
    $calls //= 0;

    my $sum = ::window_sum($::RP, 14);

    Test::More::note("$calls script runs for 300 admissions");
    return (0, "window holds $sum") unless $sum == 300;
    return $calls > 0 && $calls < 300 ? 1
           : (0, "$calls script runs for 300 admissions");
}



=== TEST 15: batch=1 sends one script call per admission
--- http_config eval
$::Tiers . "llm_tier many requests=1000/m;\n"
. "llm_redis 127.0.0.1:$::RP prefix=$::P-15: timeout=5s batch=1;\n"
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
--- timeout: 30
--- check eval
sub {
    ::redis_cli($::RP, 'CONFIG', 'RESETSTAT');

    my $req = Test::LLM::Client::build_request("GET /v1/models",
        more_headers => "Authorization: Bearer $::CAROL");

    my @res = Test::LLM::Client::exchange_all(
        port => $ENV{TEST_NGINX_SERVER_PORT}, concurrency => 32,
        exchanges => [ map { { %$req, timeout => 20 } } 1 .. 100 ]);

    my $ok = grep { ($_->{status} // 0) == 200 } @res;
    return (0, "$ok of 100 admitted") unless $ok == 100;

    my $stats = ::redis_cli($::RP, 'INFO', 'commandstats');
    # each script run asks TIME once (EVALSHA also counts NOSCRIPT)
    my ($calls) = $stats =~ /cmdstat_time:calls=(\d+)/;
    $calls //= 0;
    return $calls == 100 ? 1 : (0, "$calls script runs: $stats");
}



=== TEST 16: batch is 1..64
--- http_config
llm_zone llm:1m;
llm_redis 127.0.0.1:6379 batch=65;
--- config
--- must_die
--- error_log
invalid value "batch=65"



=== TEST 17: no Redis and on_error=deny: every admission of a batch gets 503 at once
--- workers: 1
--- http_config eval: ::conf(17, "127.0.0.1:" . free_port() . " on_error=deny")
--- config eval: my $g = $::Gateway; $g =~ s/llm_default_tier five/llm_default_tier fleet/; $g
--- request
GET /plain
--- timeout: 10
--- check eval
sub {
    my $gw = Test::LLM::Client::build_request("GET /v1/models",
        more_headers => "Authorization: Bearer $::CAROL");

    my @res = Test::LLM::Client::exchange_all(
        port => $ENV{TEST_NGINX_SERVER_PORT}, concurrency => 20,
        exchanges => [ map { { %$gw, timeout => 5 } } 1 .. 40 ]);

    my $got = Test::LLM::Client::status_counts(@res);
    return $got eq '503=40' ? 1 : (0, "got $got");
}
--- error_log
llm_redis
