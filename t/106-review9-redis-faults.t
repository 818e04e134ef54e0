# Review 9: Redis fleet mode under production faults (a real redis-server
# each time).  Each block is a reproducer of what the review found (each
# failed before its fix); it says what an operator or a user sees and
# what SPEC says.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Client ();
use Time::HiRes ();

our $CAROL = $Test::LLM::Keys::CAROL;
our $P     = "t106-$$-" . time;
our $ROOT  = $Test::LLM::Nginx::ROOT;

# this file's own redis-servers (ports 6492..6499 are this review's)
our $RP = 6492;
our $AP = 6493;

redis_start($RP);
redis_start($AP, '--requirepass', 'sesame');

our @AUTH = ('-a', 'sesame', '--no-auth-warning');

our $Tiers = $Test::LLM::Keys::TIERS
    . "llm_tier five requests=5/m;\n"
    . "llm_tier many requests=1000/m;\n"
    . "llm_tier pair requests=1000/m concurrency=2;\n";

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

sub gw {
    return http_request("GET /v1/models",
                        more_headers => "Authorization: Bearer $CAROL");
}

sub statuses { join ' ', map { gw()->{status} // 'none' } 1 .. $_[0] }

sub errlog { Test::LLM::Nginx::_slurp(servroot() . '/logs/error.log') }

sub redis_pid {
    my ($port) = @_;
    open(my $fh, '<', "$ROOT/t/servroot/redis-$port/redis.pid") or die $!;
    my ($pid) = <$fh> =~ /(\d+)/;
    return $pid;
}

sub conns_received {
    my ($port, @auth) = @_;
    my $s = redis_cli($port, @auth, 'INFO', 'stats') // '';
    return $s =~ /total_connections_received:(\d+)/ ? $1 : -1;
}

# connections of nginx (not redis-cli's own) in a Redis
sub clients {
    my ($port, @auth) = @_;
    my $list = redis_cli($port, @auth, 'CLIENT', 'LIST') // '';
    return scalar grep { !/cmd=client/ } split /\n/, $list;
}

sub window_sum {
    my ($port, $block) = @_;
    my %h = split /\n/, redis_cli($port, 'HGETALL',
                                  "$P-$block:{acct:carol}:w:requests:1m");
    my $sum = 0;
    # the slots (numbers), not the running total "t", "c", "o"
    $sum += $h{$_} for grep { /^\d+$/ } keys %h;
    return $sum;
}

sub switches {
    my ($log) = @_;
    my $down = () = $log =~ /llm_redis "[^"]+" failed/g;
    my $up   = () = $log =~ /llm_redis "[^"]+" is back/g;
    return "$down down, $up up";
}

run_tests();

__DATA__

=== TEST 1: a database Redis does not have (db=99 of 16) behind a good password: the connection comes back after a growing backoff (100 ms to 1 s), and the error log says "failed" once (review9: AUTH's "OK" counted as Redis being back, which reset the backoff: a new connection every 100 ms, and two log lines each, "is back" and "failed" -- 40 connections and 80 lines in 2.5 s, per worker)
--- workers: 1
--- http_config eval: ::conf(1, "127.0.0.1:$::AP db=99 password_file=$ENV{TEST_NGINX_SERVROOT}/redis.pass")
--- config eval: $::Gateway
--- user_files
>>> redis.pass
sesame
--- request
GET /plain
--- timeout: 10
--- check eval
sub {
    my $c0 = ::conns_received($::AP, @::AUTH);
    my $a = ::statuses(3);
    Time::HiRes::sleep(2.5);
    my $n = ::conns_received($::AP, @::AUTH) - $c0;
    my $log = ::errlog();
    my $got = "$a | " . ::switches($log);
    return (0, "got $got") unless $got eq '200 200 200 | 1 down, 0 up';
    # two connections (the default), each at 0, .1, .3, .7, 1.5, 2.5 s
    return $n <= 14 ? 1 : (0, "$n connections in 2.5 s");
}
--- error_log
ERR DB index is out of range



=== TEST 2: probe: CLIENT KILL storm during a burst, on_error=local
--- http_config eval: ::conf(2, "127.0.0.1:$::RP timeout=300ms")
--- config eval: my $g = $::Gateway; $g =~ s/llm_default_tier five/llm_default_tier many/; $g
--- request
GET /plain
--- timeout: 30
--- check eval
sub {
    my $req = Test::LLM::Client::build_request("GET /v1/models",
        more_headers => "Authorization: Bearer $::CAROL");
    my $pid = fork();
    if (!$pid) {
        for (1 .. 15) {
            ::redis_cli($::RP, 'CLIENT', 'KILL', 'TYPE', 'normal');
            Time::HiRes::sleep(0.07);
        }
        exit 0;
    }
    my @res = Test::LLM::Client::exchange_all(
        port => $ENV{TEST_NGINX_SERVER_PORT}, concurrency => 20,
        exchanges => [ map { { %$req, timeout => 10 } } 1 .. 400 ]);
    waitpid $pid, 0;
    my %n;
    $n{ $_->{status} // 'error' }++ for @res;
    my $got = join ' ', map { "$_=$n{$_}" } sort keys %n;
    my ($sum, $t);
    for (1 .. 40) {
        my @kv = split /\n/, ::redis_cli($::RP, 'HGETALL',
                                         "$::P-2:{acct:carol}:w:requests:1m");
        my %h = @kv;
        $sum = 0;
        $sum += $h{$_} for grep { /^\d+$/ } keys %h;
        $t = $h{t} // '-';
        last if $sum >= 400;
        Time::HiRes::sleep(0.1);
    }
    Time::HiRes::sleep(1);
    my @kv = split /\n/, ::redis_cli($::RP, 'HGETALL',
                                     "$::P-2:{acct:carol}:w:requests:1m");
    my $log = ::errlog();
    return (0, "$got | window $sum (t $t) | " . ::switches($log) . " | kv @kv");
}



=== TEST 3: probe: reloads while Redis is down and while requests are in flight; connections afterwards
--- http_config eval: ::conf(3, "127.0.0.1:$::RP timeout=300ms")
--- config eval: my $g = $::Gateway; $g =~ s/llm_default_tier five/llm_default_tier many/; $g
--- mock eval
sub { return { delay => 1, body => '{"object":"list","data":[]}' } }
--- request
GET /plain
--- timeout: 40
--- check eval
sub {
    my $req = Test::LLM::Client::build_request("GET /v1/models",
        more_headers => "Authorization: Bearer $::CAROL");
    my $c0 = ::clients($::RP);
    redis_stop($::RP);
    my $pid = fork();
    if (!$pid) {
        Time::HiRes::sleep(0.3);
        reload_nginx();
        Time::HiRes::sleep(0.3);
        reload_nginx();
        exit 0;
    }
    my @res = Test::LLM::Client::exchange_all(
        port => $ENV{TEST_NGINX_SERVER_PORT}, concurrency => 10,
        exchanges => [ map { { %$req, timeout => 10 } } 1 .. 20 ]);
    waitpid $pid, 0;
    redis_start($::RP);
    Time::HiRes::sleep(2);
    my $c1 = ::clients($::RP);
    my @res2 = Test::LLM::Client::exchange_all(
        port => $ENV{TEST_NGINX_SERVER_PORT}, concurrency => 10,
        exchanges => [ map { { %$req, timeout => 10 } } 1 .. 10 ]);
    reload_nginx(); reload_nginx(); reload_nginx();
    Time::HiRes::sleep(2.5);
    my $c2 = ::clients($::RP);
    my %n;
    $n{ $_->{status} // 'error' }++ for @res, @res2;
    my $got = join ' ', map { "$_=$n{$_}" } sort keys %n;
    my @kv = split /\n/, ::redis_cli($::RP, 'HGETALL',
                                     "$::P-3:{acct:carol}:w:requests:1m");
    my $log = ::errlog();
    my $list = ::redis_cli($::RP, 'CLIENT', 'LIST');
    return (0, "$got | clients $c0 $c1 $c2 | kv @kv | " . ::switches($log) . "\n$list");
}



=== TEST 4: a reload while Redis stalls (SIGSTOP) in the new workers' handshake: the two requests that wait in vain are admitted by the zone (on_error=local) and only there; Redis, once it runs again, counts each request once and holds no concurrency slot of theirs (review9: the first one's admission, queued behind the connection's TIME, carried no deadline, since a new worker had not read Redis's clock yet: Redis ran it when it woke, and the zone's count was replayed on top -- 5 for 4 requests -- and its lease held one of the account's two concurrency slots for 60 s)
--- workers: 1
--- http_config eval: ::conf(4, "127.0.0.1:$::RP timeout=300ms")
--- config eval: my $g = $::Gateway; $g =~ s/llm_default_tier five/llm_default_tier pair/; $g
--- request
GET /plain
--- timeout: 20
--- check eval
sub {
    my $pid = ::redis_pid($::RP);
    my $a = ::statuses(2);
    kill 'STOP', $pid;
    reload_nginx();
    my $b = ::statuses(2);
    Time::HiRes::sleep(0.3);
    kill 'CONT', $pid;
    my ($sum, $conc);
    for (1 .. 25) {
        Time::HiRes::sleep(0.1);
        $sum = ::window_sum($::RP, 4);
        $conc = ::redis_cli($::RP, 'ZCARD', "$::P-4:{acct:carol}:conc") + 0;
    }
    my $d = ::statuses(1);
    my $got = "$a | $b | $d | window $sum, leases $conc";
    my $want = '200 200 | 200 200 | 200 | window 4, leases 0';
    return $got eq $want ? 1 : (0, "got  $got\nwant $want");
}
