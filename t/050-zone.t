# The zone: a full zone evicts its least recently used idle entries (and says
# so once), and keeps serving.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;

our @Addrs = map { sprintf "10.%d.%d.%d", $_ >> 16 & 255, $_ >> 8 & 255, $_ & 255 } 1 .. 400;

run_tests();

__DATA__

=== TEST 1: 400 clients through a 32 KB zone: all served, eviction logged once
--- http_config
llm_zone llm:32k;
llm_tier anon requests=5/m requests=50/h requests=100/d;
--- config
location /v1/ {
    llm_gateway on;
    llm_anonymous_tier anon;
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    add_header X-Account $llm_account always;
}
--- mock eval
sub { return { body => "{}" } }
--- request eval
[ map { "GET /v1/models" } @::Addrs ]
--- more_headers eval
[ map { "X-Forwarded-For: $_" } @::Addrs ]
--- error_code eval
[ map { 200 } @::Addrs ]
--- response_headers eval
[ map { "X-Account: anon:$_\nX-Rate-Limit-Remaining: 4" } @::Addrs ]
--- error_log eval
[qr/llm_zone "llm" is full, evicting the least recently used entries/]
--- timeout: 30



=== TEST 2: an entry that was not evicted keeps its count
--- http_config
llm_zone llm:32k;
llm_tier anon requests=2/m;
--- config
location /v1/ {
    llm_gateway on;
    llm_anonymous_tier anon;
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models"]
--- more_headers
X-Forwarded-For: 192.0.2.7
--- error_code eval
[200, 200, 429]
--- no_error_log
is full
