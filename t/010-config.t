# Directives: what nginx -t accepts and how it names what it refuses.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;

our $Tiers = $Test::LLM::Keys::TIERS;
our $KeyFile = $Test::LLM::Keys::KEY_FILE;

run_tests();

__DATA__

=== TEST 1: a complete configuration loads
--- http_config eval: $::Tiers . "llm_tier pro requests=10/s requests=600/m requests=5000/h requests=100000/d requests=1000000/mo concurrency=8 priority=9 cooldown=30s;\n"
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier pro;
    llm_anonymous_tier small;
    llm_headers on;
    llm_api openai;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request
GET /v1/models
--- error_code: 200
--- response_headers
X-Rate-Limit-Limit: 3



=== TEST 2: llm_gateway without llm_zone: the message names the file and line of the llm_gateway (SPEC 3; found: neither)
--- http_config
llm_tier free requests=1/m;
--- config
location /v1/ { llm_gateway on; proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT; }
--- must_die
--- error_log eval
qr/"llm_gateway" in \S+nginx\.conf:\d+ requires "llm_zone" in the http block/



=== TEST 3: unknown tier parameter names the parameter, file and line
--- http_config
llm_zone llm:1m;
llm_tier free requests=1/m bursts=5;
--- config
--- must_die
--- error_log eval
qr/invalid parameter "bursts=5" in \S+nginx\.conf:\d+/



=== TEST 4: a window with an unknown period
--- http_config
llm_zone llm:1m;
llm_tier free requests=10/w;
--- config
--- must_die
--- error_log eval
qr/invalid window "requests=10\/w", expected N\/s, N\/m, N\/h, N\/d or N\/mo in \S+:\d+/



=== TEST 5: a window that is not a positive number
--- http_config
llm_zone llm:1m;
llm_tier free requests=-3/m;
--- config
--- must_die
--- error_log eval
qr/invalid window "requests=-3\/m"/



=== TEST 6: a limit too large for the counters
--- http_config
llm_zone llm:1m;
llm_tier free tokens=5000000000/d;
--- config
--- must_die
--- error_log eval
qr/limit in "tokens=5000000000\/d" is too large/



=== TEST 7: priority outside 0..9
--- http_config
llm_zone llm:1m;
llm_tier free requests=1/m priority=10;
--- config
--- must_die
--- error_log eval
qr/invalid value "priority=10"/



=== TEST 8: a duplicate tier
--- http_config
llm_zone llm:1m;
llm_tier free requests=1/m;
llm_tier free requests=2/m;
--- config
--- must_die
--- error_log eval
qr/duplicate llm_tier "free" in \S+:\d+/



=== TEST 9: llm_default_tier naming no tier, with the line of the directive
--- http_config
llm_zone llm:1m;
llm_tier free requests=1/m;
--- config
location /v1/ { llm_gateway on; llm_default_tier gold; proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT; }
--- must_die
--- error_log eval
qr/unknown llm_tier "gold" in \S+nginx\.conf:\d+/



=== TEST 10: a tier declared after the server that uses it is found
--- http_config
llm_zone llm:1m;
server {
    listen unix:$TEST_NGINX_SERVROOT/late.sock;
    location / { llm_gateway on; llm_anonymous_tier late; return 204; }
}
llm_tier late requests=1/m;
--- config
location = /t { return 200 "loaded\n"; }
--- request
GET /t
--- response_body
loaded



=== TEST 11: a zone without a size
--- http_config
llm_zone llm;
--- config
--- must_die
--- error_log eval
qr/invalid zone "llm", expected NAME:SIZE/



=== TEST 12: a zone too small
--- http_config
llm_zone llm:4k;
--- config
--- must_die
--- error_log eval
qr/zone "llm:4k" is too small/



=== TEST 13: two zones
--- http_config
llm_zone a:1m;
llm_zone b:1m;
--- config
--- must_die
--- error_log eval
qr/"llm_zone" directive is duplicate/



=== TEST 14: a key file that does not exist
--- http_config
llm_zone llm:1m;
llm_key_file /nonexistent/keys.txt;
--- config
--- must_die
--- error_log eval
qr/open\(\) "\/nonexistent\/keys.txt" failed/



=== TEST 15: a key file line with a bad digest names the key file and line
--- http_config
llm_zone llm:1m;
llm_key_file $TEST_NGINX_SERVROOT/keys.txt;
--- user_files
>>> keys.txt
# comment line

2a42e4c415729042128b13e9316e40f4333d8f3bfa64cfbe89f187cc928cc7ce alice
zz42e4c415729042128b13e9316e40f4333d8f3bfa64cfbe89f187cc928cc7ce bob
--- config
--- must_die
--- error_log eval
qr/keys\.txt" line 4: invalid digest/



=== TEST 16: a key file line naming an unknown tier
--- http_config
llm_zone llm:1m;
llm_key_file $TEST_NGINX_SERVROOT/keys.txt;
--- user_files
>>> keys.txt
2a42e4c415729042128b13e9316e40f4333d8f3bfa64cfbe89f187cc928cc7ce alice tier=gold
--- config
--- must_die
--- error_log eval
qr/keys\.txt" line 1: unknown tier "gold"/



=== TEST 17: a key file with a bad expiry and a bad account
--- http_config
llm_zone llm:1m;
llm_key_file $TEST_NGINX_SERVROOT/keys.txt;
--- user_files
>>> keys.txt
2a42e4c415729042128b13e9316e40f4333d8f3bfa64cfbe89f187cc928cc7ce alice expires=tomorrow
--- config
--- must_die
--- error_log eval
qr/keys\.txt" line 1: invalid "expires=tomorrow"/



=== TEST 18: an account name with characters outside [A-Za-z0-9._@-]
--- http_config
llm_zone llm:1m;
llm_key_file $TEST_NGINX_SERVROOT/keys.txt;
--- user_files
>>> keys.txt
2a42e4c415729042128b13e9316e40f4333d8f3bfa64cfbe89f187cc928cc7ce ali/ce
--- config
--- must_die
--- error_log eval
qr/keys\.txt" line 1: invalid account "ali\/ce"/



=== TEST 19: the same digest twice
--- http_config
llm_zone llm:1m;
llm_key_file $TEST_NGINX_SERVROOT/keys.txt;
--- user_files
>>> keys.txt
2a42e4c415729042128b13e9316e40f4333d8f3bfa64cfbe89f187cc928cc7ce alice
2A42E4C415729042128B13E9316E40F4333D8F3BFA64CFBE89F187CC928CC7CE bob
--- config
--- must_die
--- error_log eval
qr/holds a digest twice \(accounts "alice" and "bob"\)/



=== TEST 20: llm_api takes only the known formats
--- http_config
llm_zone llm:1m;
--- config
location /v1/ { llm_api mistral; }
--- must_die
--- error_log eval
qr/invalid value "mistral" in \S+nginx\.conf:\d+/



=== TEST 21: llm_gateway takes on or off
--- http_config
llm_zone llm:1m;
--- config
location /v1/ { llm_gateway yes; }
--- must_die
--- error_log eval
qr/invalid value "yes" in "llm_gateway" directive, it must be "on" or "off" in \S+:\d+/
