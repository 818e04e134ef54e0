# Review 15, the answers: what a client is charged when nginx, not the
# client, reads the answer (proxy_cache filling after the client left, an
# X-Accel-Redirect), when a gateway location is reached as a subrequest,
# and when a stream opens with a BOM.  Each block failed before its fix.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat qw(chat post);

our $Auth = "Authorization: Bearer $Test::LLM::Keys::CAROL";

our $Http = $Test::LLM::Keys::TIERS . <<"_EOC_";
    llm_tier tok tokens=1000/m output_tokens=500/m;
    log_format llm '\$llm_account|\$llm_prompt_tokens|\$llm_completion_tokens|\$llm_tokens_estimated|\$upstream_cache_status|\$status';
_EOC_

# POST answers cached by $llm_cache_key, and carol's windows
our $CacheHttp = $Http
    . "    proxy_cache_path cache levels=1 keys_zone=llmcache:1m;\n";

our $Cached = <<'_EOC_';
access_log logs/access.log llm;
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_cache llmcache;
    proxy_cache_methods POST;
    proxy_cache_key $llm_cache_key;
    proxy_cache_valid 200 10m;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /usage {
    llm_usage;
}
_EOC_

# carol's output tokens used this minute, as llm_usage shows them
sub output_used {
    my $r = http_request("GET /usage", more_headers => $::Auth);
    my ($out) = $r->{body}
        =~ /"output_tokens","period":"1m","limit":500,"used":(\d+)/;
    return $out // "none in $r->{body}";
}

run_tests();

__DATA__

=== TEST 1: a stream the client leaves while nginx reads it on into proxy_cache is charged its whole reservation (50 output tokens), not the few tokens that went out: its usage went to the cache, and every hit on it is free (before: 3 output tokens, then the same answer free from the cache)
--- http_config eval: $::CacheHttp
--- config eval: $::Cached
--- mock eval
sub { mock_openai_stream(usage => 1, prompt_tokens => 8, completion_tokens => 40, delay => 0.05, text => join(' ', ('word') x 40)) }
--- request eval: ::post("/v1/chat/completions", ::chat(stream => 1))
--- more_headers eval: $::Auth
--- timeout: 0.5
--- abort
--- ignore_response
--- wait: 3
--- check eval
sub {
    my $first = ::output_used();
    my $hit = http_request("POST /v1/chat/completions",
        more_headers => "$::Auth\r\nContent-Type: application/json",
        body => ::chat(stream => 1));
    my $after = ::output_used();
    my $got = "$first $hit->{status} $after";
    return ($got eq "50 200 50"
            && ($hit->{body} =~ /"completion_tokens":40/ ? 1 : 0),
            "output used after the cut, the hit's status, used after it: "
            . "$got (want 50 200 50)");
}
--- access_log_like
^carol\|\d+\|50\|1\|MISS\|200$
^carol\|0\|0\|0\|HIT\|200$



=== TEST 2: an answer the backend hands over with X-Accel-Redirect is charged its usage (300 tokens): nginx fetches it with a GET, but the client's request was a POST (before: 0 tokens, the whole reservation given back)
--- http_config eval: $::Http
--- config
access_log logs/access.log llm;
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location /internal/ {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /usage {
    llm_usage;
}
--- mock eval
sub {
    my ($req) = @_;
    return mock_openai(prompt_tokens => 100, completion_tokens => 200)
        if $req->{path} =~ m{^/internal/};
    return { headers => { 'Content-Type' => 'application/json',
                          'X-Accel-Redirect' => '/internal/chat/completions' },
             body => '{}' };
}
--- request eval
[::post("/v1/chat/completions", ::chat()), "GET /usage"]
--- more_headers eval: $::Auth
--- error_code eval
[200, 200]
--- response_body_like eval
['"completion_tokens":200', '"dimension":"tokens","period":"1m","limit":1000,"used":300,']
--- mock_count: 2
--- access_log_like
^carol\|100\|200\|0\|-\|200$



=== TEST 3: a gateway location included by SSI from a page the gateway does not guard is refused (403 to the subrequest, an error logged): a subrequest skips the access phase, so it went to the backend unchecked, uncounted, with the page request's gateway key (before: the completion was in the page and the backend got "Authorization: Bearer sk-llm-...")
--- http_config eval: $::Http
--- config
llm_default_tier tok;
location = /page.html {
    ssi on;
    root html;
}
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- user_files
>>> html/page.html
before <!--# include virtual="/v1/chat/completions" --> after
--- request eval
["GET /page.html", "GET /page.html"]
--- more_headers eval
["", $::Auth]
--- error_code eval
[200, 200]
--- response_body_like eval
['^before <html>.*403 Forbidden.*</html>\r?\n after\n\z',
 '^before <html>.*403 Forbidden.*</html>\r?\n after\n\z']
--- mock_count: 0
--- error_log
subrequest "/v1/chat/completions" to a gateway location refused



=== TEST 4: a mirror of a request the gateway admitted is still served, and neither copy carries the client's key to a backend
--- http_config eval: $::Http
--- config
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    mirror /shadow;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /shadow {
    internal;
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT/shadow;
}
--- request eval: ::post("/v1/chat/completions", ::chat())
--- more_headers eval: $::Auth
--- error_code: 200
--- wait: 0.5
--- mock_count: 2
--- check eval
sub {
    my @r = mock_requests();
    my @paths = sort map { $_->{path} } @r;
    return (0, "paths: @paths") unless "@paths" eq "/shadow /v1/chat/completions";
    for my $q (@r) {
        return (0, "$q->{path} got a credential: "
                   . ($q->{headers}{authorization} // ''))
            if grep { defined $q->{headers}{$_} && $q->{headers}{$_} =~ /sk-llm|Bearer/ }
                    qw(authorization x-api-key api-key x-goog-api-key);
    }
    return 1;
}
--- no_error_log
to a gateway location refused



=== TEST 5: an SSE answer that opens with a UTF-8 BOM has its usage read (71 + 72 tokens), as the SSE standard drops the BOM (before: the estimate, 0 output tokens)
--- http_config eval: $::Http
--- config
access_log logs/access.log llm;
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_buffering off;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub { return { headers => { 'Content-Type' => 'text/event-stream' }, body => "\xEF\xBB\xBFdata: {\"usage\":{\"prompt_tokens\":71,\"completion_tokens\":72}}\n\ndata: [DONE]\n\n" } }
--- request eval: ::post("/v1/chat/completions", ::chat(stream => 1))
--- more_headers eval: $::Auth
--- error_code: 200
--- access_log_like
^carol\|71\|72\|0\|-\|200$



=== TEST 6: with llm_gateway on for the whole server, auth_request's subrequest (to a location that inherits it) is still served, and a request it denies is refused before the gateway counts it
--- http_config eval: $::Http
--- config
llm_gateway on;
llm_default_tier tok;
location /v1/ {
    auth_request /auth;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /auth {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT/auth;
    proxy_pass_request_body off;
    proxy_set_header Content-Length "";
}
location = /usage {
    llm_usage;
}
--- mock eval
sub {
    my ($req) = @_;
    return { status => $req->{headers}{'x-deny'} ? 403 : 200, body => '' }
        if $req->{path} eq '/auth';
    return mock_openai(prompt_tokens => 10, completion_tokens => 20);
}
--- request eval
[::post("/v1/chat/completions", ::chat()), ::post("/v1/chat/completions", ::chat()), "GET /usage"]
--- more_headers eval
[$::Auth, "$::Auth\r\nX-Deny: 1", $::Auth]
--- error_code eval
[200, 403, 200]
--- response_body_like eval
['"completion_tokens":20', '', '"dimension":"tokens","period":"1m","limit":1000,"used":30,']
--- mock_count: 3
--- no_error_log
to a gateway location refused



=== TEST 7: a stream whose final usage went out before the client left, while nginx read the rest into proxy_cache, is charged that usage (40 output tokens), not its reservation (300)
--- http_config eval: $::CacheHttp
--- config eval: $::Cached
--- mock eval
sub {
    my $ev = sub { "event: $_[0]\ndata: $_[1]\n\n" };
    return { headers => { 'Content-Type' => 'text/event-stream' }, chunks => [
        $ev->('message_start', '{"type":"message_start","message":{"id":"m1","model":"claude-x","usage":{"input_tokens":12,"output_tokens":1}}}'),
        $ev->('content_block_delta', '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello there"}}'),
        $ev->('message_delta', '{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":40}}'),
        { delay => 1.5 },
        $ev->('message_stop', '{"type":"message_stop"}') ] };
}
--- request eval: ::post("/v1/messages", ::chat(model => "claude-x", stream => 1, max => 300))
--- more_headers eval: $::Auth
--- timeout: 0.7
--- abort
--- ignore_response
--- wait: 2.5
--- check eval
sub {
    my $out = ::output_used();
    return ($out eq '40', "output tokens charged: $out (want 40)");
}
--- access_log_like
^carol\|12\|40\|0\|MISS\|200$



=== TEST 8: a Gemini stream as a JSON array (no alt=sse) whose usage came in its first element only, and text after it, is charged at least that text, as its SSE form is
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
    my $more = ",\r\n{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"$words \"}],\"role\":\"model\"}}]}";
    # streamed: element by element, as Gemini sends it
    return { headers => { 'Content-Type' => 'application/json' },
             chunks => [ "[{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}],\"role\":\"model\"}}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":1,\"totalTokenCount\":10}}",
                         (map { ({ delay => 0.05 }, $more) } 1 .. 5), "]" ] };
}
--- request eval: ::post("/v1beta/models/gemini-2.0-flash:streamGenerateContent", '{"contents":[{"role":"user","parts":[{"text":"Hi"}]}],"generationConfig":{"maxOutputTokens":400}}')
--- more_headers eval: $::Auth
--- error_code: 200
--- access_log_like
^carol\|9\|(1\d\d|2\d\d)\|1\|-\|200$



=== TEST 9: the error_page of a request the gateway refused (a page with SSI, in a server with llm_gateway on) cannot include a gateway location: the include is refused, the backend never called
--- http_config eval
$::Http . "    llm_tier one requests=1/m;\n"
--- config
llm_gateway on;
llm_default_tier one;
error_page 429 /busy.html;
location = /busy.html {
    internal;
    ssi on;
    root html;
}
location /v1/ {
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- user_files
>>> html/busy.html
busy: <!--# include virtual="/v1/models" -->.
--- request eval
["GET /v1/models", "GET /v1/models"]
--- more_headers eval: $::Auth
--- error_code eval
[200, 429]
--- response_body_like eval
['', '^busy: <html>.*403 Forbidden.*</html>\r?\n\.\n\z']
--- mock_count: 1
--- error_log
subrequest "/v1/models" to a gateway location refused



=== TEST 10: so with proxy_store: a stream the client leaves while nginx reads it on into its file is charged at least its usage (40 output tokens, read if it went by, else the reservation of 50), never only what went out before the client left
--- http_config eval: $::Http
--- config
access_log logs/access.log llm;
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    root html;
    proxy_store on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /usage {
    llm_usage;
}
--- user_files
>>> html/v1/.keep
--- mock eval
sub { mock_openai_stream(usage => 1, prompt_tokens => 8, completion_tokens => 40, delay => 0.05, text => join(' ', ('word') x 40)) }
--- request eval: ::post("/v1/chat/completions", ::chat(stream => 1))
--- more_headers eval: $::Auth
--- timeout: 0.5
--- abort
--- ignore_response
--- wait: 3
--- check eval
sub {
    my $out = ::output_used();
    my $stored = -s servroot() . "/html/v1/chat/completions";
    return ($out =~ /^(40|50)$/ && $stored && $stored > 1000,
            "output tokens charged: $out (want 40 or 50), stored: "
            . ($stored // 'nothing'));
}
--- access_log_like
^carol\|\d+\|(40\|0|50\|1)\|-\|200$



=== TEST 11: an encoded answer (unread, charged its reservation) that is an event stream is logged as a stream ($llm_stream 1), as the same answer unencoded is
--- http_config eval
$::Http . "    log_format st '\$llm_stream|\$llm_tokens_estimated|\$status';\n"
--- config
access_log logs/access.log st;
llm_default_tier tok;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub { return { headers => { 'Content-Type' => 'text/event-stream', 'Content-Encoding' => 'gzip' }, body => "\x1f\x8b\x08\x00" } }
--- request eval: ::post("/v1/chat/completions", ::chat())
--- more_headers eval: $::Auth
--- error_code: 200
--- access_log_like
^1\|1\|200$
