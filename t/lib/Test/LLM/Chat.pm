package Test::LLM::Chat;

# Chat completions the tests send and the mock answers with (t/072,
# t/076, t/094, t/096, t/099, t/101, t/102, t/106).
#
#   use Test::LLM::Chat qw(chat post);
#   post('/v1/chat/completions', chat(max => undef, stream => 1))
#   { body => $Test::LLM::Chat::ANSWER }      # 10 + 20 tokens used

use strict;
use warnings;

use Exporter 'import';
use Test::LLM::Keys ();
use Test::LLM::Nginx ();
our @EXPORT_OK = qw(chat post carol_chat);


# an OpenAI chat completion that used 10 prompt and 20 completion tokens
our $ANSWER = '{"id":"c","object":"chat.completion","model":"m",'
    . '"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},'
    . '"finish_reason":"stop"}],'
    . '"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}';


# a request body: model (gpt-4o), max (max_tokens, 50; undef: none),
# stream, text (the user's message, "Hi")
sub chat {
    my (%o) = @_;
    my $max = exists $o{max} ? $o{max} : 50;
    return '{"model":"' . ($o{model} // 'gpt-4o') . '",'
        . (defined $max ? "\"max_tokens\":$max," : '')
        . ($o{stream} ? '"stream":true,' : '')
        . '"messages":[{"role":"user","content":"' . ($o{text} // 'Hi')
        . '"}]}';
}


# a --- request: "POST uri" and the body
sub post { my ($uri, $body) = @_; "POST $uri\n$body" }


# carol's POST /v1/chat/completions of a JSON body, from a check: the response
sub carol_chat {
    my ($body) = @_;
    return Test::LLM::Nginx::http_request("POST /v1/chat/completions",
        more_headers => "Authorization: Bearer $Test::LLM::Keys::CAROL\r\n"
                        . "Content-Type: application/json",
        body => $body, timeout => 10);
}


1;
