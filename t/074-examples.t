# The files in conf.examples/ work as they are: each is rendered (only its
# lines marked "# run: NAME" change: paths, ports, the backend), started
# as an nginx of its own next to the block's, and used like an operator
# would.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Examples;
use Time::HiRes ();

our $CAROL = $Test::LLM::Keys::CAROL;

run_tests();

__DATA__

=== TEST 1: conf.examples/caching.conf: the same request twice is one call and is charged once
--- config
location = /x { return 204; }
--- request
GET /x
--- error_code: 204
--- check eval
sub {
    my ($port, $stop, $dir) = ::start_example('caching.conf',
        cache => "proxy_cache_path " . servroot() . "/example/cache keys_zone=llm_cache:1m");

    my $auth = "Authorization: Bearer $::CAROL";
    my @bodies = (
        '{"model":"gpt-4o","max_tokens":50,"messages":[{"role":"user","content":"Hi"}]}',
        '{"messages":[{"role":"user","content":"Hi"}], "model":"gpt-4o", "max_tokens":50}',
    );

    my @r = map {
        http_request("POST /v1/chat/completions", port => $port,
                     more_headers => $auth, body => $_)
    } @bodies;

    Time::HiRes::sleep(0.2);
    my $log = do { local (@ARGV, $/) = ("$dir/logs/access.log"); <> } // '';
    my $err = do { local (@ARGV, $/) = ("$dir/logs/error.log"); <> } // '';
    $stop->();

    my @calls = mock_requests();

    return (0, "statuses $r[0]{status} $r[1]{status}: $err")
        unless $r[0]{status} == 200 && $r[1]{status} == 200;
    return (0, "X-Cache-Status: $r[0]{header}{'x-cache-status'}, $r[1]{header}{'x-cache-status'}")
        unless $r[0]{header}{'x-cache-status'} eq 'MISS'
            && $r[1]{header}{'x-cache-status'} eq 'HIT';
    return (0, scalar(@calls) . " calls to the backend") unless @calls == 1;
    return (0, "tokens: " . join(' ', map { $_->{header}{'x-ratelimit-remaining-tokens'} } @r))
        unless $r[1]{header}{'x-ratelimit-remaining-tokens'} > 199900;
    return (0, "access log:\n$log")
        unless $log =~ /model=gpt-4o tokens=30 cost=0\.000225 cache=MISS/
            && $log =~ /model=gpt-4o tokens=0 cost=0\.000000 cache=HIT/;
    return (0, "error log: $err") if $err =~ /\[(alert|crit|emerg)\]/;
    return 1;
}
