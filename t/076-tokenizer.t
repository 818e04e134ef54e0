# "llm_tokenizer PATH [pattern=cl100k|o200k]" in nginx: a vocabulary that cannot be read or is
# not one fails nginx -t, naming the file and the line; with one,
# llm_token_info says "method":"bpe" and gives the exact count, and a
# token window reserves the exact prompt count.
#
# The vocabulary is small and made here, so the counts can be worked out
# by hand: every byte (rank = its value), then "aa", "aaaa", "aaaaaaaa",
# "Hello", " world", "!!", "camelCase", "camel" and "Case".  "Hello
# world!! xyz" is cut into "Hello", " world", "!!" and " xyz", which no
# pair of merges covers: 1 + 1 + 1 + 4 = 7 tokens (the estimator says
# 5).  Forty "a" are 5 tokens "aaaaaaaa" (the estimator says 8).
# "camelCase" is one piece and one token with cl100k's pre-tokenizer,
# two ("camel", "Case") with o200k's.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat qw(post);
use MIME::Base64 qw(encode_base64);

our $KEYS = $Test::LLM::Keys::KEY_FILE;
our $CAROL = $Test::LLM::Keys::CAROL;
our $Auth = "Authorization: Bearer $CAROL";

sub vocab {
    my (%o) = @_;
    my @lines = map { encode_base64(chr($_), '') . " $_" }
                grep { !defined $o{without} || $_ != $o{without} } 0 .. 255;
    my $r = 256;
    push @lines, map { encode_base64($_, '') . ' ' . $r++ }
                     ('aa', 'aaaa', 'aaaaaaaa', 'Hello', ' world', '!!',
                      'camelCase', 'camel', 'Case');
    splice(@lines, $o{bad_at} - 1, 0, $o{bad}) if $o{bad};
    return join("\n", @lines) . "\n";
}

our $Vocab = ">>> conf/vocab.tiktoken\n" . vocab();

our $Http = <<"_EOC_";
    llm_zone llm:1m;
    llm_key_file $KEYS;
    llm_tier tok tokens=1000/m;
    llm_tier small requests=3/m;
    llm_tier quota requests=2/d;
    llm_tokenizer vocab.tiktoken;
    log_format llm '\$llm_prompt_tokens|\$llm_tokens_estimated';
_EOC_

sub chat {
    my ($text) = @_;
    return '{"model":"gpt-4o","max_tokens":50,"messages":'
        . '[{"role":"user","content":"' . $text . '"}]}';
}


run_tests();

__DATA__

=== TEST 1: no such file
--- http_config
llm_tokenizer missing.tiktoken;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*vocabulary "\S+\/conf\/missing\.tiktoken": open\(\) failed \(2: No such file or directory\) in \S+nginx\.conf:\d+/



=== TEST 2: a line that is not "BASE64TOKEN RANK" is named
--- user_files eval
">>> conf/vocab.tiktoken\n" . ::vocab(bad => "aGk= 12x", bad_at => 3)
--- http_config
llm_tokenizer vocab.tiktoken;
--- config
--- must_die
--- error_log eval
qr/vocabulary "\S+\/conf\/vocab\.tiktoken": line 3: rank is not a number below 4294967295 in \S+nginx\.conf:\d+/



=== TEST 3: a token that is not base64
--- user_files eval
">>> conf/a.tiktoken\n" . ::vocab(bad => "a?b= 999", bad_at => 7)
--- http_config
llm_tokenizer a.tiktoken;
--- config
--- must_die
--- error_log eval
qr/vocabulary "\S+a\.tiktoken": line 7: token is not base64 of 1 to 65535 bytes/



=== TEST 4: a token given twice (the second is named)
--- user_files eval
">>> conf/b.tiktoken\n" . ::vocab(bad => "aGk= 999\naGk= 1000", bad_at => 200)
--- http_config
llm_tokenizer b.tiktoken;
--- config
--- must_die
--- error_log eval
qr/vocabulary "\S+b\.tiktoken": line 201: the token appears twice/



=== TEST 5: a vocabulary without a token for some byte cannot count every text
--- user_files eval
">>> conf/vocab.tiktoken\n" . ::vocab(without => 0x7e)
--- http_config
llm_tokenizer vocab.tiktoken;
--- config
--- must_die
--- error_log eval
qr/vocabulary "\S+vocab\.tiktoken": no token for the byte 0x7e in \S+nginx\.conf:\d+/



=== TEST 6: one vocabulary per http block
--- user_files eval: $::Vocab
--- http_config
llm_tokenizer vocab.tiktoken;
llm_tokenizer vocab.tiktoken;
--- config
--- must_die
--- error_log eval
qr/"llm_tokenizer" directive is duplicate in \S+nginx\.conf:\d+/



=== TEST 7: not in a location
--- user_files eval: $::Vocab
--- http_config
--- config
location / { llm_tokenizer vocab.tiktoken; }
--- must_die
--- error_log eval
qr/"llm_tokenizer" directive is not allowed here/



=== TEST 8: llm_token_info counts exactly: text, a chat request (framing added), an image (its fixed weight)
--- user_files eval: $::Vocab
--- http_config eval: $::Http
--- config
location = /tokens {
    llm_token_info;
}
--- request eval
["GET /tokens?text=Hello+world%21%21+xyz",
 "GET /tokens?text=" . ('a' x 40),
 "GET /tokens?text=camelCase",
 ::post("/tokens", ::chat("Hello world!! xyz")),
 ::post("/tokens", '{"model":"m","messages":[{"role":"user","content":'
                   . '[{"type":"text","text":"Hello world!! xyz"},'
                   . '{"type":"image_url","image_url":{"url":"x"}}]}]}'),
 ::post("/tokens", "Hello world!! xyz")]
--- response_body eval
["{\"tokens\":7,\"characters\":17,\"method\":\"bpe\"}\n",
 "{\"tokens\":5,\"characters\":40,\"method\":\"bpe\"}\n",
 "{\"tokens\":1,\"characters\":9,\"method\":\"bpe\"}\n",
 "{\"tokens\":14,\"characters\":17,\"method\":\"bpe\"}\n",
 "{\"tokens\":1614,\"characters\":17,\"method\":\"bpe\"}\n",
 "{\"tokens\":7,\"characters\":17,\"method\":\"bpe\"}\n"]
--- no_error_log
[alert]



=== TEST 9: the token window reserves the exact prompt: 7 + 4 + 3 = 14, plus max_tokens 50
--- user_files eval: $::Vocab
--- http_config eval: $::Http
--- config
llm_default_tier tok;
access_log logs/access.log llm;
location /v1/ {
    llm_gateway on;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- mock eval
sub { mock_openai(usage => 0) }
--- request eval: ::post("/v1/chat/completions", ::chat("Hello world!! xyz"))
--- more_headers eval: $::Auth
--- error_code: 200
--- response_headers
x-ratelimit-remaining-tokens: 936
--- access_log_like
^14\|1$



=== TEST 10: pattern=o200k cuts as o200k_base does; pattern=cl100k is the default
--- user_files eval: $::Vocab
--- http_config
llm_tokenizer vocab.tiktoken pattern=o200k;
--- config
location = /tokens {
    llm_token_info;
}
--- request eval
["GET /tokens?text=camelCase", "GET /tokens?text=Hello+world%21%21+xyz"]
--- response_body eval
["{\"tokens\":2,\"characters\":9,\"method\":\"bpe\"}\n",
 "{\"tokens\":7,\"characters\":17,\"method\":\"bpe\"}\n"]



=== TEST 11: an unknown parameter
--- user_files eval: $::Vocab
--- http_config
llm_tokenizer vocab.tiktoken pattern=gpt2;
--- config
--- must_die
--- error_log eval
qr/invalid parameter "pattern=gpt2" in \S+nginx\.conf:\d+/
