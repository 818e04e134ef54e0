# A backend's answer is read for its usage only when it is not encoded.
# Clients send "Accept-Encoding: gzip" by default (the OpenAI and
# Anthropic Python SDKs through httpx, curl --compressed, browsers), and
# a backend that honours it compresses its JSON answers: the gateway then
# charged every such answer its whole reservation.  Where it reads
# answers, the gateway keeps the client's Accept-Encoding from the
# backend, as "proxy_set_header Accept-Encoding "";" does; nginx's gzip
# filter still compresses for the client.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat qw(chat post);

our $KEYS = $Test::LLM::Keys::KEY_FILE;
our $CAROL = $Test::LLM::Keys::CAROL;

our $Http = <<"_EOC_";
    llm_zone llm:1m;
    llm_key_file $KEYS;
    llm_tier req requests=100/m;
    llm_tier small requests=3/m;
    llm_tier quota requests=2/d;
    llm_tier tok tokens=100000/m output_tokens=50000/m;
    log_format llm '\$llm_account|\$llm_prompt_tokens|'
                   '\$llm_completion_tokens|\$llm_tokens_estimated|\$status';
_EOC_

# the same without the log format: no token variable is used anywhere
our $Http0 = join "\n", grep { !/log_format|^\s+'/ } split /\n/, $Http;

our $Auth = "Authorization: Bearer $CAROL";

# carol's gateway location (tier tok, with the block's own lines), and
# llm_usage
sub gateway {
    my ($extra) = @_;
    $extra = join '', map { "    $_\n" } split /\n/, $extra // '';
    return <<"_EOC_";
access_log logs/access.log llm;
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
${extra}    proxy_pass http://127.0.0.1:\$TEST_NGINX_MOCK_PORT;
}
location = /usage {
    llm_usage;
}
_EOC_
}

# a backend that compresses when, and only when, the request asks it to
sub answer {
    my ($req) = @_;
    my $json = '{"id":"x","model":"gpt-4o","choices":[{"index":0,'
             . '"message":{"role":"assistant","content":"Hello there, '
             . ('and more ' x 40) . '"}}],"usage":{"prompt_tokens":10,'
             . '"completion_tokens":20,"total_tokens":30}}';
    my $ae = $req->{headers}{'accept-encoding'} // '';
    my $h = { 'Content-Type' => 'application/json',
              'X-Seen-Accept-Encoding' => $ae eq '' ? '-' : $ae };

    return { headers => $h, body => $json } unless $ae =~ /gzip/;

    require IO::Compress::Gzip;
    my $gz;
    IO::Compress::Gzip::gzip(\$json => \$gz);
    $h->{'Content-Encoding'} = 'gzip';
    return { headers => $h, body => $gz };
}

# what /usage says was used in the "tokens" and "output_tokens" windows
sub used {
    my $r = http_request("GET /usage", more_headers => $::Auth);
    my ($tok) = $r->{body} =~ /"tokens","period":"1m","limit":\d+,"used":(\d+)/;
    my ($out) = $r->{body}
        =~ /"output_tokens","period":"1m","limit":\d+,"used":(\d+)/;
    return ($tok, $out, $r->{body});
}

run_tests();

__DATA__

=== TEST 1: a client that sends "Accept-Encoding: gzip" to a backend that honours it is charged the answer's usage (30 tokens, 20 of them output), not its reservation of the 2,000 max_tokens; the backend got no Accept-Encoding (before: gzip, an encoded answer, 2,000+ output tokens charged, $llm_tokens_estimated 1)
--- http_config eval: $::Http
--- config eval: ::gateway()
--- mock eval: \&::answer
--- request eval: ::post("/v1/chat/completions", ::chat(max => 2000))
--- more_headers eval: "$::Auth\nAccept-Encoding: gzip, deflate"
--- error_code: 200
--- response_headers
X-Seen-Accept-Encoding: -
!Content-Encoding
--- response_body_like: "completion_tokens":20
--- check eval
sub {
    my ($tok, $out, $body) = ::used();
    return (0, "usage: $body") unless defined $out;
    return ($tok == 30 && $out == 20, "charged tokens $tok, output $out");
}
--- access_log_like
^carol\|10\|20\|0\|200$
--- no_error_log
is encoded



=== TEST 2: nginx's gzip filter still compresses the answer for the client that asked (it reads the Accept-Encoding the gateway kept from the backend), and the usage is read first: 20 output tokens charged
--- http_config eval: $::Http
--- config eval: ::gateway("gzip on;\ngzip_types application/json;\ngzip_min_length 1;")
--- mock eval: \&::answer
--- request eval: ::post("/v1/chat/completions", ::chat(max => 2000))
--- more_headers eval: "$::Auth\nAccept-Encoding: gzip"
--- error_code: 200
--- response_headers
X-Seen-Accept-Encoding: -
Content-Encoding: gzip
--- check eval
sub {
    my ($tok, $out, $body) = ::used();
    return (0, "usage: $body") unless defined $out;
    return ($tok == 30 && $out == 20, "charged tokens $tok, output $out");
}
--- access_log_like
^carol\|10\|20\|0\|200$



=== TEST 3: an operator's own "proxy_set_header Accept-Encoding" still wins: the backend is asked for gzip, its answer cannot be read, and it is charged its reservation (logged at info, as README says)
--- http_config eval: $::Http
--- config eval: ::gateway("proxy_set_header Accept-Encoding gzip;")
--- mock eval: \&::answer
--- request eval: ::post("/v1/chat/completions", ::chat(max => 2000))
--- more_headers eval: $::Auth
--- error_code: 200
--- response_headers
X-Seen-Accept-Encoding: gzip
Content-Encoding: gzip
--- check eval
sub {
    my ($tok, $out, $body) = ::used();
    return (0, "usage: $body") unless defined $out;
    return ($out >= 2000, "charged output $out");
}
--- error_log
the backend's answer is encoded ("gzip")



=== TEST 4: where the gateway does not read answers (a tier of requests only, no token variable), the client's Accept-Encoding goes to the backend untouched
--- http_config eval: $::Http0
--- config
llm_default_tier req;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval: \&::answer
--- request eval: ::post("/v1/chat/completions", ::chat(max => 2000))
--- more_headers eval: "$::Auth\nAccept-Encoding: gzip"
--- error_code: 200
--- response_headers
X-Seen-Accept-Encoding: gzip
Content-Encoding: gzip



=== TEST 5: two Accept-Encoding headers (HTTP allows a list in several lines): neither reaches the backend, and the answer's usage is charged
--- http_config eval: $::Http
--- config eval: ::gateway()
--- mock eval: \&::answer
--- request eval: ::post("/v1/chat/completions", ::chat(max => 2000))
--- more_headers eval: "$::Auth\nAccept-Encoding: br\nAccept-Encoding: gzip"
--- error_code: 200
--- response_headers
X-Seen-Accept-Encoding: -
--- check eval
sub {
    my ($tok, $out, $body) = ::used();
    return (0, "usage: $body") unless defined $out;
    return ($tok == 30 && $out == 20, "charged tokens $tok, output $out");
}
