# retry-after-ms is the wait to the millisecond, also under a second
# (SPEC 4: "the same wait in milliseconds"); Retry-After stays in whole
# seconds, at least 1.  Before, retry-after-ms was never under 1000, so
# the SDKs that read it first (OpenAI's, Anthropic's) slept a whole
# second where a window of seconds had room again in tens of ms (found
# by the black-box test: 1000 for a wait of about 60 ms).  TEST 1 failed
# before; TEST 2 is the control: a minute window's wait is unchanged.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Time::HiRes ();

our $Auth = "Authorization: Bearer $Test::LLM::Keys::CAROL";

our $Http = $Test::LLM::Keys::TIERS . <<'_EOC_';
    llm_tier persec requests=2/s;
    llm_tier permin requests=1/m;
_EOC_

our $Gateway = <<'_EOC_';
location /v1/ {
    llm_gateway on;
    llm_default_tier persec;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location /min/ {
    llm_gateway on;
    llm_default_tier permin;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT/;
}
_EOC_

sub carol_get { http_request("GET $_[0]", more_headers => $::Auth, timeout => 5) }

run_tests();

__DATA__

=== TEST 1: requests=2/s: one request, 0.5 s after it two more; the third is refused with retry-after-ms under 1000 (when the first one's 100 ms slot leaves the window) and Retry-After: 1; a retry after retry-after-ms (+30 ms) is admitted (found: retry-after-ms: 1000)
--- workers: 1
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my ($ctx) = @_;
    # the first request counts from no earlier than its connect, until
    # 1 s to 1.1 s later (its 100 ms slot leaving); the two more go 0.5 s
    # after that connect, so that a slow machine still sends the third
    # well inside the window (after the first one's response, its
    # proxying included, there may be little of it left)
    my $t0 = $ctx->{responses}[0]{started};
    my $wait = $t0 + 0.5 - Time::HiRes::time();
    Time::HiRes::sleep($wait) if $wait > 0;
    my $b = ::carol_get('/v1/models');
    my $c = ::carol_get('/v1/models');
    my $ms = $c->{header}{'retry-after-ms'} // 'none';
    my $s = $c->{header}{'retry-after'} // 'none';
    my $late = $c->{started} + $c->{elapsed} - $t0;
    if ($b->{status} == 200 && $c->{status} == 200 && $late >= 1) {
        Test::More::diag(sprintf "TEST 1: the third request was answered"
            . " %.3f s after the first one's connect: the first may have"
            . " left the window (not tested on this run)", $late);
        return 1;
    }
    return (0, sprintf "statuses %s %s (third answered %.3f s after the"
                       . " first's connect)", $b->{status}, $c->{status}, $late)
        unless $b->{status} == 200 && $c->{status} == 429;
    return (0, "retry-after-ms $ms, Retry-After $s")
        unless $ms =~ /^\d+$/ && $ms >= 1 && $ms < 1000 && $s eq '1';
    Time::HiRes::sleep($ms / 1000 + 0.03);
    my $d = ::carol_get('/v1/models');
    return $d->{status} == 200 ? 1
        : (0, "after $ms ms: $d->{status} (retry-after-ms $ms)");
}



=== TEST 2: requests=1/m: the second request's wait is a minute's, in both headers
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval
["GET /min/v1/models", "GET /min/v1/models"]
--- more_headers eval: $::Auth
--- error_code eval
[200, 429]
--- response_headers_like eval
["", "Retry-After: ^(6[0-6]|59)\$\nretry-after-ms: ^(5[89]|6[0-6])\\d{3}\$"]
