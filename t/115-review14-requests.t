# Review 14: the request side of token windows, from what a client sends.
# Each block failed before its fix; it says what a user sees and what
# README or SPEC says.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat qw(chat post);

our $Auth = "Authorization: Bearer $Test::LLM::Keys::CAROL";

our $Http = $Test::LLM::Keys::TIERS . <<"_EOC_";
    llm_tier tok tokens=1000/m input_tokens=900/m output_tokens=500/m;
    llm_tier tk tokens=1000/m;
_EOC_

our $Gateway = <<'_EOC_';
llm_default_tier tok;
llm_max_tokens_default 100;
location /v1/ {
    llm_gateway on;
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

# carol's request: "METHOD URI", a Content-Type (none: undef) and a body
sub carol {
    my ($line, $type, $body) = @_;
    return http_request($line,
        more_headers => $::Auth
                        . (defined $type ? "\r\nContent-Type: $type" : ''),
        body => $body, timeout => 10);
}

our $Multipart = "--xyz\r\nContent-Disposition: form-data; name=\"file\"; "
    . "filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....\r\n"
    . "--xyz--\r\n";

# carol's windows, as llm_usage shows them: "tokens 1050 input 600 ..."
sub used {
    my $r = carol("GET /usage");
    my @w = $r->{body} =~ /"dimension":"(\w+)","period":"1m","limit":\d+,"used":(\d+)/g;
    return join ' ', @w;
}

run_tests();

__DATA__

=== TEST 1: an upload (a multipart audio transcription, an octet-stream body), whose body the gateway does not read but whose answer's usage it charges, is refused while a token window is spent; a GET, which costs no tokens, is not (before: both uploads answered 200 with x-ratelimit-remaining-tokens: 0 and were charged, the window ending at 2,100 of 1,000)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { return mock_openai(prompt_tokens => 600, completion_tokens => 450) }
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $type = 'multipart/form-data; boundary=xyz';
    my $a = ::carol("POST /v1/audio/transcriptions", $type, $::Multipart);
    my $spent = ::used();
    my $b = ::carol("POST /v1/audio/transcriptions", $type, $::Multipart);
    my $c = ::carol("POST /v1/chat/completions", 'application/octet-stream',
                    ::chat(max => 10));
    my $d = ::carol("GET /v1/models");
    my $got = join ' ', (map { $_->{status} } $a, $b, $c, $d),
                        "| $spent | " . ::used();
    my $want = '200 429 429 200 | tokens 1050 input_tokens 600 '
             . 'output_tokens 450 | tokens 1050 input_tokens 600 '
             . 'output_tokens 450';
    return $got eq $want ? 1 : (0, "got  $got\nwant $want");
}



=== TEST 2: an upload reserves one input token and llm_max_tokens_default output tokens (as a request with no maximum does), which its answer's usage then replaces
--- http_config eval: $::Http
--- config eval: $::Gateway
--- mock eval
sub { return { %{ mock_openai() }, delay => 0.5 } }
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $type = 'multipart/form-data; boundary=xyz';
    my $pid = fork();
    if (!$pid) {
        ::carol("POST /v1/audio/transcriptions", $type, $::Multipart);
        exit 0;
    }
    Time::HiRes::sleep(0.25);
    my $during = ::used();
    waitpid $pid, 0;
    my $got = "$during | " . ::used();
    my $want = 'tokens 101 input_tokens 1 output_tokens 100 | '
             . 'tokens 30 input_tokens 10 output_tokens 20';
    return $got eq $want ? 1 : (0, "got  $got\nwant $want");
}



=== TEST 3: "n" above 128 multiplies the reservation too: n=129 with max_tokens 3 reserves 387 output tokens, n=1000 (3,000) can never fit the 500 of output_tokens=500/m and is refused up front (before: any n over 128 counted as 1, and both were admitted reserving 3)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval
[::post("/v1/chat/completions", '{"model":"m","max_tokens":3,"n":129,"messages":[{"role":"user","content":"hi"}]}'),
 ::post("/v1/chat/completions", '{"model":"m","max_tokens":3,"n":1000,"messages":[{"role":"user","content":"hi"}]}'),
 ::post("/v1beta/models/gemini-pro:generateContent", '{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":3,"candidateCount":5000}}')]
--- more_headers eval: $::Auth
--- error_code eval
[200, 429, 429]
--- response_headers_like eval
["x-ratelimit-remaining-tokens: ^113\$", "", ""]
--- response_body_like eval
["", 'is less than this request needs \(3\d{3}\)', 'is less than this request needs \(15\d{3}\)']
--- mock_count: 1



=== TEST 4: llm_token_info counts an Anthropic request's "system" prompt, as the gateway reserves it: with or without max_tokens (as Anthropic's count_tokens sends it), in a location with llm_api auto or anthropic (before: the body was read as OpenAI's shape, "system" ignored: 8 tokens against the gateway's 290)
--- http_config eval: $::Http
--- config
location /v1/ {
    llm_gateway on;
    llm_default_tier tk;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /tokens {
    llm_token_info;
}
location = /anthropic/tokens {
    llm_api anthropic;
    llm_token_info;
}
--- request
GET /tokens?text=hi
--- check eval
sub {
    my $system = join ' ', ('You answer in short sentences.') x 40;
    my $msgs = '"messages":[{"role":"user","content":"hi"}]';
    my $with = qq({"model":"claude-3","max_tokens":5,"system":"$system",$msgs});
    my $without = qq({"model":"claude-3","system":[{"type":"text","text":"$system"}],$msgs});
    my @t = map {
        my $r = http_request("POST $_->[0]", body => $_->[1]);
        $r->{body} =~ /"tokens":(\d+)/ ? $1 : "none ($r->{status})";
    } ['/tokens', $with], ['/tokens', $without],
      ['/anthropic/tokens', $without];
    my $r = ::carol("POST /v1/messages", 'application/json', $with);
    my $reserved = 1000 - $r->{header}{'x-ratelimit-remaining-tokens'} - 5;
    my $got = "@t | $reserved";
    my $want = "$reserved $reserved $reserved | $reserved";
    return (0, "got  $got\nwant $want") unless $got eq $want;
    return $reserved > 200 ? 1 : (0, "reserved only $reserved");
}



=== TEST 5: an upload's type is matched whole: "application/zip; x=1" is an upload (not read, sent as is), "application/zipx" is not, and its JSON body is read (a max_tokens of 100000 cannot fit, refused up front) (before: both taken for uploads)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $body = ::chat(max => 100000);
    # at an endpoint that does not generate (a generation endpoint reads
    # its body whatever its type: t/119)
    my $a = ::carol("POST /v1/files", 'application/zip; x=1', $body);
    my $b = ::carol("POST /v1/files", 'application/zipx', $body);
    my $got = "$a->{status} $b->{status}";
    return $got eq '200 429' ? 1 : (0, "got $got, want 200 429");
}



=== TEST 6: Claude on Vertex AI (".../publishers/anthropic/models/M:rawPredict") is read and answered as Anthropic's Messages API: without max_tokens it is refused in Anthropic's shape, as at /v1/messages (before: taken for OpenAI, admitted reserving the default, its "system" not counted)
--- http_config eval: $::Http
--- config eval: $::Gateway
--- request eval
::post("/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-3-haiku:rawPredict", '{"anthropic_version":"vertex-2023-10-16","system":"be brief","messages":[{"role":"user","content":"hi"}]}')
--- more_headers eval: $::Auth
--- error_code: 400
--- response_body_like: ^\{"type":"error","error":\{"type":"invalid_request_error","message":"max_tokens: Field required"
--- mock_count: 0
