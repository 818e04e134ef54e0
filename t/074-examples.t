# The files in conf.examples/ work as they are: each is rendered (only its
# lines marked "# run: NAME" change: paths, ports, the backend), started
# as an nginx of its own next to the block's, and used like an operator
# would.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use IO::Socket::INET;
use Time::HiRes ();

our $CAROL = $Test::LLM::Keys::CAROL;

# conf.examples/NAME rendered into the server root, started; returns
# (port, stop sub)
sub start_example {
    my ($name, %run) = @_;

    my $c   = harness_config();
    my $dir = servroot() . "/example";
    mkdir $dir;
    mkdir "$dir/$_" for qw(logs conf tmp);

    my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                     Listen => 1) or die "port: $!";
    my $port = $sock->sockport;
    close $sock;

    # the key file: carol alone (no tier: the location's default)
    my ($line) = grep { / carol$/ } do {
        open my $k, '<', $Test::LLM::Keys::KEY_FILE or die $!; <$k> };
    open my $kf, '>', "$dir/keys.txt" or die $!;
    print $kf $line;
    close $kf;

    my %lines = (
        pid         => "pid $dir/nginx.pid;",
        error_log   => "error_log $dir/logs/error.log info;",
        load_module => "load_module $c->{module};",
        access_log  => "access_log $dir/logs/access.log llm;",
        key_file    => "llm_key_file $dir/keys.txt;",
        listen      => "listen 127.0.0.1:$port;",
        backend     => "server 127.0.0.1:$ENV{TEST_NGINX_MOCK_PORT};",
        %run,
    );

    open my $in, '<', "conf.examples/$name" or die "$name: $!";
    my $conf = '';
    while (my $l = <$in>) {
        if ($l =~ /^(\s*).*#\s*run:\s*(\S+)\s*$/) {
            my ($indent, $k) = ($1, $2);
            $l = exists $lines{$k} ? "$indent$lines{$k}\n" : $l;
        }
        $conf .= $l;
    }
    $conf = ($> == 0 ? "user root root;\n" : '') . $conf;

    open my $out, '>', "$dir/conf/nginx.conf" or die $!;
    print $out $conf;
    close $out;

    my $t = `$c->{nginx} -p $dir/ -c conf/nginx.conf -t 2>&1`;
    die "nginx -t on conf.examples/$name:\n$t" if $?;

    system($c->{nginx}, '-p', "$dir/", '-c', 'conf/nginx.conf') == 0
        or die "cannot start conf.examples/$name";

    for (1 .. 50) {
        last if IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port");
        Time::HiRes::sleep(0.1);
    }

    my $stop = sub {
        open my $p, '<', "$dir/nginx.pid" or return;
        my $pid = <$p>;
        chomp $pid;
        kill 'QUIT', $pid;
        for (1 .. 50) { last unless kill 0, $pid; Time::HiRes::sleep(0.1) }
    };

    return ($port, $stop, $dir);
}

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
