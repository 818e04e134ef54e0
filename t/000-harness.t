# The test harness tests itself, on plain nginx (no module): every block
# kind passes here, and a fixture of deliberately wrong blocks must fail
# exactly where it should (the extra assertions at the end).

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx 'no_module';

our @Keep;      # connections a check hook leaves open

# test name (a substring) => what the failure's diagnostics must mention
our @FixtureFailures = (
    ['TEST 2: wrong status - status 404'           => qr/status 200, expected 404/],
    ['TEST 3: wrong body - response body'           => qr/expected: "goodbye\\n"/],
    ['TEST 4: missing header - header X-Missing: 1' => qr/no X-Missing header/],
    ['TEST 5: absent header present - header !X-Here' => qr/X-Here is present/],
    ['TEST 6: error_log miss - error_log "never logged anywhere"'
                                                    => qr/not found in the error log/],
    ['TEST 7: an [alert] in the log - logs are clean' => qr/\[alert\].*setrlimit/],
    ['TEST 8: a killed worker - logs are clean'     => qr/exited on signal 9/],
    ['TEST 9: must_die but nginx starts - nginx refuses to start'
                                                    => qr/nginx started/],
    ['TEST 10: a bad config without must_die - status 200'
                                                    => qr/unknown directive "no_such_directive"/],
    ['TEST 10: a bad config without must_die - logs are clean'
                                                    => qr/\[emerg\] .*unknown directive/],
    ['TEST 11: wrong status counts - status counts 200=4'
                                                    => qr/got 200=5; wrong: 200/],
    ['TEST 12: a secret reaches the mock - mock_log_unlike /sk-secret/'
                                                    => qr/found in the mock_log/],
    ['TEST 13: a request times out - status 200'    => qr/timeout/],
    ['TEST 14: nginx does not quit - logs are clean' => qr/did not exit within 1s of SIGQUIT/],
    ['TEST 15: mock handler dies - logs are clean'  => qr/mock handler died: oops/],
    ['TEST 16: truncated body - status 200'         => qr/incomplete response body/],
    ['TEST 17: no_error_log hit - no_error_log "matches"' => qr/found in the error log/],
    ['TEST 18: check hook fails - check'            => qr/only 1 request/],
);

run_tests(extra => @FixtureFailures + 4);

run_fixture();


# Runs t/lib/fixtures/harness-fail.t.fixture and checks its TAP: the listed
# tests fail with the expected diagnostics, every other test passes.
sub run_fixture {
    local $ENV{TEST_NGINX_QUIT_TIMEOUT} = 1;

    my $out    = `$^X t/lib/fixtures/harness-fail.t.fixture 2>&1`;
    my $status = $? >> 8;

    my ($planned) = $out =~ /^1\.\.(\d+)/m;
    my (%result, %diag, $last);

    for my $line (split /\n/, $out) {
        if ($line =~ /^(ok|not ok) \d+ - (.*)$/) {
            $last = $2;
            $result{$last} = $1;
        } elsif ($line =~ /^#\s?(.*)$/ && defined $last) {
            $diag{$last} .= "$1\n";
        }
    }

    ok(defined $planned && $planned == keys %result,
       'fixture: planned and ran the same number of tests')
        or diag($out);

    my %expected;

    for my $f (@FixtureFailures) {
        my ($name, $re) = @$f;
        my ($full) = grep { index($_, $name) == 0 } keys %result;

        $expected{$full} = 1 if defined $full;

        ok(defined $full && $result{$full} eq 'not ok'
           && ($diag{$full} // '') =~ $re, "fixture fails: $name")
            or diag("result: " . ($full ? $result{$full} : 'missing')
                    . "\ndiag:\n" . ($full ? $diag{$full} // '' : ''));
    }

    my @unexpected = grep { !$expected{$_} && $result{$_} ne 'ok' }
                     sort keys %result;

    ok(!@unexpected, 'fixture: every other test passes')
        or diag(join "\n", @unexpected);

    ok(scalar(grep { $_ eq 'ok' } values %result) >= 20,
       'fixture: the control assertions ran');

    is($status, scalar(@FixtureFailures), 'fixture: exit status counts '
       . 'the failures');
}


__DATA__

=== TEST 1: return 200 (rewrite phase, no backend)
--- config
location = /t {
    return 200 "hello\n";
}
--- request
GET /t
--- error_code: 200
--- response_body
hello
--- response_headers
Content-Type: text/plain
Content-Length: 6
!X-Nothing
--- response_headers_like
Server: ^nginx/\d



=== TEST 2: proxy_pass to the mock, which answers 429 with a header
--- config
location /v1/ {
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub {
    my ($req) = @_;
    return { status => 429,
             headers => { 'Retry-After' => 7, 'X-Seen-Path' => $req->{path} },
             body => '{"error":{"code":"rate_limit_exceeded"}}' };
}
--- request
POST /v1/chat/completions
{"model":"gpt-4o","messages":[]}
--- error_code: 429
--- response_headers
Retry-After: 7
X-Seen-Path: /v1/chat/completions
Content-Type: application/json
--- response_body_like: "code":"rate_limit_exceeded"
--- mock_log_like
^POST /v1/chat/completions HTTP/1\.0$
^Content-Length: 32$
^\{"model":"gpt-4o","messages":\[\]\}$
--- mock_count: 1



=== TEST 3: a streamed SSE answer, chunked, with pauses between events
--- config
location /v1/ {
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    proxy_http_version 1.1;
    proxy_buffering off;
}
--- mock eval
sub {
    return { headers => { 'Content-Type' => 'text/event-stream' },
             chunks => [ "data: {\"n\":1}\n\n", { delay => 0.1 },
                         "data: {\"n\":2}\n\n", { delay => 0.1 },
                         "data: [DONE]\n\n" ] };
}
--- request
GET /v1/stream
--- response_headers
Transfer-Encoding: chunked
Content-Type: text/event-stream
--- response_body eval
"data: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: [DONE]\n\n"
--- mock_log_like: ^GET /v1/stream HTTP/1\.1$
--- check eval
sub { my ($c) = @_;
      my $t = $c->{responses}[0]{elapsed};
      return ($t >= 0.2, "took only ${t}s: the pauses were not honoured") }



=== TEST 4: the default mock answers like the providers, by path
--- config
location / {
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
[ "POST /v1/chat/completions\n{\"model\":\"gpt-4o-mini\"}",
  "POST /v1/chat/completions\n{\"model\":\"gpt-4o\",\"stream\":true}",
  "POST /v1/messages\n{\"model\":\"claude-3-5-haiku\",\"max_tokens\":5}",
  "POST /v1/messages\n{\"model\":\"claude-3-5-haiku\",\"stream\":true}",
  "POST /v1beta/models/gemini-1.5-flash:generateContent\n{}",
  "POST /v1beta/models/gemini-1.5-flash:streamGenerateContent?alt=sse\n{}",
  "POST /v1/embeddings\n{\"model\":\"text-embedding-3-small\"}" ]
--- response_body_like eval
[ qr/"model":"gpt-4o-mini".*"usage":\{"completion_tokens":20,"prompt_tokens":10,"total_tokens":30\}/,
  qr/^data: .*"usage":\{"completion_tokens":20.*\n\ndata: \[DONE\]\n\n\z/s,
  qr/"type":"message".*"usage":\{"input_tokens":10,"output_tokens":20\}/,
  qr/event: message_start\n.*event: message_delta\n.*"output_tokens":20.*event: message_stop\n/s,
  qr/"usageMetadata":\{"candidatesTokenCount":20,"promptTokenCount":10,"totalTokenCount":30\}/,
  qr/"finishReason":"STOP".*"totalTokenCount":30\}\}\r\n\r\n\z/s,
  qr/"embedding":\[.*"usage":\{"prompt_tokens":10,"total_tokens":10\}/ ]
--- response_headers eval
[ "Content-Type: application/json", "Content-Type: text/event-stream",
  "Content-Type: application/json", "Content-Type: text/event-stream",
  "Content-Type: application/json", "Content-Type: text/event-stream",
  "Content-Type: application/json" ]
--- mock_count: 7



=== TEST 5: sequential requests with per-request arrays and log slices
--- config
rewrite_log on;
location /a { rewrite ^/a$ /echo/a last; }
location /b { rewrite ^/b$ /echo/b last; }
location /echo/ {
    return 200 "$uri $http_x_n\n";
}
--- request eval
["GET /a", "GET /b", "GET /missing"]
--- more_headers eval
["X-N: 1", "X-N: 2", "X-N: 3"]
--- error_code eval
[200, 200, 404]
--- response_body eval
["/echo/a 1\n", "/echo/b 2\n", undef]
--- error_log eval
[ [qr{"\^/a\$" matches "/a"}], [qr{"\^/b\$" matches "/b"}], [] ]
--- no_error_log eval
[ ['matches "/b"'], ['matches "/a"'], ['matches'] ]



=== TEST 6: scalar sections apply to every request; request_delay
--- config
location /t { return 200 "$http_x_token\n"; }
--- request eval
["GET /t", "GET /t"]
--- more_headers
X-Token: same
--- request_delay: 0.2
--- response_body
same
--- check eval
sub { my ($c) = @_;
      my ($r1, $r2) = @{ $c->{responses} };
      my $gap = $r2->{started} - $r1->{started};
      return ($gap >= 0.2, "second request ${gap}s after the first") }



=== TEST 7: concurrency: limit_conn admits exactly 3 of 10 simultaneous requests
--- http_config
limit_conn_zone $server_name zone=conns:1m;
--- config
location /slow {
    limit_conn conns 3;
    limit_conn_status 429;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub { return { delay => 0.6, body => '{"ok":1}' } }
--- request
GET /slow
--- concurrency: 10
--- repeat: 10
--- status_counts: 200=3 429=7
--- mock_count: 3
--- error_log
limiting connections by zone "conns"



=== TEST 8: concurrency: the mock serves 20 slow requests at once
--- config
location /slow {
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub { return { delay => 0.5, body => "n=$_[0]{n}" } }
--- request
GET /slow
--- concurrency 20
--- repeat 40
--- status_counts: 200=40
--- response_body_like: ^n=\d+$
--- mock_count: 40
--- check eval
sub { my ($c) = @_;
      my ($max) = sort { $b <=> $a } map { $_->{elapsed} } @{ $c->{responses} };
      my %n = map { $_->{body} => 1 } @{ $c->{responses} };
      return (0, "slowest took ${max}s") if $max > 1.6;
      return (0, "duplicate request numbers") if keys %n != 40;
      return 1 }



=== TEST 9: must_die: an unknown directive is named with file and line
--- config
location /t {
    no_such_directive on;
}
--- must_die
--- error_log eval
[ 'unknown directive "no_such_directive"',
  qr{in \Q$TEST_NGINX_SERVROOT\E/conf/nginx\.conf:\d+} ]



=== TEST 10: must_die: a bad value for a known directive
--- config
location /t {
    client_max_body_size ten;
}
--- must_die
--- error_log eval
[ qr/"client_max_body_size" directive invalid value in \S+:\d+/ ]
--- no_error_log
unknown directive



=== TEST 11: user_files: text form, relative to the prefix
--- user_files
>>> data/hello.txt
hello from a file
>>> keys.txt
digest1 alice tier=small
--- config
location /file {
    alias $TEST_NGINX_SERVROOT/data/hello.txt;
}
location /keys {
    alias $TEST_NGINX_HTML_DIR/../keys.txt;
}
--- request eval
["GET /file", "GET /keys"]
--- response_body eval
["hello from a file\n", "digest1 alice tier=small\n"]
--- check eval
sub { my $m = (stat("$TEST_NGINX_SERVROOT/data/hello.txt"))[2] & 07777;
      my $d = (stat("$TEST_NGINX_SERVROOT/data"))[2] & 07777;
      return ($m == 0644 && $d == 0755, sprintf("modes %o %o", $m, $d)) }



=== TEST 12: user_files: eval form with exact bytes
--- user_files eval
{ "bin/x.dat" => "a\r\nb\0c" }
--- config
location /x { alias $TEST_NGINX_SERVROOT/bin/x.dat; }
--- request
GET /x
--- response_body eval
"a\r\nb\0c"



=== TEST 13: the client's key never reaches the backend
--- config
location /v1/ {
    proxy_set_header Authorization "";
    proxy_set_header X-Api-Key "";
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request
POST /v1/chat/completions
{"model":"m"}
--- more_headers
Authorization: Bearer sk-llm-secret-value
x-api-key: sk-llm-secret-value
--- mock_log_unlike
sk-llm-secret
(?i)^authorization:
--- mock_log_like
^Host: 127\.0\.0\.1:\d+$
--- mock_count: 1



=== TEST 14: raw_request in pieces with pauses, chunked body, echoed by the mock
--- config
location /v1/ {
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    proxy_http_version 1.1;
    proxy_request_buffering off;
}
--- mock eval
sub { my ($req) = @_;
      return { body => "te=" . ($req->{headers}{'transfer-encoding'} // '-')
                       . " body=$req->{body}" } }
--- raw_request eval
[ "POST /v1/echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
  . "Transfer-Encoding: chunked\r\n\r\n",
  "5\r\nhello\r\n",
  "6\r\n world\r\n",
  "0\r\n\r\n" ]
--- raw_request_middle_delay: 0.05
--- response_body: te=chunked body=hello world
--- check eval
sub { my @r = mock_requests();
      return (@r == 1 && $r[0]{body} eq 'hello world',
              "mock saw: " . join(',', map { $_->{body} } @r)) }



=== TEST 15: raw_request: a bare CR in a header line, and a keep-alive answer
--- config
location /t { return 200 "ok\n"; }
--- raw_request eval
["GET /t HTTP/1.1\r\nHost: localhost\r\nX-A: a\rb\r\n\r\n"]
--- error_code: 400
--- error_log
client sent invalid header line



=== TEST 16: raw_request: a kept-alive response ends at its length
--- config
location /t { return 200 "ok\n"; }
--- raw_request eval
"GET /t HTTP/1.1\r\nHost: localhost\r\n\r\n"
--- timeout: 2
--- response_body
ok
--- response_headers
Connection: keep-alive
--- check eval
sub { my $t = $_[0]{responses}[0]{elapsed};
      return ($t < 1, "took ${t}s: waited for the close") }



=== TEST 17: raw_request: a 10 KB header
--- config
location /t { return 200 "ok\n"; }
--- raw_request eval
"GET /t HTTP/1.1\r\nHost: localhost\r\nX-Big: " . ("a" x 10240)
. "\r\nConnection: close\r\n\r\n"
--- error_code: 400
--- response_body_like: Request Header Or Cookie Too Large



=== TEST 18: the mock keeps upstream connections alive
--- http_config
upstream mock {
    server 127.0.0.1:$TEST_NGINX_MOCK_PORT;
    keepalive 4;
}
--- workers: 1
--- config
location /v1/ {
    proxy_pass http://mock;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
}
--- request eval
[("GET /v1/models") x 3]
--- error_code eval
[200, 200, 200]
--- check eval
sub { my @r = mock_requests();
      my $same = !grep { $_->{conn} != $r[0]{conn} } @r;
      return ($same && "@{[ map { $_->{conn_req} } @r ]}" eq "1 2 3"
              && "@{[ map { $_->{n} } @r ]}" eq "1 2 3",
              "conns @{[ map { $_->{conn} } @r ]}") }



=== TEST 19: the mock on its second port; raw and split answers; a dropped connection
--- config
location /two { proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT2; }
location /raw { proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT; }
location /drop { proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT; }
location /dead { proxy_pass http://127.0.0.1:$TEST_NGINX_DEAD_PORT; }
--- mock eval
sub { my ($req) = @_;
      return { body => "port=$req->{port}" } if $req->{path} eq '/two';
      return { close => 1 } if $req->{path} eq '/drop';
      return { raw => [ "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe",
                        { delay => 0.1 }, "llo" ] } }
--- request eval
["GET /two", "GET /raw", "GET /drop", "GET /dead"]
--- error_code eval
[200, 200, 502, 502]
--- response_body eval
["port=$TEST_NGINX_MOCK_PORT2", "hello", undef, undef]
--- error_log eval
[[], [], ["upstream prematurely closed connection"], ["Connection refused"]]



=== TEST 20: abort: the client gives up on a slow answer; access_log_like
--- config
location /slow { proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT; }
--- mock eval
sub { return { delay => 3, body => 'late' } }
--- request
GET /slow
--- timeout: 0.3
--- abort
--- ignore_response
--- wait: 0.1
--- access_log_like: "GET /slow HTTP/1\.1" 499
--- access_log_unlike: " 200 
--- error_log
client prematurely closed connection



=== TEST 21: a check hook can send requests and read the mock's records
--- config
location /v1/ { proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT; }
--- request
POST /v1/chat/completions
{"model":"first"}
--- check eval
sub {
    my $res = http_request("POST /v1/chat/completions",
                           body => '{"model":"second"}',
                           more_headers => "X-From: hook");
    my @r = mock_requests();
    return (0, "hook status $res->{status}") if $res->{status} != 200;
    return (0, "the hook's response has no usage")
        unless $res->{body} =~ /"total_tokens":30/;
    return (@r == 2 && $r[1]{json}{model} eq 'second'
            && $r[1]{headers}{'x-from'} eq 'hook',
            "mock saw " . scalar(@r) . " requests");
}



=== TEST 22: HEAD and 204 have no body; HTTP/1.0 requests
--- config
location /t { return 200 "body\n"; }
location /none { return 204; }
--- request eval
["HEAD /t", "GET /none", "GET /t HTTP/1.0"]
--- error_code eval
[200, 204, 200]
--- response_body eval
["", "", "body\n"]
--- response_headers eval
["Content-Length: 5", "", "Connection: close"]



=== TEST 23: skip_eval skips a block
--- skip_eval: 2: 1
--- config
location /t { return 500; }
--- request
GET /t



=== TEST 24: a block without a request starts and stops nginx
--- workers: 4
--- main_config
worker_shutdown_timeout 1s;
--- http_config
server_tokens off;
--- config
location /t { return 204; }
--- error_log eval
qr/start worker process \d+/



=== TEST 25: eval sees $TEST_NGINX_ variables and mock helpers
--- config
location /v1/ {
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    proxy_buffering off;
}
--- mock eval
sub { mock_anthropic_stream(text => "one two", prompt_tokens => 7,
                            completion_tokens => 2, delay => 0.01) }
--- request eval
"POST /v1/messages\n" . '{"port":"' . $TEST_NGINX_SERVER_PORT . '"}'
--- response_body_like
"input_tokens":7.*"text":"one ".*"text":"two".*"output_tokens":2
--- mock_log_like eval
qr/"port":"\Q$ENV{TEST_NGINX_SERVER_PORT}\E"/



=== TEST 26: a check hook reloads nginx with a changed configuration
--- config
location /t { return 200 "one\n"; }
--- request
GET /t
--- response_body
one
--- check eval
sub {
    my $conf = servroot() . '/conf/nginx.conf';
    open(my $in, '<', $conf) or return (0, "$conf: $!");
    my $text = do { local $/; <$in> };
    $text =~ s/"one\\n"/"two\\n"/ or return (0, 'no "one" in the config');
    open(my $out, '>', $conf) or return (0, "$conf: $!");
    print $out $text;
    close $out;

    my $master = nginx_pid();
    my @before = worker_pids();
    reload_nginx() or return (0, 'the reload did not finish');
    my @after = worker_pids();
    my %old = map { $_ => 1 } @before;

    my $res = http_request('GET /t');

    return (0, "body after reload: $res->{body}") if $res->{body} ne "two\n";
    return (0, "workers @before -> @after") if @after != 2 || grep { $old{$_} } @after;
    return (nginx_pid() == $master, 'the master changed');
}
--- error_log
reconfiguring



=== TEST 27: request_body, headers as a hash, log_level
--- log_level: info
--- config
location /v1/ { proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT; }
--- mock eval
sub { return { body => "got $_[0]{headers}{'content-length'}: $_[0]{body}",
               headers => { 'Content-Type' => 'text/plain' } } }
--- request
PUT /v1/thing
--- request_body
line one
line two
--- response_body chomp
got 17: line one
line two
--- response_headers eval
{ 'Content-Type' => 'text/plain', 'X-Nothing' => undef }
--- no_error_log
[debug]



=== TEST 28: status_counts with a range and failed exchanges
--- config
location /t { return 200 "hi\n"; }
location /slow { proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT; }
--- mock eval
sub { return { delay => 2, body => 'late' } }
--- request eval
["GET /t", "GET /slow"]
--- concurrency: 4
--- repeat: 4
--- timeout: 0.3
--- status_counts: 200=1..2 error=2



=== TEST 29: allow_alert accepts an [alert] the block provokes
--- main_config
worker_rlimit_nofile 2000000000;
--- allow_alert
--- config
location /t { return 200 "hi\n"; }
--- request
GET /t
--- error_log eval
qr/\[alert\] .*setrlimit\(RLIMIT_NOFILE, 2000000000\) failed/
