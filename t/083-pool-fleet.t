# The provider key pool across nodes (llm_redis): two nginx on one Redis.
# What one node learns about a key (a 429's cooldown, a 401 that disables
# it, a budget spent) is honoured by the other within one sync interval;
# a reload gives this node's disabled keys another chance; with Redis
# down the pool goes on with the node's own state, and what it saw
# meanwhile reaches Redis when it is back.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Client ();
use Time::HiRes ();

our $P  = "t083-$$-" . time;
our $RP = free_port();

redis_start($RP);

# the pool of two keys; requests to the extra node go to $::B
our $B;

sub pool {
    my ($block, %o) = @_;
    my $redis = $o{redis} // $ENV{TEST_NGINX_REDIS_PORT};
    my $keys = $o{keys} // "llm_pool_key a secret=sk-aaa111;\n"
                         . "    llm_pool_key b secret=sk-bbb222;\n";
    return <<"EOF";
llm_redis 127.0.0.1:$redis prefix=$::P-$block: timeout=500ms;
upstream openai {
    server 127.0.0.1:\$TEST_NGINX_MOCK_PORT;
    llm_pool sync=200ms;
    $keys
}
EOF
}

our $Loc = <<'EOF';
location /v1/ {
    proxy_next_upstream error timeout http_429;
    proxy_pass http://openai;
}
EOF

# the key names that served $n requests on $port
sub served {
    my ($port, $n) = @_;
    return join ' ', map {
        my $r = http_request("GET /v1/models", port => $port);
        ($r->{status} // 'none') . ':'
        . ($r->{header}{'x-llm-provider-key'} // '-')
    } 1 .. $n;
}

sub hash_of {
    my ($port, $block) = @_;
    my %h = split /\n/, redis_cli($port, 'HGETALL',
                                  "$P-$block:{pool:openai}") // '';
    return \%h;
}

sub clean {
    my ($logs) = @_;
    return $logs =~ /(.*(?:\[alert\]|\[crit\]|\[emerg\]|AddressSanitizer|exited on signal).*)/
        ? "extra node: $1" : undef;
}

run_tests();

__DATA__

=== TEST 1: a 429 on node A cools the key on node B too, within the sync interval
--- http_config eval: ::pool(1)
--- config eval: $::Loc
--- mock eval
sub {
    my ($req) = @_;
    # the first two attempts with key a are refused; none after
    if (($req->{headers}{authorization} // '') eq 'Bearer sk-aaa111'
        && $req->{n} <= 2)
    {
        return { status => 429, headers => { 'Retry-After' => 30 },
                 body => '{"error":{"message":"slow down"}}' };
    }
    return LLMMock::default_handler($req);
}
--- request eval
[("GET /v1/models") x 2]
--- response_headers eval
[{ 'X-LLM-Provider-Key' => 'b' }, { 'X-LLM-Provider-Key' => 'b' }]
--- error_log
key "a" cools down for 30000ms after a 429
--- check eval
sub {
    my $b = free_port();
    start_extra_nginx($b);
    Time::HiRes::sleep(0.5);
    my $got = ::served($b, 8);
    my $logs = stop_extra_nginx();
    my $h = ::hash_of($ENV{TEST_NGINX_REDIS_PORT}, 1);
    return (0, ::clean($logs)) if ::clean($logs);
    return (0, "node B served: $got") unless $got eq join ' ', ('200:b') x 8;
    return (0, "node B did not log it")
        unless $logs =~ /key "a" cools down for \d+ms \(seen by another node\)/;
    my $left = ($h->{'c:a'} // 0) - int(Time::HiRes::time() * 1000);
    return ($left > 25000 && $left <= 30000,
            "Redis: c:a is ${left}ms ahead; fields: @{[ sort keys %$h ]}");
}



=== TEST 2: without llm_redis the same traffic leaves node B using the key (the test above can fail)
--- http_config
upstream openai {
    server 127.0.0.1:$TEST_NGINX_MOCK_PORT;
    llm_pool;
    llm_pool_key a secret=sk-aaa111;
    llm_pool_key b secret=sk-bbb222;
}
--- config eval: $::Loc
--- mock eval
sub {
    my ($req) = @_;
    if (($req->{headers}{authorization} // '') eq 'Bearer sk-aaa111'
        && $req->{n} <= 2)
    {
        return { status => 429, headers => { 'Retry-After' => 30 },
                 body => '{"error":{"message":"slow down"}}' };
    }
    return LLMMock::default_handler($req);
}
--- request eval
[("GET /v1/models") x 2]
--- check eval
sub {
    my $b = free_port();
    start_extra_nginx($b);
    Time::HiRes::sleep(0.5);
    my $got = ::served($b, 8);
    my $logs = stop_extra_nginx();
    return (0, ::clean($logs)) if ::clean($logs);
    return ($got =~ /200:a/, "node B served: $got");
}



=== TEST 3: a 401 on node A disables the key on node B; a reload of A gives it another chance there, not on B
--- http_config eval: ::pool(3)
--- config eval: $::Loc
--- mock eval
sub {
    my ($req) = @_;
    if (($req->{headers}{authorization} // '') eq 'Bearer sk-aaa111'
        && $req->{n} <= 2)
    {
        return { status => 401, body => '{"error":{"message":"bad key"}}' };
    }
    return LLMMock::default_handler($req);
}
--- request eval
[("GET /v1/models") x 2]
--- error_code eval
[502, 200]
--- error_log
key "a" disabled until reload: the provider answered 401
--- check eval
sub {
    my $b = free_port();
    start_extra_nginx($b);
    Time::HiRes::sleep(0.5);
    my $b1 = ::served($b, 6);
    reload_nginx() or return (0, "reload failed");
    Time::HiRes::sleep(0.5);
    my $a2 = ::served($ENV{TEST_NGINX_SERVER_PORT}, 6);
    my $b2 = ::served($b, 4);
    my $logs = stop_extra_nginx();
    return (0, ::clean($logs)) if ::clean($logs);
    return (0, "node B did not log it")
        unless $logs =~ /key "a" disabled until reload: the provider refused it on another node/;
    return ($b1 eq join(' ', ('200:b') x 6) && $a2 =~ /200:a/
            && $b2 eq join(' ', ('200:b') x 4),
            "B before: $b1; A after its reload: $a2; B after: $b2");
}



=== TEST 4: requests=6/h across two nodes, requests further apart than the sync interval: exactly 6 attempts in all
--- http_config eval: ::pool(4, keys => 'llm_pool_key a secret=sk-aaa111 requests=6/h;')
--- config eval: $::Loc
--- request
GET /v1/models
--- timeout: 20
--- check eval
sub {
    my $b = free_port();
    start_extra_nginx($b);
    my @got;
    for my $i (0 .. 15) {
        Time::HiRes::sleep(0.35);
        my $port = $i % 2 ? $b : $ENV{TEST_NGINX_SERVER_PORT};
        push @got, http_request("GET /v1/models", port => $port)->{status};
    }
    my $logs = stop_extra_nginx();
    return (0, ::clean($logs)) if ::clean($logs);
    my $ok = grep { $_ == 200 } @got;
    my $n = mock_requests();
    my $h = ::hash_of($ENV{TEST_NGINX_REDIS_PORT}, 4);
    my ($count) = ($h->{'r:3600000:a'} // '') =~ /^\d+ (\d+) \d+$/;
    # the block's own request, then 16: one node alone would allow 6 more
    return ($ok == 5 && $n == 6 && ($count // 0) == 6,
            "200s: $ok of 16 (@got); attempts: $n; Redis: "
            . ($h->{'r:3600000:a'} // 'none'));
}



=== TEST 5: the same without llm_redis: each node spends the budget on its own (the test above can fail)
--- http_config
upstream openai {
    server 127.0.0.1:$TEST_NGINX_MOCK_PORT;
    llm_pool;
    llm_pool_key a secret=sk-aaa111 requests=6/h;
}
--- config eval: $::Loc
--- request
GET /v1/models
--- timeout: 20
--- check eval
sub {
    my $b = free_port();
    start_extra_nginx($b);
    my @got;
    for my $i (0 .. 15) {
        Time::HiRes::sleep(0.05);
        my $port = $i % 2 ? $b : $ENV{TEST_NGINX_SERVER_PORT};
        push @got, http_request("GET /v1/models", port => $port)->{status};
    }
    my $logs = stop_extra_nginx();
    return (0, ::clean($logs)) if ::clean($logs);
    my $n = mock_requests();
    return ($n == 12, "attempts: $n (@got)");
}



=== TEST 6: Redis down: the pool goes on with the node's own state, no error to a client, one log line; back: the node's own cooldown reaches Redis
--- workers: 1
--- http_config eval: ::pool(6, redis => $::RP)
--- mock eval
sub {
    my ($req) = @_;
    if (($req->{headers}{authorization} // '') eq 'Bearer sk-aaa111') {
        return { status => 429, headers => { 'Retry-After' => 40 },
                 body => '{"error":{"message":"slow down"}}' };
    }
    return LLMMock::default_handler($req);
}
--- request
GET /plain
--- config eval
$::Loc . "location = /plain { return 200 ok; }\n"
--- check eval
sub {
    my ($c) = @_;
    Time::HiRes::sleep(0.3);
    redis_stop($::RP);
    Time::HiRes::sleep(0.5);
    my $down = ::served($ENV{TEST_NGINX_SERVER_PORT}, 6);
    Time::HiRes::sleep(0.5);
    my $log = errlog();
    my $failed = () = $log =~ /llm_redis "[^"]+" failed/g;
    my @errors = grep { /\[(error|alert|crit)\]/ } split /\n/, $log;
    redis_start($::RP);
    Time::HiRes::sleep(1.5);
    my $h = ::hash_of($::RP, 6);
    my $left = ($h->{'c:a'} // 0) - int(Time::HiRes::time() * 1000);
    return ($down eq join(' ', ('200:b') x 6) && $failed == 1
            && @errors == 1 && $left > 30000 && $left <= 40000,
            "while down: $down; 'failed' lines: $failed; errors: "
            . join(' | ', @errors) . "; back: c:a ${left}ms ahead");
}
