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
