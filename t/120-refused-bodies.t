# A body the gateway refuses (400 invalid_request_error: not JSON, not the
# API's shape; 413 request_too_large: a chunked body over
# client_max_body_size) is a request of its key's windows all the same: it
# costs one request and no tokens, carries the rate-limit headers (SPEC 4:
# every response of a gateway location), and a window that refuses it
# answers it (429, 403 in a cooldown, 503 with on_error=deny) as it would
# a good body.  In the zone and in Redis.  Each block failed before (the
# 400 or 413 went out bare, counted nowhere, whatever the windows said).

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat qw(chat post);

our $Auth = "Authorization: Bearer $Test::LLM::Keys::CAROL";
our $RP   = $ENV{TEST_NGINX_REDIS_PORT};
our $P    = "t120-$$-" . time;          # this run's Redis keys

our $Http = $Test::LLM::Keys::TIERS . <<'_EOC_';
    llm_tier tok requests=3/m tokens=1000/m;
    llm_tier hot requests=1/m tokens=1000/m cooldown=30s;
    llm_tier tc requests=5/m tokens=1000/m cost=1/m;
    llm_tier one requests=100/m tokens=1000/m concurrency=1;
    llm_price gpt-4o input=2.50 output=10.00;
_EOC_

sub redis {
    my ($block, $extra) = @_;
    return $::Http . "llm_redis 127.0.0.1:$::RP prefix=$::P-$block: "
           . ($extra // '') . ";\n";
}

our $Gateway = <<'_EOC_';
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    client_max_body_size 100;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location /v1beta/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /usage {
    llm_usage;
}
_EOC_

# not JSON; JSON of the wrong shape
our $Bad   = '{"model":"gpt-4o","messages":[';
our $Shape = '{"model":"gpt-4o","max_tokens":0,"messages":[]}';
our $Good  = chat(max => 10);

# a chunked body of 300 bytes (client_max_body_size 100)
our $Chunked = sprintf("%x\r\n%s\r\n0\r\n\r\n", 300, 'x' x 300);
our $Te = "$Auth\r\nTransfer-Encoding: chunked";

# the headers of carol's tok window with N requests left, tokens untouched
sub left {
    my ($n) = @_;
    return { 'X-Rate-Limit-Limit' => 3, 'X-Rate-Limit-Remaining' => $n,
             'x-ratelimit-limit-requests' => 3,
             'x-ratelimit-remaining-requests' => $n,
             'x-ratelimit-limit-tokens' => 1000,
             'x-ratelimit-remaining-tokens' => 1000,
             'Retry-After' => undef, 'x-should-retry' => undef };
}

our $Spent = { 'X-Rate-Limit-Remaining' => 0,
               'x-ratelimit-remaining-requests' => 0,
               'x-ratelimit-remaining-tokens' => 1000 };

# carol's chunked body in two chunks of 60 bytes, the second 0.3 s after
# the first: nginx finds it over 100 bytes in a later read than the first
sub late {
    my ($uri) = @_;
    my $head = "POST $uri HTTP/1.1\r\nHost: localhost\r\n"
        . "Connection: close\r\n$::Te\r\n\r\n";
    my $chunk = sprintf("%x\r\n%s\r\n", 60, 'x' x 60);
    return Test::LLM::Client::exchange(port => $ENV{TEST_NGINX_SERVER_PORT},
        method => 'POST', timeout => 5,
        pieces => [$head . $chunk, { delay => 0.3 }, $chunk . "0\r\n\r\n"]);
}

# after the block's request, three such bodies: 413s with the windows'
# headers, the third over the spent window all the same (a body not read
# to its end has nothing an error_page could send on), then a good
# request's 429
sub late3 {
    my @r = map { ::late("/v1/chat/completions") } 1 .. 3;
    my $got = join ' ', map {
        ($_->{status} // 'none') . '/'
        . (Test::LLM::Client::header($_, 'X-Rate-Limit-Remaining') // '-')
    } @r;
    return (0, "status/remaining: $got")
        unless $got eq '413/1 413/0 413/0';
    return (0, "the first: $r[0]{body}")
        unless $r[0]{body} =~ /"code":"request_too_large"/;
    return (0, "the third: $r[2]{body}")
        unless $r[2]{body} =~ /"code":"request_too_large"/;
    my $g = http_request("POST /v1/chat/completions",
                         more_headers => $::Auth, body => $::Good);
    return (0, "the good one: $g->{status} $g->{body}")
        unless $g->{status} == 429
               && $g->{body} =~ /"code":"rate_limit_exceeded"/;
    return 1;
}

# on one kept-alive connection: carol's POST of "body" in two pieces, the
# second 0.3 s after the first (nginx reads it in two reads), then a GET;
# the two responses' status lines and bodies
sub split_then_get {
    my ($body) = @_;
    require IO::Socket::INET;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $ENV{TEST_NGINX_SERVER_PORT}, Timeout => 5)
        or return "connect: $!";
    my $head = "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
        . "$::Auth\r\nContent-Type: application/json\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n";
    syswrite($s, $head . substr($body, 0, 10));
    select(undef, undef, undef, 0.3);
    syswrite($s, substr($body, 10));
    my $one = read_response($s);
    syswrite($s, "GET /v1/models HTTP/1.1\r\nHost: localhost\r\n"
                 . "$::Auth\r\nConnection: close\r\n\r\n");
    my $two = read_response($s);
    close $s;
    return "$one\n$two";
}

# one response from a socket: its status line and body (Content-Length)
sub read_response {
    my ($s) = @_;
    my $buf = '';
    my $end = time + 5;
    while (time < $end) {
        if ($buf =~ /\r\n\r\n/) {
            my ($len) = $buf =~ /^Content-Length: (\d+)/mi;
            my $h = index($buf, "\r\n\r\n") + 4;
            last if defined $len && length($buf) >= $h + $len;
        }
        my $rin = '';
        vec($rin, fileno $s, 1) = 1;
        last unless select($rin, undef, undef, 0.5);
        last unless sysread($s, $buf, 65536, length $buf);
    }
    my ($status) = $buf =~ /^(HTTP\S+ \d+)/;
    my $h = index($buf, "\r\n\r\n");
    return ($status // 'none') . ' ' . ($h < 0 ? '' : substr($buf, $h + 4));
}

our @Resets = ('X-Rate-Limit-Reset: ^\d{10}$'
               . "\nx-ratelimit-reset-requests: ^(1m[0-6]s|[5-9]\\ds)\$"
               . "\nx-ratelimit-reset-tokens: ^\\d+ms\$");

# a chunked body over the limit whose client lingers (its connection
# stays open after the 413); meanwhile another request of the account's
sub linger {
    require IO::Socket::INET;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $ENV{TEST_NGINX_SERVER_PORT}, Timeout => 5)
        or return (0, "connect: $!");
    syswrite($s, "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                 . "$::Te\r\n\r\n" . sprintf("%x\r\n", 300) . 'x' x 300);
    my $one = ::read_response($s);
    # the client lingers: its connection stays open
    my $g = http_request("POST /v1/chat/completions",
                         more_headers => $::Auth, body => $::Good);
    close $s;
    return (0, "the chunked body: $one") unless $one =~ /^HTTP\S+ 413 /;
    return ($g->{status} == 200, "meanwhile: $g->{status} $g->{body}");
}

run_tests();

__DATA__

=== TEST 1: a body that is not JSON, and one not of the API's shape, get their 400 with the request window counted (remaining 2, then 1) and the token window as it stands; a keyless one still gets a bare 401 and costs carol nothing (zone)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval
[::post("/v1/chat/completions", $::Bad),
 ::post("/v1/chat/completions", $::Bad),
 ::post("/v1/chat/completions", $::Shape)]
--- more_headers eval
[$::Auth, "", $::Auth]
--- error_code eval
[400, 401, 400]
--- response_headers eval
[::left(2), { 'X-Rate-Limit-Limit' => undef,
              'x-ratelimit-limit-tokens' => undef }, ::left(1)]
--- response_headers_like eval
[@::Resets, "", @::Resets]
--- response_body_like eval
['^\{"error":\{"message":"request body is not valid JSON: [^"]+","type":"invalid_request_error","param":null,"code":"invalid_request_error"\}\}$',
 '"code":"invalid_api_key"',
 '^\{"error":\{"message":"\\\\"max_tokens\\\\" must be an integer from 1 to 2147483647","type":"invalid_request_error"']
--- mock_count: 0



=== TEST 2: the same in Redis
--- http_config eval: ::redis(2)
--- config eval: $::Gateway
--- request eval
[::post("/v1/chat/completions", $::Bad),
 ::post("/v1/chat/completions", $::Bad),
 ::post("/v1/chat/completions", $::Shape)]
--- more_headers eval
[$::Auth, "", $::Auth]
--- error_code eval
[400, 401, 400]
--- response_headers eval
[::left(2), { 'X-Rate-Limit-Limit' => undef,
              'x-ratelimit-limit-tokens' => undef }, ::left(1)]
--- response_headers_like eval
[@::Resets, "", @::Resets]
--- response_body_like eval
['"type":"invalid_request_error"', '"code":"invalid_api_key"',
 '"type":"invalid_request_error"']
--- mock_count: 0



=== TEST 3: three bad bodies spend requests=3/m: the next request, good or bad, gets the window's 429 rate_limit_exceeded with Retry-After, not a 400, and reaches no backend (zone)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval
[(::post("/v1/chat/completions", $::Bad)) x 3,
 ::post("/v1/chat/completions", $::Good),
 ::post("/v1/chat/completions", $::Bad)]
--- more_headers eval: $::Auth
--- error_code eval
[400, 400, 400, 429, 429]
--- response_headers eval
[::left(2), ::left(1), ::left(0), $::Spent, $::Spent]
--- response_headers_like eval
["", "", "", "Retry-After: ^([1-5]?\\d|6[0-6])\$\nretry-after-ms: ^\\d+\$",
 "Retry-After: ^([1-5]?\\d|6[0-6])\$\nretry-after-ms: ^\\d+\$"]
--- response_body_like eval
["", "", "", '"code":"rate_limit_exceeded"', '"code":"rate_limit_exceeded"']
--- mock_count: 0



=== TEST 4: the same in Redis
--- http_config eval: ::redis(4)
--- config eval: $::Gateway
--- request eval
[(::post("/v1/chat/completions", $::Bad)) x 3,
 ::post("/v1/chat/completions", $::Good),
 ::post("/v1/chat/completions", $::Bad)]
--- more_headers eval: $::Auth
--- error_code eval
[400, 400, 400, 429, 429]
--- response_headers eval
[::left(2), ::left(1), ::left(0), $::Spent, $::Spent]
--- response_headers_like eval
["", "", "", "Retry-After: ^([1-5]?\\d|6[0-6])\$\nretry-after-ms: ^\\d+\$",
 "Retry-After: ^([1-5]?\\d|6[0-6])\$\nretry-after-ms: ^\\d+\$"]
--- response_body_like eval
["", "", "", '"code":"rate_limit_exceeded"', '"code":"rate_limit_exceeded"']
--- mock_count: 0
--- check eval
sub {
    my $keys = ::redis_cli($::RP, 'KEYS', "$::P-4:*");
    return (0, "no window in Redis: $keys") unless $keys =~ /:w:requests:1m/;
    return 1;
}



=== TEST 5: a chunked body over client_max_body_size gets its JSON 413 with the windows' headers and counts: the fourth such body finds the window spent (its headers say so), and gets its own 413 all the same, a body not read to its end being nothing an error_page could send on; a good request then gets the 429 (zone)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval
[("POST /v1/chat/completions\n$::Chunked") x 4,
 ::post("/v1/chat/completions", $::Good)]
--- more_headers eval
[($::Te) x 4, $::Auth]
--- error_code eval
[413, 413, 413, 413, 429]
--- response_headers eval
[::left(2), ::left(1), ::left(0), $::Spent, $::Spent]
--- response_body_like eval
['^\{"error":\{"message":"Request body is larger than the limit of 100 bytes\.","type":"request_too_large","param":null,"code":"request_too_large"\}\}$',
 '"code":"request_too_large"', '"code":"request_too_large"',
 '"code":"request_too_large"', '"code":"rate_limit_exceeded"']
--- error_log
client intended to send too large chunked body
--- mock_count: 0



=== TEST 6: the same in Redis
--- http_config eval: ::redis(6)
--- config eval: $::Gateway
--- request eval
[("POST /v1/chat/completions\n$::Chunked") x 4,
 ::post("/v1/chat/completions", $::Good)]
--- more_headers eval
[($::Te) x 4, $::Auth]
--- error_code eval
[413, 413, 413, 413, 429]
--- response_headers eval
[::left(2), ::left(1), ::left(0), $::Spent, $::Spent]
--- response_body_like eval
['"code":"request_too_large"', '"code":"request_too_large"',
 '"code":"request_too_large"', '"code":"request_too_large"',
 '"code":"rate_limit_exceeded"']
--- mock_count: 0



=== TEST 7: a chunked body that goes over client_max_body_size in a later read than the first, after the access handler has returned: counted as well: after a GET, two 413s, a third 413 over the spent window, then a good request's 429 (zone)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- error_code: 200
--- check eval: \&::late3
--- error_log
client intended to send too large chunked body
--- mock_count: 1



=== TEST 8: the same in Redis
--- http_config eval: ::redis(8)
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- error_code: 200
--- check eval: \&::late3
--- mock_count: 1



=== TEST 9: token and cost windows are untouched by refused bodies: after a good request charged 30 tokens, a bad one reports 970 left and the account's usage says 2 requests, 30 tokens, the good one's cost
--- http_config eval: $::Http
--- config
llm_default_tier tc;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /usage {
    llm_usage;
}
--- request eval
[::post("/v1/chat/completions", $::Good),
 ::post("/v1/chat/completions", $::Bad),
 "GET /usage"]
--- more_headers eval: $::Auth
--- error_code eval
[200, 400, 200]
--- response_headers eval
["x-ratelimit-remaining-requests: 4",
 "x-ratelimit-remaining-requests: 3\nx-ratelimit-remaining-tokens: 970",
 ""]
--- response_body_like eval
["", "", '"dimension":"requests","period":"1m","limit":5,"used":2,.*"dimension":"tokens","period":"1m","limit":1000,"used":30,.*"dimension":"cost","period":"1m","limit":1.000000,"used":0.000225,']



=== TEST 10: the same in Redis (the good request's usage is settled there after its answer: the bad one waits for it)
--- http_config eval: ::redis(10)
--- config
llm_default_tier tc;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /usage {
    llm_usage;
}
--- request eval
[::post("/v1/chat/completions", $::Good),
 ::post("/v1/chat/completions", $::Bad),
 "GET /usage"]
--- request_delay eval
[0, 0.5, 0]
--- more_headers eval: $::Auth
--- error_code eval
[200, 400, 200]
--- response_headers eval
["x-ratelimit-remaining-requests: 4",
 "x-ratelimit-remaining-requests: 3\nx-ratelimit-remaining-tokens: 970",
 ""]
--- response_body_like eval
["", "", '"dimension":"requests","period":"1m","limit":5,"used":2,.*"dimension":"tokens","period":"1m","limit":1000,"used":30,.*"dimension":"cost","period":"1m","limit":1.000000,"used":0.000225,']



=== TEST 11: Anthropic's and Gemini's shapes: their 400 and 413 with the headers, then the window's 429 in their shape (rate_limit_error, RESOURCE_EXHAUSTED)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval
[::post("/v1/messages", $::Bad),
 ::post("/v1beta/models/gemini-2.0-flash:generateContent", $::Bad),
 "POST /v1/messages\n$::Chunked",
 ::post("/v1/messages", $::Bad),
 ::post("/v1beta/models/gemini-2.0-flash:generateContent", $::Bad)]
--- more_headers eval
[$::Auth, $::Auth, $::Te, $::Auth, $::Auth]
--- error_code eval
[400, 400, 413, 429, 429]
--- response_headers eval
[::left(2), ::left(1), ::left(0), $::Spent, $::Spent]
--- response_body_like eval
['^\{"type":"error","error":\{"type":"invalid_request_error","message":"request body is not valid JSON',
 '^\{"error":\{"code":400,"message":"request body is not valid JSON[^"]*","status":"INVALID_ARGUMENT"\}\}$',
 '^\{"type":"error","error":\{"type":"request_too_large","message":"Request body is larger than the limit of 100 bytes\."\}\}$',
 '^\{"type":"error","error":\{"type":"rate_limit_error","message":"Rate limit reached for requests per 1m',
 '^\{"error":\{"code":429,"message":"Rate limit reached for requests per 1m.*","status":"RESOURCE_EXHAUSTED"\}\}$']
--- mock_count: 0



=== TEST 12: cooldown rules apply to refused bodies as to any: the second one is refused by the window (429) and starts the cooldown, the third gets its 403
--- http_config eval: $::Http
--- config
llm_default_tier hot;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
[(::post("/v1/chat/completions", $::Bad)) x 3]
--- more_headers eval: $::Auth
--- error_code eval
[400, 429, 403]
--- response_body_like eval
['"code":"invalid_request_error"', '"code":"rate_limit_exceeded"',
 '"code":"account_suspended"']
--- response_headers_like eval
["X-Rate-Limit-Remaining: ^0\$", "Retry-After: ^\\d+\$",
 "Retry-After: ^(29|30)\$"]
--- mock_count: 0



=== TEST 13: llm_headers off: no rate-limit header on the 400, but the bad bodies count all the same
--- http_config eval: $::Http
--- config
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    llm_headers off;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
[(::post("/v1/chat/completions", $::Bad)) x 4]
--- more_headers eval: $::Auth
--- error_code eval
[400, 400, 400, 429]
--- response_headers eval
{ 'X-Rate-Limit-Limit' => undef, 'X-Rate-Limit-Remaining' => undef,
  'x-ratelimit-remaining-requests' => undef,
  'x-ratelimit-remaining-tokens' => undef, 'Retry-After' => undef }
--- mock_count: 0



=== TEST 14: Redis unreachable with on_error=deny: a bad body gets the 503 store_unavailable any request gets
--- http_config eval
$::Http . "llm_redis 127.0.0.1:$ENV{TEST_NGINX_DEAD_PORT} timeout=200ms on_error=deny;\n"
--- config eval: $::Gateway
--- request eval
[(::post("/v1/chat/completions", $::Bad)) x 2]
--- more_headers eval: $::Auth
--- error_code eval
[503, 503]
--- response_body_like: "code":"store_unavailable"
--- mock_count: 0



=== TEST 15: Redis unreachable with on_error=local: bad bodies count in the zone, with its headers
--- http_config eval
$::Http . "llm_redis 127.0.0.1:$ENV{TEST_NGINX_DEAD_PORT} timeout=200ms on_error=local;\n"
--- config eval: $::Gateway
--- request eval
[(::post("/v1/chat/completions", $::Bad)) x 4]
--- more_headers eval: $::Auth
--- error_code eval
[400, 400, 400, 429]
--- response_headers eval
[::left(2), ::left(1), ::left(0), $::Spent]
--- mock_count: 0



=== TEST 16: Redis unreachable with on_error=allow: a bad body is let in uncounted, so its 400 goes out without the windows' headers, and is never sent on to the backend; $llm_limit_result says rejected
--- http_config eval
$::Http . "llm_redis 127.0.0.1:$ENV{TEST_NGINX_DEAD_PORT} timeout=200ms on_error=allow;\n"
. "log_format res '\$llm_account|\$llm_limit_result|\$status';\n"
--- config
access_log logs/access.log res;
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
[::post("/v1/chat/completions", $::Bad), ::post("/v1/chat/completions", $::Good)]
--- more_headers eval: $::Auth
--- error_code eval
[400, 200]
--- response_headers eval
{ 'X-Rate-Limit-Limit' => undef }
--- error_log eval
[["on_error applies"], ["on_error applies"]]
--- access_log_like
^carol\|rejected\|400$
^carol\|store_error\|200$
--- mock_count: 1



=== TEST 17: a bad body that arrives in two reads on a kept-alive connection: its 400 (request window counted), then the next request on the same connection is served (before the fix nginx wrote into the request after the body handler had finalized and freed it: an ASan heap-use-after-free)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- error_code: 200
--- check eval
sub {
    my $got = ::split_then_get($::Bad);
    return ($got =~ /^HTTP\S+ 400 .*"code":"invalid_request_error".*\nHTTP\S+ 200 /s
            ? 1 : 0,
            "responses: $got");
}
--- mock_count: 2



=== TEST 18: a good body that arrives in two reads on a kept-alive connection, over a spent window: the window's 429, and the connection still serves the next request (its 429 too)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models"]
--- more_headers eval: $::Auth
--- error_code eval
[200, 200, 200]
--- check eval
sub {
    my $got = ::split_then_get($::Good);
    return ($got =~ /^HTTP\S+ 429 .*rate_limit_exceeded.*\nHTTP\S+ 429 /s
            ? 1 : 0,
            "responses: $got");
}
--- mock_count: 3



=== TEST 19: a chunked body refused as too large gives its concurrency slot back at once, not when nginx's lingering close of its connection ends: another request of the account's is served meanwhile (before: 429 "Too many concurrent requests" for up to lingering_timeout)
--- http_config eval: $::Http
--- config
llm_default_tier one;
location /v1/ {
    llm_gateway on;
    client_max_body_size 100;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- error_code: 200
--- check eval: \&::linger
--- mock_count: 2



=== TEST 20: "error_page 429 = @overflow" does not send on a body nginx could not read to its end: over the spent window, such a chunked body gets its own 413 (with the windows' headers), and no backend sees it (before: the overflow backend got the request with an empty body and answered 200)
--- http_config eval: $::Http
--- config
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    client_max_body_size 100;
    error_page 429 = @overflow;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location @overflow {
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models"]
--- more_headers eval: $::Auth
--- error_code eval
[200, 200, 200]
--- check eval
sub {
    my $r = ::late("/v1/chat/completions");
    my $left = Test::LLM::Client::header($r, 'X-Rate-Limit-Remaining') // '-';
    return ($r->{status} == 413 && $left eq '0'
            && ($r->{body} =~ /"code":"request_too_large"/ ? 1 : 0),
            "status $r->{status}, remaining $left: $r->{body}");
}
--- mock_count: 3



=== TEST 21: an upload (a body the gateway does not read: the upstream module reads it) whose chunked encoding breaks gets nginx's 400 in the API's JSON, with the rate-limit headers, not nginx's HTML page (before: "<html><head><title>400 Bad Request")
--- http_config eval: $::Http
--- config
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    llm_max_tokens_default 100;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- error_code: 200
--- check eval
sub {
    my $head = "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: localhost\r\n"
        . "Connection: close\r\nContent-Type: application/octet-stream\r\n"
        . "$::Te\r\n\r\n";
    my $r = Test::LLM::Client::exchange(port => $ENV{TEST_NGINX_SERVER_PORT},
        method => 'POST', timeout => 5,
        pieces => [$head . "a\r\n0123456789\r\nzz\r\n"]);
    my $left = Test::LLM::Client::header($r, 'x-ratelimit-remaining-requests')
               // '-';
    return ($r->{status} == 400 && $left eq '1'
            && ($r->{body} =~ /^\{"error":\{"message":"Request body cannot be read: its length or its chunked encoding is invalid\.","type":"invalid_request_error","param":null,"code":"invalid_request_error"\}\}$/ ? 1 : 0),
            "status $r->{status}, remaining $left: $r->{body}");
}
--- error_log
client sent invalid chunked body



=== TEST 22: a 400 for the request's head (a second Host header) stays nginx's own page, even where llm_gateway is on for the whole server: no body was read, and no location's API is known
--- http_config eval: $::Http
--- config
llm_gateway on;
llm_default_tier tok;
location /v1/ {
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- error_code: 200
--- check eval
sub {
    my $r = Test::LLM::Client::exchange(port => $ENV{TEST_NGINX_SERVER_PORT},
        method => 'POST', timeout => 5,
        pieces => ["POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n"
                   . "Host: b\r\n$::Auth\r\nContent-Length: 2\r\n\r\n{}"]);
    return ($r->{status} == 400 && ($r->{body} =~ /<html>/ ? 1 : 0),
            "status $r->{status}: $r->{body}");
}
--- error_log
client sent duplicate host header



=== TEST 23: the same in Redis: the refused body's concurrency lease is given back at once
--- http_config eval: ::redis(23)
--- config
llm_default_tier one;
location /v1/ {
    llm_gateway on;
    client_max_body_size 100;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- error_code: 200
--- check eval: \&::linger
--- mock_count: 2
