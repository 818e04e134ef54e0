# Client keys and accounts read from Redis (llm_redis, SPEC 5 "Dynamic"):
# PREFIX{key:DIGEST} names the account (tier, expires, revoked), and
# PREFIX{acct:ACCOUNT}:info its tier and whether it is suspended.  The
# outcome is cached in the zone for key_cache (a second for unknown
# keys), so a revocation takes effect within it; static keys win;
# hostile credentials never reach Redis; on_error while Redis fails.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Redis;

our $RP = $ENV{TEST_NGINX_REDIS_PORT};
our $P  = "t093-$$-" . time;
our $ALICE = $Test::LLM::Keys::ALICE;

# keys known to Redis only: name => [key, digest]
our %K = %Test::LLM::Keys::REDIS_ONLY;

our $CAROL = $Test::LLM::Keys::CAROL;
our $CAROL_DIGEST =
    'e62920c463d6e8efb84ad9b1e3f593eeb4aa0608d6db603d0bed0207e97ff1fe';

sub key  { $K{$_[0]}[0] }
sub auth { "Authorization: Bearer " . key($_[0]) }

# key_record(BLOCK, NAME or DIGEST, field => value, ...)
sub key_record {
    my ($block, $who, @fv) = @_;
    my $digest = $K{$who} ? $K{$who}[1] : $who;
    redis_cli($RP, 'DEL', "$P-$block:{key:$digest}");
    redis_cli($RP, 'HSET', "$P-$block:{key:$digest}", @fv);
}

sub account_record {
    my ($block, $acct, @fv) = @_;
    redis_cli($RP, 'DEL', "$P-$block:{acct:$acct}:info");
    redis_cli($RP, 'HSET', "$P-$block:{acct:$acct}:info", @fv) if @fv;
}

sub hmget_calls {
    my $s = redis_cli($RP, 'INFO', 'commandstats') // '';
    return $s =~ /cmdstat_hmget:calls=(\d+)/ ? $1 : 0;
}

sub conf {
    my ($block, $extra) = @_;
    return $Test::LLM::Keys::TIERS
        . "llm_tier roomy requests=1000/m;\n"
        . "llm_redis 127.0.0.1:$RP prefix=$P-$block: " . ($extra // '')
        . ";\n";
}

# /free/: no tier, so nothing but the key lookups uses HMGET
our $Gateway = <<'_EOC_';
location /v1/ {
    llm_gateway on;
    llm_default_tier roomy;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    add_header X-Account "$llm_account" always;
    add_header X-Tier "$llm_tier" always;
    add_header X-Key-Id "$llm_key_id" always;
    add_header X-Result "$llm_limit_result" always;
}
location /free/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT/v1/;
    add_header X-Account "$llm_account" always;
}
location = /usage {
    llm_usage;
}
location = /plain {
    return 200 "plain\n";
}
_EOC_

sub gw {
    my ($who, $path) = @_;
    return http_request("GET " . ($path // '/v1/models'),
                        more_headers => auth($who));
}

sub statuses {
    my ($who, $n, $path) = @_;
    return join ' ', map { gw($who, $path)->{status} } 1 .. $n;
}

# HMGETs only key lookups make: through /free/ (the scripts use HMGET too)
sub free { statuses($_[0], $_[1], '/free/models') }

# the records of the blocks below
key_record(2, 'zed', account => 'zed');
account_record(2, 'zed', tier => 'small');

key_record(3, 'yola', account => 'yola', tier => 'small');
account_record(3, 'yola', tier => 'quota');
key_record(3, 'xavi', account => 'xavi', tier => 'small');
key_record(3, 'wren', account => 'wren');

key_record(5, 'zed', account => 'a}b{c');
key_record(5, 'yola', account => "acme", tier => "x\ny {z}");

key_record(6, 'zed', account => 'zed', revoked => 1);
key_record(6, 'yola', account => 'yola', revoked => 0);

key_record(8, 'zed', account => 'zed', expires => 1000000000);
key_record(8, 'yola', account => 'yola', expires => time + 3600);
key_record(8, 'xavi', account => 'xavi', expires => 'soon');

key_record(9, 'zed', account => 'zed');
account_record(9, 'zed', suspended => 1, tier => 'small');
key_record(9, 'yola', account => 'yola');
account_record(9, 'yola', suspended => 0);

key_record(12, $CAROL_DIGEST, account => 'mallory', tier => 'roomy');

key_record(14, 'zed', account => 'zed');
account_record(14, 'zed', tier => 'small');

key_record(15, 'zed', account => 'zed', tier => 'platinum');

run_tests();

__DATA__

=== TEST 1: key_cache is at most 5s (the revocation bound)
--- http_config
llm_zone llm:1m;
llm_redis 127.0.0.1:6379 key_cache=6s;
--- config
--- must_die
--- error_log
invalid value "key_cache=6s"



=== TEST 2: a key created with redis-cli works: its account, its account's tier, counted in Redis
--- http_config eval: ::conf(2)
--- config eval: $::Gateway
--- request eval
[("GET /v1/models") x 4]
--- more_headers eval: ::auth('zed')
--- error_code eval
[200, 200, 200, 429]
--- response_headers eval
[{ 'X-Account' => 'zed', 'X-Tier' => 'small', 'X-Key-Id' => '6ae2d7b311a0',
   'X-Result' => 'passed' }, undef, undef,
 { 'X-Account' => 'zed', 'X-Result' => 'limited' }]
--- check eval
sub {
    my $sum = window_total($::RP, "$::P-2:{acct:zed}:w:requests:1m");
    return $sum == 3 ? 1 : (0, "window holds $sum");
}
--- no_error_log
llm_redis



=== TEST 3: the account's tier wins over the key's; with neither, llm_default_tier
--- http_config eval: ::conf(3)
--- config eval: $::Gateway
--- request eval
[("GET /v1/models") x 3]
--- more_headers eval
[::auth('yola'), ::auth('xavi'), ::auth('wren')]
--- response_headers eval
[{ 'X-Account' => 'yola', 'X-Tier' => 'quota' },
 { 'X-Account' => 'xavi', 'X-Tier' => 'small' },
 { 'X-Account' => 'wren', 'X-Tier' => 'roomy' }]



=== TEST 4: a well-formed key Redis does not know: 401 invalid_api_key
--- http_config eval: ::conf(4)
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: ::auth('uma')
--- error_code: 401
--- response_headers
X-Result: unauthorized
x-should-retry: false
!X-Key-Id
--- response_body_like: Incorrect API key provided.*"code":"invalid_api_key"
--- mock_count: 0



=== TEST 5: hostile credentials never reach Redis; a hostile account or tier in Redis is refused or ignored
--- http_config eval: ::conf(5)
--- config eval: $::Gateway
--- request
GET /plain
--- check eval
sub {
    my $before = ::hmget_calls();
    my @bad = (
        [ 'GET /v1/models', 'Authorization: Bearer sk-llm-{x}:' . ('a' x 39) ],
        [ 'GET /v1/models', 'x-api-key: sk-llm-a b c d e ' . ('a' x 33) ],
        [ 'GET /v1/models?key=sk-llm-%0D%0AFLUSHALL%0D%0A' . ('a' x 27), '' ],
        [ 'GET /v1/models', 'api-key: sk-llm-' . ('}' x 43) ],
        [ 'GET /v1/models', 'Authorization: Bearer ' . ('x' x 300) ],
    );
    for my $b (@bad) {
        my $r = http_request($b->[0], more_headers => $b->[1]);
        return (0, "$b->[1]: $r->{status}") if $r->{status} != 401;
    }
    my $after = ::hmget_calls();
    return (0, "hostile keys made " . ($after - $before) . " HMGETs")
        if $after != $before;

    # a key whose record names an account with braces: refused
    my $r = ::gw('zed');
    return (0, "hostile account: $r->{status}") if $r->{status} != 401;

    # a tier name with a newline and braces: not a tier here, the default
    $r = ::gw('yola');
    my $tier = $r->{header}{'x-tier'} // '';
    return (0, "hostile tier: $r->{status} $tier")
        if $r->{status} != 200 || $tier ne 'roomy';

    my $dbsize = redis_cli($::RP, 'EXISTS', "$::P-5:{key:$::K{zed}[1]}");
    return $dbsize =~ /1/ ? 1 : (0, 'the records are gone');
}
--- error_log eval
[qr/\[warn\].*llm_redis: key 6ae2d7b311a0 names an invalid account, refused/,
 qr/\[warn\].*llm_redis: account "acme" has tier "x\ny \{z\}", which this node does not know/]



=== TEST 6: a revoked key: 401 with its reason; revoked=0 is not revoked
--- http_config eval: ::conf(6)
--- config eval: $::Gateway
--- request eval
[("GET /v1/models") x 2]
--- more_headers eval
[::auth('zed'), ::auth('yola')]
--- error_code eval
[401, 200]
--- response_body_like eval
['This API key has been revoked.*"code":"invalid_api_key"', '']
--- response_headers eval
[{ 'X-Key-Id' => '6ae2d7b311a0', 'x-should-retry' => 'false' }, undef]



=== TEST 7: revoked in Redis while cached: refused within key_cache (1s here), on every worker
--- http_config eval: ::conf(7, 'key_cache=1s')
--- config eval: $::Gateway
--- request
GET /plain
--- timeout: 10
--- check eval
sub {
    ::key_record(7, 'zed', account => 'zed');
    my $a = ::statuses('zed', 2);
    redis_cli($::RP, 'HSET', "$::P-7:{key:$::K{zed}[1]}", 'revoked', 1);
    my $b = ::statuses('zed', 1);
    select undef, undef, undef, 1.2;
    my $c = ::statuses('zed', 4);
    my $got = "$a | $b | $c";
    return $got eq '200 200 | 200 | 401 401 401 401'
           ? 1 : (0, "got $got");
}



=== TEST 8: expires: past is 401 "expired", future works, garbage is refused
--- http_config eval: ::conf(8)
--- config eval: $::Gateway
--- request eval
[("GET /v1/models") x 3]
--- more_headers eval
[::auth('zed'), ::auth('yola'), ::auth('xavi')]
--- error_code eval
[401, 200, 401]
--- response_body_like eval
['This API key has expired', '', 'This API key has expired']
--- error_log
llm_redis: key d7a9a92f8c41 has an invalid "expires", refused



=== TEST 9: a suspended account: 403 account_suspended, not counted; suspended=0 works
--- http_config eval: ::conf(9)
--- config eval: $::Gateway
--- request eval
[("GET /v1/models") x 2]
--- more_headers eval
[::auth('zed'), ::auth('yola')]
--- error_code eval
[403, 200]
--- response_headers eval
[{ 'X-Result' => 'rejected', 'x-should-retry' => 'false',
   'X-Account' => 'zed' }, { 'X-Result' => 'passed' }]
--- response_body_like eval
['This account is suspended.*"code":"account_suspended"', '']
--- mock_count: 1
--- check eval
sub {
    my $n = redis_cli($::RP, 'EXISTS', "$::P-9:{acct:zed}:w:requests:1m");
    return $n =~ /0/ ? 1 : (0, 'a suspended account was counted');
}



=== TEST 10: cached: a key is looked up once (two HMGETs) for many requests of both workers; an unknown key once a second
--- http_config eval: ::conf(10)
--- config eval: $::Gateway
--- request
GET /plain
--- check eval
sub {
    ::key_record(10, 'zed', account => 'zed');
    my $n0 = ::hmget_calls();
    my $a = ::free('zed', 8);
    my $n1 = ::hmget_calls();
    my $b = ::free('uma', 3);
    my $n2 = ::hmget_calls();
    my $got = "$a | $b | " . ($n1 - $n0) . ' ' . ($n2 - $n1);
    return $got eq '200 200 200 200 200 200 200 200 | 401 401 401 | 2 1'
           ? 1 : (0, "got $got");
}



=== TEST 11: key_cache=0: every request asks Redis
--- http_config eval: ::conf(11, 'key_cache=0')
--- config eval: $::Gateway
--- request
GET /plain
--- check eval
sub {
    ::key_record(11, 'zed', account => 'zed');
    my $n0 = ::hmget_calls();
    my $a = ::free('zed', 3);
    my $n = ::hmget_calls() - $n0;
    return "$a | $n" eq '200 200 200 | 6' ? 1 : (0, "got $a | $n");
}



=== TEST 12: a key in the key file wins over Redis, and is not looked up
--- http_config eval: ::conf(12)
--- config eval: $::Gateway
--- request
GET /plain
--- check eval
sub {
    my $n0 = ::hmget_calls();
    my $r = http_request('GET /free/models',
                         more_headers => "Authorization: Bearer $::CAROL");
    my $n = ::hmget_calls() - $n0;
    my $got = "$r->{status} $r->{header}{'x-account'} $n";
    return $got eq '200 carol 0' ? 1 : (0, "got $got");
}



=== TEST 13: Redis unreachable, on_error=local: the key file's keys work; a key that cannot be checked is 503, not called invalid
--- http_config eval
$Test::LLM::Keys::TIERS . "llm_tier roomy requests=1000/m;\n"
. "llm_redis 127.0.0.1:$ENV{TEST_NGINX_DEAD_PORT} on_error=local;\n"
--- config eval: $::Gateway
--- request eval
["GET /v1/models", "GET /v1/models"]
--- more_headers eval
["Authorization: Bearer $::ALICE", ::auth('zed')]
--- error_code eval
[200, 503]
--- response_body_like eval
['', '"code":"store_unavailable"']
--- mock_count: 1



=== TEST 14: on_error=deny: a key not cached is 503 store_unavailable
--- http_config eval
$Test::LLM::Keys::TIERS . "llm_tier roomy requests=1000/m;\n"
. "llm_redis 127.0.0.1:$ENV{TEST_NGINX_DEAD_PORT} on_error=deny;\n"
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: ::auth('zed')
--- error_code: 503
--- response_headers
Retry-After: 1
X-Result: store_error
--- response_body_like: "code":"store_unavailable"



=== TEST 15: on_error=allow never lets a key that cannot be checked in
--- http_config eval
$Test::LLM::Keys::TIERS . "llm_tier roomy requests=1000/m;\n"
. "llm_redis 127.0.0.1:$ENV{TEST_NGINX_DEAD_PORT} on_error=allow;\n"
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: ::auth('zed')
--- error_code: 503
--- response_body_like: "code":"store_unavailable"
--- mock_count: 0



=== TEST 16: llm_usage authenticates a key from Redis
--- http_config eval: ::conf(14)
--- config eval: $::Gateway
--- request
GET /usage
--- more_headers eval: ::auth('zed')
--- response_body_like: ^\{"account":"zed","key_id":"6ae2d7b311a0","tier":"small","windows":\[\{"dimension":"requests","period":"1m","limit":3,



=== TEST 17: a tier this node does not know: the location's default, logged
--- http_config eval: ::conf(15)
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: ::auth('zed')
--- response_headers
X-Tier: roomy
--- error_log
account "zed" has tier "platinum", which this node does not know



=== TEST 18: a flood of unknown keys does not push a known key out of the cache (unknown keys have a quarter of it)
--- http_config eval: ::conf(18)
--- config eval: $::Gateway
--- request
GET /plain
--- timeout: 20
--- check eval
sub {
    ::key_record(18, 'zed', account => 'zed');
    my $a = ::free('zed', 1);
    my @c = ('a' .. 'z', 'A' .. 'Z', '0' .. '9', '-', '_');
    my $bad = 0;
    # 1m zone: 512 entries; 600 random keys, well formed, unknown
    for my $i (1 .. 600) {
        my $k = 'sk-llm-' . join '', map { $c[rand @c] } 1 .. 43;
        my $r = http_request("GET /free/models",
                             more_headers => "Authorization: Bearer $k");
        $bad++ if $r->{status} != 401;
    }
    my $n0 = ::hmget_calls();
    my $b = ::free('zed', 2);
    my $n1 = ::hmget_calls();
    my $got = "$a $b $bad " . ($n1 - $n0);
    return $got eq '200 200 200 0 0' ? 1 : (0, "got $got");
}
