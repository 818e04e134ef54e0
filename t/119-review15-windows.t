# Review 15, token windows from a paying client's side: what a request
# reserves (a chat request sent with an upload's type, an Anthropic text
# document, a file given twice over), what the access log says of a
# request let through uncounted, what a Gemini stream with stale usage is
# charged, and what nginx says when it stops with usage unreplayed.  Each
# block failed before its fix.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat qw(chat post);

our $Auth = "Authorization: Bearer $Test::LLM::Keys::CAROL";

our $Http = $Test::LLM::Keys::TIERS . <<"_EOC_";
    llm_tier tok tokens=1000/m input_tokens=900/m output_tokens=500/m;
    log_format llm '\$llm_account|\$llm_prompt_tokens|\$llm_completion_tokens|\$llm_tokens_estimated|\$llm_limit_result|\$status';
_EOC_

# carol's request with a Content-Type of its own, from a check
sub carol {
    my ($line, $type, $body) = @_;
    return http_request($line,
        more_headers => "$::Auth\r\nContent-Type: $type",
        body => $body, timeout => 10);
}

# what llm_token_info counts for a body
sub tokens {
    my ($body) = @_;
    my $r = http_request("POST /tokens", body => $body, timeout => 10);
    my ($n) = $r->{body} =~ /"tokens":(\d+)/;
    return $n // "none in $r->{body}";
}

our $Text = join " ", map { "word$_" } 1 .. 600;

sub claude {
    my ($part) = @_;
    return '{"model":"claude-x","max_tokens":10,"messages":[{"role":"user",'
        . '"content":[' . $part . ',{"type":"text","text":"Summarize."}]}]}';
}

run_tests();

__DATA__

=== TEST 1: a chat request sent as application/octet-stream to a generation endpoint is read as the JSON it is: a body that cannot fit is refused up front, and a stream gets stream_options with llm_stream_usage on (before: taken for an upload, admitted reserving 101 tokens, a stream charged almost nothing); an upload elsewhere is still one
--- http_config eval: $::Http
--- config
llm_default_tier tok;
llm_max_tokens_default 100;
location /v1/ {
    llm_gateway on;
    llm_stream_usage on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $t = 'application/octet-stream';
    my $a = ::carol("POST /v1/chat/completions", $t, ::chat(max => 100000));
    my $b = ::carol("POST /v1/chat/completions", $t, ::chat(stream => 1));
    my $c = ::carol("POST /v1/audio/transcriptions", $t, "RIFF....");
    my $got = join ' ', map { $_->{status} } $a, $b, $c;
    return (0, "statuses $got, want 429 200 200") unless $got eq '429 200 200';
    my @r = mock_requests();
    my ($chat) = grep { $_->{path} eq '/v1/chat/completions' } @r;
    return (0, "the stream reached the backend as $chat->{body}")
        unless $chat->{body} =~ /"stream_options":\{"include_usage":true\}/;
    return 1;
}



=== TEST 2: an Anthropic document of text counts its text, as the same text in a text block does (before: a flat 1,600 tokens whatever its size, so 1 MB of text was reserved as 1,610); a PDF document still counts as a file; a document too big for the window is refused up front
--- http_config eval: $::Http
--- config
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /tokens {
    llm_api anthropic;
    llm_token_info;
}
--- request
GET /v1/models
--- more_headers eval: $::Auth
--- check eval
sub {
    my $text = ::tokens(::claude(qq({"type":"text","text":"$::Text"})));
    my $doc = ::tokens(::claude(qq({"type":"document","source":{"type":"text","media_type":"text/plain","data":"$::Text"}})));
    my $blocks = ::tokens(::claude(qq({"type":"document","source":{"type":"content","content":[{"type":"text","text":"$::Text"}]}})));
    my $pdf = ::tokens(::claude('{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0xLjQK"}}'));
    my $got = "text $text, text document $doc, content document $blocks, pdf $pdf";
    return (0, $got) unless $text =~ /^\d+$/ && $text > 1000
        && $doc == $text && $blocks == $text && $pdf > 1600 && $pdf < 1700;
    my $r = http_request("POST /v1/messages",
        more_headers => "$::Auth\r\nContent-Type: application/json",
        body => ::claude(qq({"type":"document","source":{"type":"text","media_type":"text/plain","data":"$::Text"}})));
    return (0, "the document's request: $r->{status} $r->{body}")
        unless $r->{status} == 429 && $r->{body} =~ /is less than this request needs/;
    return 1;
}
--- mock_count: 1



=== TEST 3: a Responses API file given as file_data with its filename counts as one file, as file_id alone does (before: two)
--- http_config eval: $::Http
--- config
location = /tokens {
    llm_api openai;
    llm_token_info;
}
--- request eval
[::post("/tokens", '{"model":"gpt-4o","input":[{"role":"user","content":[{"type":"input_file","filename":"a.txt","file_data":"data:text/plain;base64,aGVsbG8="}]}]}'),
 ::post("/tokens", '{"model":"gpt-4o","input":[{"role":"user","content":[{"type":"input_file","file_id":"file-abc"}]}]}')]
--- response_body_like eval
['^\{"tokens":(1\d{3}),', '^\{"tokens":(1\d{3}),']



=== TEST 4: let through uncounted while Redis is down (on_error=allow), a request's variables say what the backend reported, and an error answer 0 (before: the prompt estimate, estimated, whatever came back)
--- http_config eval
$::Http . "llm_redis 127.0.0.1:$ENV{TEST_NGINX_DEAD_PORT} timeout=200ms on_error=allow;\n"
--- config
access_log logs/access.log llm;
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub {
    my ($req) = @_;
    return { status => 500, body => '{"error":{"message":"boom"}}' }
        if $req->{body} =~ /boom/;
    return mock_openai(prompt_tokens => 500, completion_tokens => 700);
}
--- request eval
[::post("/v1/chat/completions", ::chat()), ::post("/v1/chat/completions", ::chat(text => "boom"))]
--- more_headers eval: $::Auth
--- error_code eval
[200, 500]
--- access_log_like
^carol\|500\|700\|0\|store_error\|200$
^carol\|0\|0\|0\|store_error\|500$



=== TEST 5: a Gemini stream whose usage came in its first chunk only, and text after it, is charged at least the text that went out, as the same stream cut short is (before: 1 output token read to the end, 600 cut)
--- http_config eval: $::Http
--- config
access_log logs/access.log llm;
llm_default_tier tok;
location /v1beta/ {
    llm_gateway on;
    proxy_buffering off;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub {
    my $words = join ' ', ('word') x 40;
    my $chunk = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"$words \"}],\"role\":\"model\"}}]}\r\n\r\n";
    return { headers => { 'Content-Type' => 'text/event-stream' },
             body => "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}],\"role\":\"model\"}}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":1,\"totalTokenCount\":10}}\r\n\r\n" . ($chunk x 5) };
}
--- request eval: ::post("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", '{"contents":[{"role":"user","parts":[{"text":"Hi"}]}],"generationConfig":{"maxOutputTokens":400}}')
--- more_headers eval: $::Auth
--- error_code: 200
--- access_log_like
^carol\|9\|(1\d\d|2\d\d)\|1\|passed\|200$



=== TEST 6: nginx stopping during a Redis outage says at "error" that the usage its workers counted locally is lost, instead of promising a replay that no worker will make
--- http_config eval
$::Http . "llm_redis 127.0.0.1:$ENV{TEST_NGINX_DEAD_PORT} timeout=200ms;\n"
--- config
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- request eval
[::post("/v1/chat/completions", ::chat()), ::post("/v1/chat/completions", ::chat())]
--- more_headers eval: $::Auth
--- error_code eval
[200, 200]
--- error_log eval
qr/\[error\] .*llm_redis: \d+ batches of usage counted locally during a Redis outage are lost: nginx stopped before Redis came back/



=== TEST 7: Gemini embedContent and batchEmbedContents count their text (parts and titles), reserve no output, and are charged that prompt, as OpenAI's /embeddings are (before: 1,024 reserved for output, nothing counted, 0 charged; a body of 1,245 tokens went through a 1,000-token window)
--- http_config eval: $::Http
--- config
access_log logs/access.log llm;
llm_default_tier tok;
llm_max_tokens_default 100;
location /v1beta/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /tokens {
    llm_api gemini;
    llm_token_info;
}
--- mock eval
sub { return { body => '{"embedding":{"values":[0.1,0.2]}}' } }
--- request
GET /tokens?text=x
--- check eval
sub {
    my $one = '{"model":"models/text-embedding-004","content":{"parts":[{"text":"the quick brown fox jumps over the lazy dog"}]},"title":"Fox"}';
    my $n = ::tokens($one);
    my $r = http_request("POST /v1beta/models/text-embedding-004:embedContent",
        more_headers => "$::Auth\r\nContent-Type: application/json", body => $one);
    # the window with the least left: output_tokens=500/m, none reserved
    my $left = Test::LLM::Client::header($r, 'x-ratelimit-remaining-tokens') // 'none';
    return (0, "embedContent: $r->{status}, counted $n, remaining $left")
        unless $r->{status} == 200 && $n >= 9 && $n <= 14 && $left eq '500';
    my $big = '{"requests":[' . join(',', map {
        qq({"model":"models/text-embedding-004","content":{"parts":[{"text":"$::Text"}]}})
    } 1 .. 2) . ']}';
    $r = http_request("POST /v1beta/models/text-embedding-004:batchEmbedContents",
        more_headers => "$::Auth\r\nContent-Type: application/json", body => $big);
    return (0, "batchEmbedContents of 2 x 600 words: $r->{status}")
        unless $r->{status} == 429 && $r->{body} =~ /is less than this request needs/;
    return 1;
}
--- access_log_like
^carol\|(9|1[0-4])\|0\|1\|passed\|200$
