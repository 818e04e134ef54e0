# File uploads on a token tier: the gateway reads a request's body to
# estimate its prompt, but an upload is no prompt.  Multipart bodies and
# raw ones (images, audio, video, PDF, zip, octet-stream: Gemini's
# "upload/v1beta/files", a PUT of bytes) go to the backend as they are,
# counted as requests and charged what the backend reports; a JSON body
# under any other type (curl -d sends application/x-www-form-urlencoded)
# is still read.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Client ();

our $CAROL = $Test::LLM::Keys::CAROL;

our $Http = $Test::LLM::Keys::TIERS
    . "llm_tier tok requests=10/m tokens=1000/m;\n";

# an upload reserves llm_max_tokens_default output tokens (and one input
# token): 1,024 by default, more than tokens=1000/m has room for
our $Gateway = <<'_EOC_';
llm_default_tier tok;
llm_max_tokens_default 500;
location /upload/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
_EOC_

# a PNG's first bytes: not UTF-8, not JSON, NULs
our $Png = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR" . ("\xff\0\xfe" x 40);

sub raw {
    my ($line, $type, $body) = @_;
    return "$line HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        . "x-goog-api-key: $CAROL\r\nContent-Type: $type\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n$body";
}

# one raw request to the block's nginx: its status
sub send_raw {
    my $r = Test::LLM::Client::exchange(
        port => $ENV{TEST_NGINX_SERVER_PORT}, bytes => raw(@_),
        method => (split / /, $_[0])[0]);
    return $r->{status} // 'none';
}

run_tests();

__DATA__

=== TEST 1: Gemini's raw upload (Content-Type: image/png) at a token tier: proxied with its bytes as sent and counted as a request (before: 400 invalid_request_error, the bytes read as a JSON prompt)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- raw_request eval
::raw("POST /upload/v1beta/files?uploadType=media", "image/png", $::Png)
--- error_code: 200
--- response_headers
x-ratelimit-remaining-requests: 9
--- mock_count: 1
--- check eval
sub {
    my ($r) = mock_requests();
    return (0, "the backend got " . length($r->{body} // '') . " bytes")
        unless defined $r->{body} && $r->{body} eq $::Png;
    return (0, "the client's key reached the backend")
        if join('', values %{ $r->{headers} // {} }) =~ /\Q$::CAROL\E/;
    return 1;
}



=== TEST 2: other raw uploads (octet-stream, PDF, audio, video, zip) pass the same way
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- check eval
sub {
    my @got = map { ::send_raw(@$_) }
        ["PUT /upload/v1/parts/1", "application/octet-stream", $::Png],
        ["POST /upload/v1beta/files", "application/pdf", "%PDF-1.7\n\xe2\xe3"],
        ["POST /upload/v1beta/files", "audio/wav", "RIFF\0\0\0\0WAVE"],
        ["POST /upload/v1beta/files", "Video/MP4", "\0\0\0\x18ftypmp42"],
        ["POST /upload/v1beta/files", "application/zip", "PK\x03\x04\0\0"];
    my $got = join ' ', @got, scalar(mock_requests());
    return $got eq '200 200 200 200 200 6' ? 1 : (0, "got $got");
}



=== TEST 3: a JSON body sent as application/x-www-form-urlencoded (curl -d) is still read as a prompt: max_tokens 5000 cannot fit tokens=1000/m, refused up front; one that is no JSON is still 400
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- check eval
sub {
    my $type = "application/x-www-form-urlencoded";
    my $got = join ' ',
        ::send_raw("POST /v1/chat/completions", $type,
            '{"model":"m","max_tokens":5000,'
            . '"messages":[{"role":"user","content":"hi"}]}'),
        ::send_raw("POST /v1/chat/completions", $type, "\x89PNG\0"),
        scalar(mock_requests());
    return $got eq '429 400 1' ? 1 : (0, "got $got");
}
