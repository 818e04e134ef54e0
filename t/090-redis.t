# llm_redis: the directive, windows, concurrency and cooldown counted in
# Redis, and on_error while Redis cannot be reached.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;

our $ALICE = $Test::LLM::Keys::ALICE;
our $CAROL = $Test::LLM::Keys::CAROL;
our $RP    = $ENV{TEST_NGINX_REDIS_PORT};
our $P     = "t090-$$-" . time;         # this run's keys

our $Tiers = $Test::LLM::Keys::TIERS
    . "llm_tier duo requests=100000/m concurrency=2;\n"
    . "llm_tier hot requests=1/m cooldown=30s;\n";

sub redis_conf {
    my ($block, $extra) = @_;
    # 1 s: a block's first admission waits behind its connection's AUTH,
    # TIME and SCRIPT LOADs, which passed 50 ms under ASan on a slow VM
    return $Tiers . "llm_redis 127.0.0.1:$RP prefix=$P-$block: timeout=1s "
           . ($extra // '') . ";\n";
}

our $Gateway = <<'_EOC_';
location /v1/ {
    llm_gateway on;
    llm_default_tier small;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    add_header X-Result "$llm_limit_result" always;
}
_EOC_

run_tests();

__DATA__

=== TEST 1: an unknown parameter
--- http_config
llm_zone llm:1m;
llm_redis 127.0.0.1:6379 pool=3;
--- config
--- must_die
--- error_log eval
qr/invalid parameter "pool=3" in \S+nginx\.conf:\d+/



=== TEST 2: a bad on_error, a bad timeout, braces in the prefix
--- http_config
llm_zone llm:1m;
llm_redis 127.0.0.1:6379 on_error=maybe;
--- config
--- must_die
--- error_log
invalid value "on_error=maybe"



=== TEST 3: braces in the prefix would break the hash tags
--- http_config
llm_zone llm:1m;
llm_redis 127.0.0.1:6379 "prefix={x}:";
--- config
--- must_die
--- error_log
invalid value "prefix={x}:"



=== TEST 4: a password file that does not exist
--- http_config
llm_zone llm:1m;
llm_redis 127.0.0.1:6379 password_file=/nonexistent/redis.pass;
--- config
--- must_die
--- error_log
/nonexistent/redis.pass



=== TEST 5: requests=3/m counted in Redis: three, then 429, with the headers
--- http_config eval: ::redis_conf(5)
--- config eval: $::Gateway
--- request eval
[("GET /v1/models") x 4]
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code eval
[200, 200, 200, 429]
--- response_headers_like eval
[
"X-Rate-Limit-Remaining: ^2\$\nX-Rate-Limit-Limit: ^3\$\nx-ratelimit-reset-requests: ^(1m[0-6]s|[5-9]\\ds)\$\nX-Result: ^passed\$",
"X-Rate-Limit-Remaining: ^1\$",
"X-Rate-Limit-Remaining: ^0\$",
"X-Rate-Limit-Remaining: ^0\$\nRetry-After: ^(6[0-6]|5\\d)\$\nX-Result: ^limited\$",
]
--- response_body_like eval
["", "", "", '"code":"rate_limit_exceeded"']
--- check eval
sub {
    my $key = "$::P-5:{acct:alice}:w:requests:1m";
    my @kv = split /\n/, redis_cli($::RP, 'HGETALL', $key);
    my $sum = 0;
    # the slots (numbers), not the running total "t", "c", "o"
    $sum += $kv[$_ + 1] for grep { !($_ % 2) && $kv[$_] =~ /^\d+$/ } 0 .. $#kv;
    return (0, "sum $sum in $key") if $sum != 3;
    my %h = @kv;
    return (0, "running total $h{t} in $key") if ($h{t} // '') ne '3';
    my $ttl = redis_cli($::RP, 'PTTL', $key);
    return (0, "PTTL $ttl") unless $ttl > 60000 && $ttl <= 67000;
    return 1;
}
--- no_error_log
llm_redis



=== TEST 6: a new nginx on the same Redis sees the same counts (a node joins)
--- http_config eval: ::redis_conf(5)
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code: 429
--- response_headers
X-Rate-Limit-Remaining: 0



=== TEST 7: concurrency=2 in Redis admits two of six, and every slot comes back
--- http_config eval: ::redis_conf(7)
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier duo;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub { return { delay => 1.5, status => 200, body => "{}" } }
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- concurrency: 6
--- repeat: 6
--- status_counts: 200=2 429=4
--- timeout: 10
--- check eval
sub {
    my $key = "$::P-7:{acct:carol}:conc";
    for (1 .. 50) {
        last if redis_cli($::RP, 'ZCARD', $key) == 0;
        select undef, undef, undef, 0.05;
    }
    my $n = redis_cli($::RP, 'ZCARD', $key);
    return $n == 0 ? 1 : (0, "$n leases left in $key");
}



=== TEST 8: a refusal starts the cooldown, kept in Redis
--- http_config eval: ::redis_conf(8)
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier hot;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
[("GET /v1/models") x 3]
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code eval
[200, 429, 403]
--- response_headers_like eval
["", "Retry-After: ^(5\\d|6[0-6])\$", "Retry-After: ^(29|30)\$"]
--- response_body_like eval
["", "rate_limit_exceeded", "account_suspended"]
--- check eval
sub {
    my $ttl = redis_cli($::RP, 'PTTL', "$::P-8:{acct:carol}:cool");
    return $ttl > 25000 && $ttl <= 30000 ? 1 : (0, "PTTL $ttl");
}



=== TEST 9: on_error=deny: Redis unreachable is 503 store_unavailable
--- http_config eval
$::Tiers . "llm_redis 127.0.0.1:$ENV{TEST_NGINX_DEAD_PORT} on_error=deny;\n"
--- config eval: $::Gateway
--- request eval
[("GET /v1/models") x 3]
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code eval
[503, 503, 503]
--- response_headers
Retry-After: 1
X-Result: store_error
--- response_body_like: "code":"store_unavailable"
--- error_log eval
qr/llm_redis "127\.0\.0\.1:\d+" failed: .*on_error=deny until it is back/
--- mock_count: 0



=== TEST 10: on_error=allow: through, uncounted, $llm_limit_result store_error
--- http_config eval
$::Tiers . "llm_redis 127.0.0.1:$ENV{TEST_NGINX_DEAD_PORT} on_error=allow;\n"
--- config eval: $::Gateway
--- request eval
[("GET /v1/models") x 5]
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code eval
[200, 200, 200, 200, 200]
--- response_headers
X-Result: store_error
--- mock_count: 5



=== TEST 11: on_error=local (the default): the zone enforces the same limits, one log line per worker
--- workers: 2
--- http_config eval
$::Tiers . "llm_redis 127.0.0.1:$ENV{TEST_NGINX_DEAD_PORT};\n"
--- config eval: $::Gateway
--- request eval
[("GET /v1/models") x 5]
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- error_code eval
[200, 200, 200, 429, 429]
--- response_headers eval
[{ 'X-Result' => 'passed' }, undef, undef, { 'X-Result' => 'limited' }, undef]
--- wait: 1.5
--- check eval
sub {
    my ($c) = @_;
    my $n = () = $c->{error_log} =~ /llm_redis "[^"]+" failed/g;
    return $n >= 1 && $n <= 2 ? 1 : (0, "$n switch lines");
}



=== TEST 12: llm_usage in Redis mode shows the fleet's windows (counts of another node included)
--- http_config eval: ::redis_conf(12)
--- request
GET /plain
--- config eval: $::Gateway . "location = /usage { llm_usage; }\nlocation = /plain { return 200; }\n"
--- check eval
sub {
    for (1 .. 2) {
        my $r = http_request('GET /v1/models',
                             more_headers => "Authorization: Bearer $::ALICE");
        return (0, "gateway: $r->{status}") if $r->{status} != 200;
    }
    # another node counted one more in the current slot
    my $key = "$::P-12:{acct:alice}:w:requests:1m";
    my $now = (split /\n/, redis_cli($::RP, 'TIME'))[0];
    redis_cli($::RP, 'HINCRBY', $key, int($now / 6), 1);
    my $r = http_request('GET /usage',
                         more_headers => "Authorization: Bearer $::ALICE");
    return $r->{body} =~ /"dimension":"requests","period":"1m","limit":3,"used":3,"remaining":0,"reset":(\d+)/
           && $1 > time + 50 && $1 <= time + 67
           ? 1 : (0, "usage: $r->{status} $r->{body}");
}
--- no_error_log
llm_redis



=== TEST 13: llm_usage while Redis is unreachable: this node's zone (what on_error=local counted)
--- http_config eval
$::Tiers . "llm_redis 127.0.0.1:$ENV{TEST_NGINX_DEAD_PORT};\n"
--- config eval: $::Gateway . "location = /usage { llm_usage; }\n"
--- request eval
["GET /v1/models", "GET /v1/models", "GET /usage"]
--- more_headers eval: "Authorization: Bearer $::ALICE"
--- response_body_like eval
["", "", '"dimension":"requests","period":"1m","limit":3,"used":2,"remaining":1,']
