# Review 7: the shared-memory mode and the key pool.  Each block is a
# reproducer of what the review found (each failed before its fix); it
# says what a user sees and what SPEC says.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use IO::Socket::INET ();
use Time::HiRes ();

our $Tiers = $Test::LLM::Keys::TIERS;
our $CAROL = $Test::LLM::Keys::CAROL;

our @Addrs = map { sprintf "10.%d.%d.%d", $_ >> 16 & 255, $_ >> 8 & 255,
                   $_ & 255 } 1 .. 400;

# 70 clients fit a 32 KB zone at 256 bytes each (70 IPv4 ones do)
our @V6 = map { sprintf "2001:db8:1234:5678:9abc:def0:%x:%x", $_ >> 8,
                $_ & 255 } 1 .. 70;

run_tests();

__DATA__

=== TEST 1: a full zone whose least recently used entries hold slots still evicts an idle entry: ten long streams, then 400 new clients are served (review7: 503 store_unavailable, "every entry is busy", while hundreds were idle)
--- http_config
llm_zone llm:32k;
llm_tier anon requests=100/m concurrency=2;
--- config
location /v1/ {
    llm_gateway on;
    llm_anonymous_tier anon;
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub { my $r = shift;
      return $r->{uri} =~ /slow/ ? { delay => 6, body => "{}" }
                                 : { body => "{}" } }
--- request
GET /v1/models
--- check eval
sub {
    my @slow;

    # ten clients whose requests run long: their entries hold a slot,
    # and nothing touches them again, so they sink to the LRU's tail
    for my $i (1 .. 10) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $ENV{TEST_NGINX_SERVER_PORT})
            or die "connect: $!";
        print $s "GET /v1/slow HTTP/1.1\r\nHost: t\r\n"
                 . "X-Forwarded-For: 192.0.2.$i\r\n\r\n";
        push @slow, $s;
    }

    Time::HiRes::sleep(0.5);

    my $n = Test::LLM::Client::burst($ENV{TEST_NGINX_SERVER_PORT},
                                     '/v1/models', \@::Addrs, 20);
    close $_ for @slow;

    return $n == @::Addrs ? 1 : (0, "$n of " . @::Addrs . " served");
}
--- error_log eval
[qr/llm_zone "llm" is full, evicting the least recently used entries/]
--- no_error_log
every entry is busy
--- timeout: 30



=== TEST 2: SPEC 10 "zone cost <= 256 bytes per tracked client": an IPv6 client of a three-window anonymous tier costs 512 (its "anon:ADDR" name makes the node 279 bytes, the next slab chunk is 512), so a zone holds half as many IPv6 clients as IPv4 ones: 70 fill 32 KB and evict (README: "256 bytes for a tier of up to three windows"; also any account name over 21 characters)
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
}
--- request eval
[ map { "GET /v1/models" } @::V6 ]
--- more_headers eval
[ map { "X-Forwarded-For: $_" } @::V6 ]
--- error_code eval
[ map { 200 } @::V6 ]
--- no_error_log
is full



=== TEST 3: a provider's absurd "Retry-After: 18446744073709552" (seconds) cools its key for ages, not for 384 ms: seconds times 1000 overflowed ngx_msec_t in ngx_http_llm_pool_outcome() and the key came back at once (SPEC 3: "a 429 from the backend cools the key down for its Retry-After")
--- http_config
upstream openai {
    server 127.0.0.1:$TEST_NGINX_MOCK_PORT;
    llm_pool;
    llm_pool_key a secret=sk-aaa111;
    llm_pool_key b secret=sk-bbb222;
}
--- config
location /v1/ {
    proxy_next_upstream error timeout http_429;
    proxy_pass http://openai;
}
--- mock eval
sub {
    my ($req) = @_;
    my $a = $req->{headers}{authorization} // '';
    if ($a eq 'Bearer sk-aaa111') {
        return { status => 429,
                 headers => { 'Retry-After' => '18446744073709552' },
                 body => '{"error":{"message":"slow down"}}' };
    }
    return LLMMock::default_handler($req);
}
--- request eval
[("GET /v1/models") x 4]
--- request_delay eval
[0, 1, 0, 0]
--- response_headers eval
[{ 'X-LLM-Provider-Key' => 'b' }, { 'X-LLM-Provider-Key' => 'b' },
 { 'X-LLM-Provider-Key' => 'b' }, { 'X-LLM-Provider-Key' => 'b' }]
--- no_error_log
cools down for 384ms
--- check eval
sub {
    my @a = grep { ($_->{headers}{authorization} // '') eq 'Bearer sk-aaa111' }
            mock_requests();
    return (@a <= 1, scalar(@a) . " attempts with key a, expected 1");
}



=== TEST 4: contradictory llm_tier parameters fail nginx -t, naming the parameter, file and line (SPEC 3: "contradictory settings fail nginx -t"; review7: "cooldown=1s cooldown=1h" started, the last one silently won)
--- http_config
llm_zone llm:1m;
llm_tier free requests=1/m cooldown=1s cooldown=1h;
--- config
--- must_die
--- error_log eval
qr/duplicate parameter "cooldown=1h" in \S+nginx\.conf:\d+/



=== TEST 5: the same window twice in a tier (requests=10/m requests=20/m) fails nginx -t: which limit holds? (review7: accepted, both counted, the stricter won, /usage showed two "requests 1m" windows)
--- http_config
llm_zone llm:1m;
llm_tier free requests=10/m requests=1000/h requests=20/m;
--- config
--- must_die
--- error_log eval
qr/duplicate window "requests=20\/m" in \S+nginx\.conf:\d+/



=== TEST 6: a key file line that gives a key two tiers or two expiry times fails nginx -t, naming the file, line and parameter (review7: "tier=free tier=pro" started with the last one, so a typo'd line silently gave the key the wrong tier; "expires=2020-01-01 expires=2999-01-01" revived an expired key)
--- http_config
llm_zone llm:1m;
llm_tier free requests=1/m;
llm_tier pro requests=100/m;
llm_key_file $TEST_NGINX_SERVROOT/keys.txt;
--- user_files
>>> keys.txt
2a42e4c415729042128b13e9316e40f4333d8f3bfa64cfbe89f187cc928cc7ce alice tier=free
3a42e4c415729042128b13e9316e40f4333d8f3bfa64cfbe89f187cc928cc7ce bob tier=free tier=pro
--- config
--- must_die
--- error_log eval
qr/keys\.txt" line 2: duplicate parameter "tier=pro"/



=== TEST 7: /usage of a tier whose name holds control characters (nginx -t takes any bytes in a quoted name) answers JSON-escaped, within its buffer (review7: ngx_http_llm_usage() sized the name at twice its length, ngx_escape_json writes six bytes for each: a heap overflow, an ASan report or a corrupt pool)
--- http_config eval
$::Tiers . "llm_tier \"" . ("\x01" x 200) . "\" requests=5/m;\n"
--- config eval
"location = /usage { llm_usage; llm_default_tier \"" . ("\x01" x 200)
. "\"; }"
--- request
GET /usage
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code: 200
--- response_body_like eval
'^\{"account":"carol","key_id":"[0-9a-f]{12}","tier":"(\\\\u0001){200}","windows":\[\{"dimension":"requests","period":"1m","limit":5,"used":0,"remaining":5,"reset":\d+\}\]\}$'
