# llm_redis pointed at a Redis Cluster node: it talks to one Redis, and
# every account's keys share one hash slot (SPEC 3), so a node that does
# not serve an account's slot answers MOVED.  The error log says what it
# is and what to do (a standalone Redis or a cluster proxy), and requests
# follow on_error.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;

our $CAROL = $Test::LLM::Keys::CAROL;
our $P     = "t103-$$-" . time;

# two cluster nodes, each serving half of the slots; their cluster bus
# ports are free ports too (by default a bus listens on the port + 10000,
# which may be one of the kernel's ephemeral ports, in use)
our @NODE = (free_port(), free_port());
our @BUS  = (free_port(), free_port());

for my $i (0, 1) {
    my $dir = "$Test::LLM::Nginx::ROOT/t/servroot/redis-$NODE[$i]";
    unlink "$dir/nodes.conf";
    redis_start($NODE[$i], '--cluster-enabled', 'yes',
                '--cluster-port', $BUS[$i],
                '--cluster-config-file', 'nodes.conf');
}

redis_cli($NODE[0], 'CLUSTER', 'ADDSLOTSRANGE', 0, 8191);
redis_cli($NODE[1], 'CLUSTER', 'ADDSLOTSRANGE', 8192, 16383);
redis_cli($NODE[0], 'CLUSTER', 'MEET', '127.0.0.1', $NODE[1], $BUS[1]);

for (1 .. 100) {
    last if (redis_cli($NODE[0], 'CLUSTER', 'INFO') // '')
            =~ /cluster_state:ok/;
    select undef, undef, undef, 0.1;
}

# the node that does not serve carol's slot
our $SLOT = (redis_cli($NODE[0], 'CLUSTER', 'KEYSLOT', 'acct:carol') // 0)
            + 0;
our $OTHER = $SLOT < 8192 ? $NODE[1] : $NODE[0];

run_tests();

__DATA__

=== TEST 1: a cluster node that does not serve the account's slot answers MOVED: the error log says llm_redis talks to one Redis, and the zone decides (on_error=local)
--- http_config eval
$Test::LLM::Keys::TIERS
. "llm_redis 127.0.0.1:$::OTHER prefix=$::P: timeout=1s;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier small;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    add_header X-Result "$llm_limit_result" always;
}
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code: 200
--- response_headers
X-Result: passed
--- error_log eval
qr/llm_redis "127\.0\.0\.1:\d+" failed: MOVED \d+ 127\.0\.0\.1:\d+ \(a Redis Cluster node: llm_redis talks to one Redis, which must hold every account; use a standalone Redis or a cluster proxy\); requests follow on_error=local/
