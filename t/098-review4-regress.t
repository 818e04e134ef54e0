# Review 4: reproducers of what it found (each failed before its fix;
# SPEC 9: "nothing it accounts is lost").

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;

our $P  = "t098-$$-" . time;
our $RP = free_port();
our $N  = $ENV{T098_N} || 4000;   # 640 passes; T098_TIMEOUT=2s passes

sub redis_up { redis_start($RP, '--enable-debug-command', 'local') }

redis_up();

sub conf {
    my ($block, $extra) = @_;
    return $Test::LLM::Keys::TIERS
        . "llm_redis 127.0.0.1:$RP prefix=$P-$block: " . ($extra // '')
        . ";\n";
}

# pipelined anonymous requests, each from its own address; how many 200
sub burst {
    Test::LLM::Client::burst($ENV{TEST_NGINX_SERVER_PORT}, '/v1/models',
                             [@_], 30);
}

run_tests();

__DATA__

=== TEST 1: a reload just after Redis is back, with more outage batches than Redis answers within llm_redis timeout (the default 50 ms): the exiting worker sends them 256 at a time on their way, so none waits past the timeout, and all 4000 clients counted during the outage reach Redis (review4: it sent all in one tick, the first unanswered closed the connection, 1849 and 2352 of 4000 arrived)
--- workers: 1
--- http_config eval
::conf(1, 'timeout=' . ($ENV{T098_TIMEOUT} || '50ms'))
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
--- timeout: 120
--- check eval
sub {
    redis_stop($::RP);
    my @addrs = map { sprintf "10.2.%d.%d", $_ >> 8, $_ & 255 } 1 .. $::N;
    my $n = 0;
    for (my $i = 0; $i < @addrs; $i += 1000) {
        my $e = $i + 999 < $#addrs ? $i + 999 : $#addrs;
        $n += ::burst(@addrs[$i .. $e]);
    }
    return (0, "$n of $::N answered") if $n != $::N;
    ::redis_up();
    my $up;
    for (1 .. 50) {
        ::burst('10.3.0.1');
        $up = redis_cli($::RP, 'EXISTS',
                        "$::P-1:{acct:anon:10.3.0.1}:w:requests:1d");
        last if ($up // '') =~ /^1/;
        select undef, undef, undef, 0.1;
    }
    return (0, 'Redis not back') if ($up // '') !~ /^1/;
    reload_nginx(10) or return (0, 'reload failed');
    select undef, undef, undef, 14;
    my @k = grep { /requests:1d$/ } split /\n/,
        redis_cli($::RP, '--scan', '--pattern',
                  "$::P-1:{acct:anon:10.2.*}:w:requests:1d") // '';
    return @k == $::N ? 1
        : (0, scalar(@k) . " of the $::N clients counted during the outage "
              . "are in Redis; the rest went with the old worker (keys in Redis: "
              . (redis_cli($::RP, 'DBSIZE') // '?') . ")");
}
