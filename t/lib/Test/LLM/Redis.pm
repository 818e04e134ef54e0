package Test::LLM::Redis;

# Helpers of the llm_redis tests (t/091, t/094, t/095, t/096, t/101,
# t/106): what a redis-server holds and does, read with redis-cli.
# Everything is exported into the test file (its blocks call ::name).
#
#   use Test::LLM::Redis;
#   my $sum = window_total($RP, "$P-3:{acct:carol}:w:requests:1m");
#
# gw() and statuses() (carol's requests, as t/091 and t/106 make them)
# are exported only on request: other files have their own.

use strict;
use warnings;

use Exporter 'import';
use Test::LLM::Nginx ();
use Test::LLM::Keys ();
use Time::HiRes ();

our @EXPORT = qw(redis_pid window_slots window_total wait_until
                 redis_clients redis_conns_received switches);
our @EXPORT_OK = qw(gw statuses);


# the pid of the redis-server that redis_start($port) started
sub redis_pid {
    my ($port) = @_;
    open(my $fh, '<', "$Test::LLM::Nginx::ROOT/t/servroot/redis-$port/redis.pid")
        or die $!;
    my ($pid) = <$fh> =~ /(\d+)/;
    return $pid;
}


# a window's slots (fields that are slot numbers, not the running total
# "t", "c", "o") and their counts; @opts: redis-cli options (-a, -n)
sub window_slots {
    my ($port, $key, @opts) = @_;
    my %kv = split /\n/, Test::LLM::Nginx::redis_cli($port, @opts, 'HGETALL',
                                                     $key) // '';
    return map { $_ => $kv{$_} } grep { /^\d+$/ } keys %kv;
}


# what a window holds: the sum of its slots (see window_slots)
sub window_total {
    my %slots = window_slots(@_);
    my $sum = 0;
    $sum += $_ for values %slots;
    return $sum;
}


# calls $cond every 0.1 s, $secs seconds at most: 1 once it is true, or 0
sub wait_until {
    my ($secs, $cond) = @_;
    for (1 .. $secs * 10) {
        return 1 if $cond->();
        Time::HiRes::sleep(0.1);
    }
    return 0;
}


# connections of nginx (not redis-cli's own) in a Redis
sub redis_clients {
    my ($port, @auth) = @_;
    my $list = Test::LLM::Nginx::redis_cli($port, @auth, 'CLIENT', 'LIST')
               // '';
    return scalar grep { !/cmd=client/ } split /\n/, $list;
}


# connections a Redis has accepted since it started (-1: no answer)
sub redis_conns_received {
    my ($port, @auth) = @_;
    my $s = Test::LLM::Nginx::redis_cli($port, @auth, 'INFO', 'stats') // '';
    return $s =~ /total_connections_received:(\d+)/ ? $1 : -1;
}


# "N down, M up": the switches of llm_redis an error log tells
sub switches {
    my ($log) = @_;
    my $down = () = $log =~ /llm_redis "[^"]+" failed/g;
    my $up   = () = $log =~ /llm_redis "[^"]+" is back/g;
    return "$down down, $up up";
}


# carol's GET /v1/models (the response)
sub gw {
    return Test::LLM::Nginx::http_request("GET /v1/models",
        more_headers => "Authorization: Bearer $Test::LLM::Keys::CAROL");
}


# the statuses of n such requests, one after another ("200 200 429")
sub statuses { join ' ', map { gw()->{status} // 'none' } 1 .. $_[0] }


1;
