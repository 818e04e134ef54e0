# A concurrency slot given back while Redis is unreachable (a request
# that ends during an outage): the release is kept and sent once Redis is
# back, so the account is not locked out until its leases expire (found
# by the load test; TEST 1 failed before the fix).

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Client ();
use Test::LLM::Redis qw(:DEFAULT gw statuses);    # carol's GET /v1/models
use Time::HiRes ();

our $CAROL = $Test::LLM::Keys::CAROL;
our $P     = "t125-$$-" . time;

# a Redis that keeps its data across a stop and a start (AOF, fsync
# always), as a production Redis with persistence, or one behind a
# network partition, does
our $RP = free_port();
our @PERSIST = ('--appendonly', 'yes', '--appendfsync', 'always');
redis_start($RP, @PERSIST);

our $Tiers = $Test::LLM::Keys::TIERS
    . "llm_tier pair requests=1000/m concurrency=2;\n";

sub conf {
    my ($block, $redis) = @_;
    return $Tiers . "llm_redis $redis prefix=$P-$block:;\n";
}

our $Gateway = <<'_EOC_';
location /v1/ {
    llm_gateway on;
    llm_default_tier pair;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /plain {
    return 200 "plain\n";
}
_EOC_

run_tests();

__DATA__

=== TEST 1: requests that end while Redis is unreachable keep their concurrency slots in Redis: concurrency=2, two 1.5 s requests admitted by Redis, Redis stops 0.3 s in and comes back (with its data) after both have ended; the account, with nothing in flight, is then refused 429 "Too many concurrent requests" until the leases expire (about 57 s; load test: 5 of 5 slots of a concurrency=5 account held 56 s after a 3 s outage). README llm_tier: "A slot is returned on every way a request ends (finished, client gone, upstream error or timeout)"; the release (ZREM) is dropped when no connection is up ("llm_redis: release not done: " at info, with no reason), while the same requests' settles are replayed
--- workers: 1
--- http_config eval: ::conf(1, "127.0.0.1:$::RP timeout=300ms")
--- config eval: $::Gateway
--- mock eval
sub { my $r = shift;
      return $r->{uri} =~ /slow/ ? { delay => 1.5, body => '{}' }
                                 : { body => '{}' } }
--- request
GET /plain
--- timeout: 30
--- check eval
sub {
    my $req = Test::LLM::Client::build_request("GET /v1/slow",
        more_headers => "Authorization: Bearer $::CAROL");
    my $pid = fork();
    if (!$pid) {
        Test::LLM::Client::exchange_all(
            port => $ENV{TEST_NGINX_SERVER_PORT}, concurrency => 2,
            exchanges => [ map { { %$req, timeout => 5 } } 1 .. 2 ]);
        exit 0;
    }
    Time::HiRes::sleep(0.3);
    my $held = ::redis_cli($::RP, 'ZCARD', "$::P-1:{acct:carol}:conc") + 0;
    redis_stop($::RP);
    waitpid $pid, 0;                    # both ended, Redis away
    Time::HiRes::sleep(0.3);
    redis_start($::RP, @::PERSIST);
    Time::HiRes::sleep(1.5);            # reconnected (backoff <= 1 s)
    my $after = ::statuses(2);
    my $left = ::redis_cli($::RP, 'ZCARD', "$::P-1:{acct:carol}:conc") + 0;
    ::redis_cli($::RP, 'FLUSHALL');     # leave nothing to later blocks
    my $got = "held $held | after $after | leases left $left";
    my $want = 'held 2 | after 200 200 | leases left 0';
    return $got eq $want ? 1 : (0, "got  $got\nwant $want");
}
