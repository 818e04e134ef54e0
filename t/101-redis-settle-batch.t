# Settles in Redis come in batches (SPEC 9: usage of every completed
# request reaches the store): the settles of one account and tier made
# in one event-loop iteration go to Redis as one call of the settles
# script.  Many token requests ending together leave Redis with exactly
# their usage in every window, in fewer script calls than requests.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat ();
use Test::LLM::Redis;
use Test::LLM::Lua;
use Digest::SHA qw(sha1_hex);
use Time::HiRes ();

our $CAROL = $Test::LLM::Keys::CAROL;
our $P     = "t101-$$-" . time;

# a Redis of this file's own: its call counts are this file's
our $RP = free_port();
redis_start($RP);

our $N = 40;

sub conf {
    my ($block, $extra) = @_;
    return $Test::LLM::Keys::TIERS
        . "llm_tier tok requests=1000/m tokens=1000000/m"
        . " input_tokens=1000000/h output_tokens=1000000/d"
        . " cost=100/mo;\n"
        . "llm_price m input=1000 output=2000;\n"
        . "llm_redis 127.0.0.1:$RP prefix=$P-$block: timeout=5s "
        . ($extra // '') . ";\n";
}

sub window_sum {
    my ($block, $what) = @_;
    return window_total($RP, "$P-$block:{acct:carol}:w:$what");
}

# the settle scripts, loaded ahead (no EVAL after NOSCRIPT), and every
# command logged, so that their calls can be told by their digests
our %Lua = lua_scripts('src/ngx_http_llm_rstore_lua.c', '',
                       qw(settle settles));
our %Sha = map { $_ => sha1_hex($Lua{$_}) } keys %Lua;

sub watch {
    redis_cli($RP, 'SCRIPT', 'LOAD', $Lua{$_}) for keys %Lua;
    redis_cli($RP, 'CONFIG', 'SET', 'slowlog-log-slower-than', 0);
    redis_cli($RP, 'CONFIG', 'SET', 'slowlog-max-len', 100000);
    redis_cli($RP, 'SLOWLOG', 'RESET');
}

# settle script calls since watch(): [one alone, batches]
sub settle_calls {
    my $log = redis_cli($RP, 'SLOWLOG', 'GET', 100000) // '';
    my @n = map { my $sha = $Sha{$_}; scalar(() = $log =~ /^$sha$/mg) }
            qw(settle settles);
    return @n;
}

# N requests at once, all answered together (by the mock's clock): the
# statuses, the settle calls they took (alone, batches), and every
# window's total
sub together {
    my ($block) = @_;
    my $req = Test::LLM::Client::build_request(
        "POST /v1/chat/completions\n$::Body",
        more_headers => "Authorization: Bearer $::CAROL\n"
                        . "Content-Type: application/json");
    watch();
    my @res = Test::LLM::Client::exchange_all(
        port => $ENV{TEST_NGINX_SERVER_PORT}, concurrency => $::N,
        exchanges => [ map { { %$req, timeout => 20 } } 1 .. $::N ]);
    for (1 .. 50) {
        select undef, undef, undef, 0.1;
        last if window_sum($block, 'output_tokens:1d') == 20 * $::N;
    }
    my @calls = settle_calls();
    return (Test::LLM::Client::status_counts(@res), @calls,
            join(' ', map { window_sum($block, $_) }
                      qw(requests:1m tokens:1m input_tokens:1h
                         output_tokens:1d cost:1mo)));
}

our $Chat = $Test::LLM::Chat::ANSWER;

our $Gateway = <<'_EOC_';
location /v1/ {
    llm_gateway on;
    llm_default_tier tok;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /plain {
    return 200 "plain\n";
}
_EOC_

our $Body = Test::LLM::Chat::chat(model => 'm', max => 1000, text => 'hi');

# every answer at the next second but one, whenever its request came
our $Mock = sub {
    my $t = Time::HiRes::time();
    return { delay => int($t) + 2 - $t, status => 200,
             headers => { 'Content-Type' => 'application/json' },
             body => $::Chat };
};

# what N requests used: 10 + 20 tokens each; cost in micro-dollars
# (1000 and 2000 USD per 1M: 0.01 + 0.04 = 0.05 USD = 50000 each)
our $Want = join ' ', $N, 30 * $N, 10 * $N, 20 * $N, 50000 * $N;

run_tests();

__DATA__

=== TEST 1: 40 token requests on one worker answered together: every window holds exactly their usage, and their settles took fewer script calls than requests (batched)
--- workers: 1
--- http_config eval: ::conf(1)
--- config eval: $::Gateway
--- mock eval: $::Mock
--- request
GET /plain
--- timeout: 30
--- check eval
sub {
    my ($status, $one, $batches, $sums) = ::together(1);
    Test::More::note("TEST 1: $one settles alone, $batches batches for "
                     . "$::N requests");
    return (0, "statuses $status") unless $status eq "200=$::N";
    return (0, "windows hold $sums, want $::Want") unless $sums eq $::Want;
    return (0, "$one settles alone and $batches batches for $::N requests")
        unless $batches > 0 && $one + $batches < $::N;
    return 1;
}



=== TEST 2: batch=1: each settle goes alone, and the windows hold the same
--- workers: 1
--- http_config eval: ::conf(2, 'batch=1')
--- config eval: $::Gateway
--- mock eval: $::Mock
--- request
GET /plain
--- timeout: 30
--- check eval
sub {
    my ($status, $one, $batches, $sums) = ::together(2);
    return (0, "statuses $status") unless $status eq "200=$::N";
    return (0, "windows hold $sums, want $::Want") unless $sums eq $::Want;
    return (0, "$one settles alone and $batches batches, batch=1")
        unless $one == $::N && $batches == 0;
    return 1;
}



=== TEST 3: Redis goes away while 40 requests wait for their answers (what it holds kept): their settles, batched, cannot be sent and are replayed, each to its reservation's slot, when Redis is back; the windows then hold exactly the usage
--- workers: 1
--- http_config eval: ::conf(3, 'timeout=200ms on_error=local')
--- config eval: $::Gateway
--- mock eval
sub {
    # the first request takes Redis away (what it holds saved)
    if ((redis_cli($::RP, 'PING') // '') =~ /PONG/) {
        redis_cli($::RP, 'SAVE');
        redis_cli($::RP, 'SHUTDOWN', 'NOSAVE');
    }
    return $::Mock->();
}
--- request
GET /plain
--- timeout: 30
--- error_log
replayed when Redis is back
--- check eval
sub {
    my $req = Test::LLM::Client::build_request(
        "POST /v1/chat/completions\n$::Body",
        more_headers => "Authorization: Bearer $::CAROL\n"
                        . "Content-Type: application/json");
    my @res = Test::LLM::Client::exchange_all(
        port => $ENV{TEST_NGINX_SERVER_PORT}, concurrency => $::N,
        exchanges => [ map { { %$req, timeout => 20 } } 1 .. $::N ]);
    my $status = Test::LLM::Client::status_counts(@res);
    return (0, "statuses $status") unless $status eq "200=$::N";

    redis_start($::RP);
    unlink servroot() . "/../redis-$::RP/dump.rdb";

    my $sums;
    for (1 .. 100) {
        select undef, undef, undef, 0.1;
        $sums = join ' ', map { ::window_sum(3, $_) }
                          qw(requests:1m tokens:1m input_tokens:1h
                             output_tokens:1d cost:1mo);
        last if $sums eq $::Want;
    }
    return $sums eq $::Want ? 1 : (0, "windows hold $sums, want $::Want");
}



=== TEST 4: every new connection loads the scripts before its first EVALSHA: with Redis's script cache flushed, new workers' admissions and settles never meet NOSCRIPT (sent again as EVAL, a settle would come after the account's next admission, which then would not see it)
--- workers: 1
--- http_config eval: ::conf(4)
--- config eval: $::Gateway
--- request
GET /plain
--- timeout: 20
--- check eval
sub {
    redis_cli($::RP, 'SCRIPT', 'FLUSH');
    redis_cli($::RP, 'CONFIG', 'RESETSTAT');
    reload_nginx(10) or return (0, 'reload failed');
    my $req = Test::LLM::Client::build_request(
        "POST /v1/chat/completions\n$::Body",
        more_headers => "Authorization: Bearer $::CAROL\n"
                        . "Content-Type: application/json");
    my @res = Test::LLM::Client::exchange_all(
        port => $ENV{TEST_NGINX_SERVER_PORT},
        exchanges => [ map { { %$req, timeout => 10 } } 1 .. 3 ]);
    my $st = join ' ', map { $_->{status} // 'none' } @res;
    return (0, "statuses $st") unless $st eq '200 200 200';
    select undef, undef, undef, 0.5;
    my $s = redis_cli($::RP, 'INFO', 'commandstats') // '';
    my ($sha) = $s =~ /cmdstat_evalsha:calls=(\d+)/;
    my ($eval) = $s =~ /cmdstat_eval:calls=(\d+)/;
    my ($load) = $s =~ /cmdstat_script\|load:calls=(\d+)/;
    Test::More::note("TEST 4: EVALSHA " . ($sha // 0) . ", EVAL "
                     . ($eval // 0) . ", SCRIPT LOAD " . ($load // 0));
    return (0, "EVAL after NOSCRIPT: " . ($eval // 0) . " times") if $eval;
    return (0, "no EVALSHA") unless $sha && $sha >= 6;
    return (0, "no SCRIPT LOAD") unless $load;
    return 1;
}
