# Review 11: clients that speak HTTP/2 to nginx, over h2c (prior
# knowledge) and over TLS (ALPN h2), with curl as the SDKs' stand-in and a
# small hand-written HTTP/2 client where curl cannot do it (a stream reset
# mid-answer, a body in many small DATA frames, an HPACK-indexed header).
# Each block is a reproducer of what the review found (TESTs 12 and 16,
# failing before their fixes), or a "(holds)" block for a real risk that
# held; the name says what a user sees and what SPEC says.
#
# An answer that nginx sends before the body has all come in (a refusal,
# a 413) is followed by RST_STREAM NO_ERROR, as RFC 9113 8.1 allows (and
# as for nginx's own auth_basic 401); curl 7.88 sometimes reports that as
# "(92) Stream error in the HTTP/2 framing layer" and drops the answer, so
# such answers are read with the hand-written client.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;

use File::Temp ();
use IO::Select;
use IO::Socket::IP;
use JSON::PP ();
use Time::HiRes qw(time sleep);

our $Tiers = $Test::LLM::Keys::TIERS;
our $ALICE = $Test::LLM::Keys::ALICE;
our $CAROL = $Test::LLM::Keys::CAROL;
our $JSON  = JSON::PP->new->canonical;

# a self-signed certificate, made at test time
our $Certs = File::Temp::tempdir('llm-h2-XXXXXX', TMPDIR => 1,
                                 CLEANUP => 1);

system("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256"
       . " -nodes -keyout '$Certs/key.pem' -out '$Certs/cert.pem' -days 2"
       . " -subj /CN=localhost 2>/dev/null") == 0
    or die "openssl req failed\n";

$ENV{TEST_NGINX_H2C_PORT} = free_port();
$ENV{TEST_NGINX_H2S_PORT} = free_port();
$ENV{TEST_NGINX_CERTS}    = $Certs;

# the same locations on an h2c and a TLS h2 server
sub h2_servers {
    my ($locations) = @_;

    return qq{
    server {
        listen 127.0.0.1:$ENV{TEST_NGINX_H2C_PORT} http2;
        $locations
    }
    server {
        listen 127.0.0.1:$ENV{TEST_NGINX_H2S_PORT} ssl http2;
        ssl_certificate $Certs/cert.pem;
        ssl_certificate_key $Certs/key.pem;
        $locations
    }
};
}

our $Gateway = q{
        llm_default_tier tok;
        client_body_buffer_size 1k;
        client_max_body_size 200k;
        location /v1/ {
            llm_gateway on;
            proxy_buffering off;
            proxy_set_header Accept-Encoding "";
            proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        }
        location /v1beta/ {
            llm_gateway on;
            proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        }
        location = /usage {
            llm_usage;
        }
};

sub http_conf {
    my ($tier, $more) = @_;

    return $Tiers . "    llm_tier tok $tier;\n" . ($more // '') . q{
    log_format h2 '$server_protocol|$status|$request|$request_uri|$llm_prompt_tokens|$llm_completion_tokens|$llm_tokens_estimated|$llm_key_id';
    access_log logs/access.log h2;
} . h2_servers($Gateway);
}

our $Http = http_conf('tokens=100000/m requests=100/m');

# h2(path, tls => 0|1, method => 'POST', headers => [...], body => STR,
#    no_length => 1 (upload from stdin: no Content-Length), max_time => s):
# { status, version, headers => { lc name => value }, body }
sub h2 {
    my ($path, %o) = @_;

    my $port = $o{tls} ? $ENV{TEST_NGINX_H2S_PORT}
                       : $ENV{TEST_NGINX_H2C_PORT};
    my $url  = ($o{tls} ? 'https' : 'http') . "://127.0.0.1:$port$path";
    my $dir  = File::Temp::tempdir(CLEANUP => 1);

    my @cmd = ('curl', '-sS', '-o', "$dir/body", '-D', "$dir/head",
               '-w', '%{http_version}', '--max-time', $o{max_time} || 10,
               $o{tls} ? ('--http2', '-k') : ('--http2-prior-knowledge'));

    push @cmd, '-X', $o{method} if $o{method};
    push @cmd, map { ('-H', $_) } @{ $o{headers} || [] };

    if (defined $o{body}) {
        open(my $fh, '>', "$dir/req") or die "$dir/req: $!\n";
        binmode $fh;
        print $fh $o{body};
        close $fh;

        push @cmd, $o{no_length} ? ('-T', "-") : ('--data-binary',
                                                   "\@$dir/req");
        push @cmd, '-X', 'POST' if $o{no_length} && !$o{method};
    }

    push @cmd, $url;

    my $cmd = join ' ', map { "'$_'" } @cmd;
    $cmd .= " < '$dir/req'" if defined $o{body} && $o{no_length};

    my $version = `$cmd 2>'$dir/err'`;

    my $r = { version => $version, headers => {} };

    if (open(my $fh, '<', "$dir/head")) {
        local $/;
        my $head = <$fh> // '';
        ($r->{status}) = $head =~ m{\AHTTP/\S+ (\d+)};
        $r->{head} = $head;
        $r->{headers}{lc $1} = $2 while $head =~ /^([^:\s]+):\s*(.*?)\r?$/mg;
    }

    if (open(my $fh, '<', "$dir/body")) {
        local $/;
        binmode $fh;
        $r->{body} = <$fh> // '';
    }

    if (open(my $fh, '<', "$dir/err")) {
        local $/;
        $r->{err} = <$fh> // '';
    }

    return $r;
}

sub chat {
    my ($text, %o) = @_;

    return $JSON->encode({ model => 'gpt-4o', max_tokens => 10,
                           messages => [{ role => 'user',
                                          content => $text }], %o });
}

sub slurp {
    open(my $fh, '<', $_[0]) or return '';
    local $/;
    return scalar <$fh>;
}

# the access log lines of the h2 servers, split
# the access log's HTTP/2 lines, once the log has not grown for 150 ms
# (at most 3 s): a stream's line is written just after its last frame,
# which the client may have read before
sub log_lines {
    my $log = servroot() . '/logs/access.log';
    my ($text, $since) = (slurp($log), Time::HiRes::time());
    for (1 .. 60) {
        Time::HiRes::sleep(0.05);
        my $now = slurp($log);
        if ($now ne $text) {
            ($text, $since) = ($now, Time::HiRes::time());
        } elsif (Time::HiRes::time() - $since >= 0.15) {
            last;
        }
    }
    return map { [split /\|/] } grep { /^HTTP\/2/ } split /\n/, $text;
}

sub usage_of {
    my ($key, $dim) = @_;

    my $u = h2('/usage', headers => ["Authorization: Bearer $key"]);
    my $j = eval { $JSON->decode($u->{body}) } or return undef;

    for my $w (@{ $j->{windows} }) {
        return $w->{used} if $w->{dimension} eq $dim;
    }

    return undef;
}

# --- a minimal HTTP/2 client (h2c, prior knowledge) ----------------------

sub hp_int {
    my ($v, $n, $first) = @_;

    my $max = (1 << $n) - 1;

    return chr($first | $v) if $v < $max;

    my $s = chr($first | $max);

    for ($v -= $max; $v >= 128; $v >>= 7) {
        $s .= chr(($v & 127) | 128);
    }

    return $s . chr($v);
}

# literal header fields without indexing, new names, no Huffman
sub hpack {
    my @h = @_;
    my $s = '';

    while (my ($n, $v) = splice(@h, 0, 2)) {
        $s .= "\x00" . hp_int(length $n, 7, 0) . $n
              . hp_int(length $v, 7, 0) . $v;
    }

    return $s;
}

sub frame {
    my ($type, $flags, $sid, $payload) = @_;

    my $len = length $payload;

    return pack('CnCCN', $len >> 16, $len & 0xffff, $type, $flags, $sid)
           . $payload;
}

# a connection: { r, w } handles (a socket, or openssl s_client's pipes
# for TLS with ALPN h2), after the preface and our SETTINGS (and an ACK of
# the server's, sent ahead)
sub h2_connect {
    my (%o) = @_;

    my $c = {};

    if ($o{tls}) {
        require IPC::Open2;
        $c->{pid} = IPC::Open2::open2(my $r, my $w, 'sh', '-c',
            'exec openssl s_client -quiet -alpn h2 -connect '
            . "127.0.0.1:$ENV{TEST_NGINX_H2S_PORT} 2>/dev/null");
        binmode $r;
        binmode $w;
        @$c{qw(r w)} = ($r, $w);

    } else {
        my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1',
                                    PeerPort => $ENV{TEST_NGINX_H2C_PORT})
            or die "connect: $@\n";
        @$c{qw(r w)} = ($s, $s);
    }

    h2_write($c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                 . frame(4, 0, 0, '') . frame(4, 1, 0, ''));
    return $c;
}

sub h2_write {
    my ($c, $bytes) = @_;

    while (length $bytes) {
        my $n = syswrite($c->{w}, $bytes) or return;
        substr($bytes, 0, $n, '');
    }
}

sub h2_close {
    my ($c) = @_;

    close $c->{w};
    close $c->{r};

    if ($c->{pid}) {
        kill 'TERM', $c->{pid};
        waitpid($c->{pid}, 0);
    }
}

# reads one frame: [type, flags, sid, payload], or undef on EOF/timeout
sub h2_frame {
    my ($c, $timeout) = @_;

    my $buf = '';
    my $need = 9;
    my $sel = IO::Select->new($c->{r});

    while (length $buf < $need) {
        return undef unless $sel->can_read($timeout // 5);
        my $n = sysread($c->{r}, $buf, $need - length $buf, length $buf);
        return undef unless $n;

        if (length $buf == 9 && $need == 9) {
            my ($hi, $lo) = unpack('Cn', $buf);
            $need = 9 + ($hi << 16 | $lo);
        }
    }

    my ($hi, $lo, $type, $flags, $sid) = unpack('CnCCN', $buf);

    return [$type, $flags, $sid & 0x7fffffff, substr($buf, 9)];
}

# sends a request on stream $sid: headers, then the body in DATA frames of
# $o{piece} bytes (with a pause between them when asked)
sub h2_send {
    my ($c, $sid, $path, $headers, $body, %o) = @_;

    my $hdr = hpack(':method' => $o{method} // 'POST', ':scheme' => 'http',
                    ':authority' => 'localhost', ':path' => $path,
                    @$headers);

    h2_write($c, frame(1, 4 | (defined $body ? 0 : 1), $sid, $hdr));

    return unless defined $body;

    my $piece = $o{piece} || 16384;
    my @parts = $body =~ /(.{1,$piece})/sg;

    for my $i (0 .. $#parts) {
        h2_write($c, frame(0, $i == $#parts ? 1 : 0, $sid, $parts[$i]));
        sleep $o{pause} if $o{pause};
    }
}

# the answer on stream $sid: { status, body, rst (its error code) }; the
# status is the only header decoded (nginx sends it unencoded)
sub h2_answer {
    my ($c, $sid) = @_;

    my %static = (0x88 => 200, 0x89 => 204, 0x8a => 206, 0x8b => 304,
                  0x8c => 400, 0x8d => 404, 0x8e => 500);
    my $a = { status => 0, body => '' };

    while (my $f = h2_frame($c)) {
        my ($type, $flags, $id, $p) = @$f;

        if ($type == 7) {
            $a->{goaway} = 1;
            last;
        }

        next unless $id == $sid;

        if ($type == 1) {
            my $b = ord $p;
            $a->{status} = $static{$b}
                // ($b == 0x48 && substr($p, 1, 1) eq "\x03"
                    ? substr($p, 2, 3) : 'unknown');
        } elsif ($type == 0) {
            $a->{body} .= $p;
        } elsif ($type == 3) {
            $a->{rst} = unpack('N', $p);
            last;
        }

        last if ($type == 0 || $type == 1) && ($flags & 1);
    }

    return $a;
}

# one request on a connection of its own
sub h2_exchange {
    my ($path, %o) = @_;

    my $c = h2_connect(tls => $o{tls});
    my @h = @{ $o{headers} || [] };

    push @h, 'content-length' => length $o{body}
        if defined $o{body} && !$o{no_length};

    h2_send($c, 1, $path, \@h, $o{body}, %o);
    my $a = h2_answer($c, 1);
    h2_close($c);

    return $a;
}

run_tests();

__DATA__

=== TEST 1: (holds) every credential form authenticates over h2c and over TLS h2 (Authorization: Bearer, x-api-key, api-key, x-goog-api-key, ?key=; a key header that the client's HPACK encoder indexed and then references on the next stream): 200, none reaches the backend, and ?key= is masked in $request and $request_uri (SPEC §4, README llm_gateway: "masked in $request and $request_uri (HTTP/1 and HTTP/2)")
--- http_config eval: $::Http
--- config
--- check eval
sub {
    my @bad;
    my $body = main::chat('hello');

    for my $tls (0, 1) {
        for my $how (["Authorization: Bearer $::CAROL"], ["x-api-key: $::CAROL"],
                     ["api-key: $::CAROL"], ["x-goog-api-key: $::CAROL"],
                     ['?key=' . $::CAROL])
        {
            my ($path, @h) = ('/v1/chat/completions');
            if ($how->[0] =~ /^\?/) { $path .= "$how->[0]&x=1" }
            else { @h = @$how }

            my $r = main::h2($path, tls => $tls, headers => [@h,
                             'Content-Type: application/json'],
                             body => $body);

            push @bad, "tls=$tls @$how: $r->{version} $r->{status} $r->{err}"
                unless $r->{version} eq '2' && ($r->{status} // 0) == 200;
        }
    }

    # no key: curl 7.88 may report the RST_STREAM NO_ERROR that follows
    # an early answer as an error: the raw client reads the answer
    for my $tls (0, 1) {
        my $a = main::h2_exchange('/v1/chat/completions', tls => $tls,
                                  body => $body);
        push @bad, "no key, tls=$tls: $a->{status} $a->{body}"
            unless $a->{status} == 401
                   && $a->{body} =~ /"code":"invalid_api_key"/;
    }

    my $r = main::h2('/v1/models', tls => 1);
    push @bad, "no key, GET: $r->{status} $r->{head}"
        unless $r->{status} == 401
               && ($r->{headers}{'x-should-retry'} // '') eq 'false'
               && $r->{headers}{'content-type'} eq 'application/json';

    # two requests on one connection, the key header sent the way SDKs'
    # HPACK encoders send it: added to nginx's dynamic table by the first
    # (literal with incremental indexing), referenced by index (62) by the
    # second; what the gateway wipes must be the request's copy only
    for my $name ('x-api-key', 'authorization') {
        my $v = $name eq 'x-api-key' ? $::CAROL : "Bearer $::CAROL";
        my $c = main::h2_connect();
        my @st;
        for my $sid (1, 3) {
            my $hdr = main::hpack(':method' => 'GET', ':scheme' => 'http',
                                  ':authority' => 'localhost',
                                  ':path' => '/v1/models')
                      . ($sid == 1 ? "\x40" . main::hp_int(length $name, 7, 0)
                                     . $name . main::hp_int(length $v, 7, 0)
                                     . $v
                                   : "\xbe");
            main::h2_write($c, main::frame(1, 5, $sid, $hdr));
            push @st, main::h2_answer($c, $sid)->{status};
        }
        main::h2_close($c);
        push @bad, "indexed $name: @st" unless "@st" eq '200 200';
    }

    my @m = grep { $_->{method} eq 'POST' } mock_requests();
    push @bad, scalar(@m) . " backend requests, not 10" unless @m == 10;

    for my $m (@m) {
        push @bad, "key upstream: $m->{head}"
            if "$m->{head}$m->{body}" =~ /sk-llm-|\*\*\*/;
        push @bad, "bad body upstream: $m->{body}" if $m->{body} ne $body;
    }

    my @q = grep { $_->[2] =~ /key=/ } main::log_lines();
    push @bad, scalar(@q) . " ?key= lines" unless @q == 2;
    for (@q) {
        push @bad, "logged: @$_" if "@$_" =~ /sk-llm-/ || $_->[3] !~ /key=\*+&x=1/;
    }

    return (!@bad, join "\n", @bad);
}



=== TEST 2: (holds) JSON chat bodies over h2 -- small, spooled to a temporary file (over client_body_buffer_size), without Content-Length (160 KB: past the 64 KB initial window), and in many small DATA frames -- reach the backend intact and are charged the backend's usage, 30 tokens each (SPEC §7: "the backend's reported usage replaces the reservation")
--- http_config eval: $::Http
--- config
--- check eval
sub {
    my @bad;
    my @bodies = (main::chat('hello'), main::chat('hello ' x 4000),
                  main::chat('hi ' x 100), main::chat('hey ' x 40000));
    my @r = (
        main::h2('/v1/chat/completions', body => $bodies[0],
                 headers => ["x-api-key: $::CAROL"]),
        main::h2('/v1/chat/completions', body => $bodies[1], tls => 1,
                 headers => ["x-api-key: $::CAROL"]),
        main::h2('/v1/chat/completions', body => $bodies[2], no_length => 1,
                 headers => ["x-api-key: $::CAROL"]),
        main::h2('/v1/chat/completions', body => $bodies[3], no_length => 1,
                 tls => 1, headers => ["x-api-key: $::CAROL"]),
    );

    for my $i (0 .. $#r) {
        push @bad, "request $i: $r[$i]{version} $r[$i]{status} $r[$i]{body}"
            unless $r[$i]{version} eq '2' && $r[$i]{status} == 200;
    }

    # 40 DATA frames of 1000 bytes, no Content-Length, a pause between them
    push @bodies, main::chat('many ' x 7990);
    my $a = main::h2_exchange('/v1/chat/completions', no_length => 1,
                              headers => ['authorization' => "Bearer $::CAROL"],
                              body => $bodies[4], piece => 1000,
                              pause => 0.005);
    push @bad, "DATA frames: $a->{status} $a->{body}"
        unless $a->{status} == 200 && $a->{body} =~ /"total_tokens":30/;

    my @m = mock_requests();
    push @bad, scalar(@m) . " backend requests" unless @m == 5;
    for my $i (0 .. $#m) {
        push @bad, "body $i upstream: " . length($m[$i]{body}) . " bytes, not "
                   . length($bodies[$i]) unless $m[$i]{body} eq $bodies[$i];
    }

    for my $l (main::log_lines()) {
        push @bad, "logged @$l" unless $l->[4] == 10 && $l->[5] == 20
                                       && $l->[6] == 0;
    }

    my $used = main::usage_of($::CAROL, 'tokens');
    push @bad, "tokens used: $used, not 150" unless $used == 150;

    return (!@bad, join "\n", @bad);
}



=== TEST 3: (holds) a body over client_max_body_size over h2, with Content-Length and without (h2 needs none), gets the API's JSON 413 request_too_large, not nginx's HTML page, and never reaches the backend (SPEC §4: 413 request_too_large)
--- http_config eval: $::Http
--- config
--- check eval
sub {
    my @bad;
    my $big = main::chat('hello ' x 40000);

    for my $tls (0, 1) {
        for my $nl (0, 1) {
            my $a = main::h2_exchange('/v1/chat/completions', body => $big,
                                      tls => $tls, no_length => $nl,
                                      headers => ['x-api-key' => $::CAROL]);
            push @bad, "tls=$tls no_length=$nl: $a->{status} $a->{body}"
                unless $a->{status} == 413
                       && $a->{body} =~ /"code":"request_too_large"/;
        }
    }

    my $a = main::h2_exchange('/v1beta/models/gemini-pro:generateContent',
                              body => $big, no_length => 1,
                              headers => ['x-goog-api-key' => $::CAROL]);
    push @bad, "gemini: $a->{status} $a->{body}"
        unless $a->{status} == 413
               && $a->{body} =~ /"status":"[A-Z_]+"/;

    my @m = mock_requests();
    push @bad, scalar(@m) . " backend requests" if @m;

    return (!@bad, join "\n", @bad);
}



=== TEST 4: (holds) "stream": true over h2 (h2c and TLS): the SSE answer streams back whole and its usage (10 + 20) is what is charged, not an estimate (SPEC §7: usage "in JSON bodies and in SSE streams")
--- http_config eval: $::Http
--- config
--- check eval
sub {
    my @bad;

    for my $tls (0, 1) {
        my $r = main::h2('/v1/chat/completions', tls => $tls,
                         body => main::chat('hello', stream => JSON::PP::true),
                         headers => ["Authorization: Bearer $::CAROL"]);
        push @bad, "tls=$tls: $r->{version} $r->{status} $r->{body}"
            unless $r->{version} eq '2' && $r->{status} == 200
                   && $r->{body} =~ /"usage":\{"completion_tokens":20,/
                   && $r->{body} =~ /data: \[DONE\]\n\n\z/
                   && $r->{headers}{'content-type'} =~ /event-stream/;
    }

    for my $l (main::log_lines()) {
        push @bad, "logged @$l" unless $l->[4] == 10 && $l->[5] == 20
                                       && $l->[6] == 0;
    }

    my $used = main::usage_of($::CAROL, 'tokens');
    push @bad, "tokens used: $used, not 60" unless $used == 60;

    return (!@bad, join "\n", @bad);
}



=== TEST 5: (holds) an h2 client that resets its stream (RST_STREAM CANCEL) mid-answer, its connection still open, is charged its prompt estimate plus the text that went out, estimated (README: "a stream the client cut ... is charged the prompt estimate plus an estimate of the text that went out, and $llm_tokens_estimated is 1"); its concurrency slot is free for the next request at once
--- http_config eval: main::http_conf('tokens=100000/m concurrency=1')
--- config
--- mock eval
sub {
    my ($req) = @_;
    return mock_openai_stream(delay => 0.3,
        text => 'one two three four five six seven eight nine ten')
        if $req->{json}{stream};
    return mock_openai();
}
--- check eval
sub {
    my @bad;

    my $s = main::h2_connect();
    main::h2_send($s, 1, '/v1/chat/completions',
                  ['authorization' => "Bearer $::CAROL"],
                  main::chat('hello there', stream => JSON::PP::true));
    my $got = '';
    while (my $f = main::h2_frame($s)) {
        $got .= $f->[3] if $f->[0] == 0 && $f->[2] == 1;
        last if $got =~ /"content":"two /;
    }
    main::h2_write($s, main::frame(3, 0, 1, pack('N', 8)));
    push @bad, "the stream did not start: $got" unless $got =~ /two/;

    # the slot: a second request while the first connection stays open
    sleep 0.2;
    my $r = main::h2('/v1/chat/completions', body => main::chat('hi'),
                     headers => ["x-api-key: $::CAROL"]);
    push @bad, "next request: $r->{status} $r->{body}"
        unless $r->{status} == 200;
    sleep 0.5;
    main::h2_close($s);
    sleep 0.2;

    my @l = grep { $_->[2] =~ /^POST/ } main::log_lines();
    push @bad, scalar(@l) . " log lines" unless @l == 2;
    my ($cut) = grep { $_->[6] ne '0' } @l;
    push @bad, "the cut stream was logged @{ $cut || [] }"
        unless $cut && $cut->[4] > 0 && $cut->[5] >= 2 && $cut->[5] < 20
               && $cut->[6] eq '1';

    my $used = main::usage_of($::CAROL, 'tokens');
    my $want = $cut ? $cut->[4] + $cut->[5] + 30 : -1;
    push @bad, "tokens used: $used, not $want" unless $used == $want;

    return (!@bad, join "\n", @bad);
}



=== TEST 6: (holds) an h2 client that resets its stream before any answer (the backend still thinking) is charged its prompt estimate, not its whole reservation and not nothing (README: "a client gone before any answer is charged its prompt")
--- http_config eval: main::http_conf('tokens=100000/m concurrency=1')
--- config
--- mock eval
sub { return { %{ mock_openai() }, delay => 1 } }
--- check eval
sub {
    my @bad;

    my $s = main::h2_connect();
    main::h2_send($s, 1, '/v1/chat/completions',
                  ['authorization' => "Bearer $::CAROL"],
                  main::chat('hello there', max_tokens => 500));
    sleep 0.3;
    main::h2_write($s, main::frame(3, 0, 1, pack('N', 8)));
    sleep 0.3;

    my @l = grep { $_->[2] =~ /^POST/ } main::log_lines();
    push @bad, "logged: " . join(' ', map { "@$_" } @l)
        unless @l == 1 && $l[0][4] > 0 && $l[0][5] == 0 && $l[0][6] eq '1';

    my $used = main::usage_of($::CAROL, 'tokens');
    my $want = @l ? $l[0][4] : -1;
    push @bad, "tokens used: $used, not $want" unless $used == $want;
    main::h2_close($s);

    return (!@bad, join "\n", @bad);
}



=== TEST 7: (holds) the provider key pool behind an h2 client: a 429 on key a is retried on key b with the same body (spooled, sent without Content-Length, a stream), the answer names key b, and neither the client's key nor a provider secret shows in what the client gets or the logs; a provider's 401 is the client's 502 provider_unavailable (SPEC §3 upstream context, §4)
--- http_config eval
main::http_conf('tokens=100000/m', q{
    upstream openai {
        server 127.0.0.1:$TEST_NGINX_MOCK_PORT;
        llm_pool;
        llm_pool_key a secret=sk-aaa111;
        llm_pool_key b secret=sk-bbb222;
    }
}) =~ s{proxy_pass http://127.0.0.1:\$TEST_NGINX_MOCK_PORT;(?=\s*\}\s*location /v1beta)}{proxy_next_upstream error timeout http_429 non_idempotent;
            proxy_pass http://openai;}gr
--- config
--- mock eval
sub {
    my ($req) = @_;
    my $a = $req->{headers}{authorization} // '';
    return { status => 429, headers => { 'Retry-After' => 30 },
             body => '{"error":{"message":"slow down"}}' }
        if $a eq 'Bearer sk-aaa111';
    return { status => 401, body => '{"error":{"message":"bad key"}}' }
        if $req->{json}{model} eq 'revoked';
    return LLMMock::default_handler($req);
}
--- check eval
sub {
    my @bad;
    my $body = main::chat('hello ' x 3000, stream => JSON::PP::true);
    my @r = (main::h2('/v1/chat/completions', body => $body, no_length => 1,
                      headers => ["Authorization: Bearer $::CAROL"]),
             main::h2('/v1/chat/completions', body => $body, tls => 1,
                      headers => ["x-api-key: $::CAROL"]));

    for my $r (@r) {
        push @bad, "answer: $r->{version} $r->{status} $r->{head}"
            unless $r->{version} eq '2' && $r->{status} == 200
                   && $r->{headers}{'x-llm-provider-key'} eq 'b'
                   && $r->{body} =~ /\[DONE\]/;
    }

    my $r = main::h2('/v1/chat/completions', tls => 1,
                     body => main::chat('hi', model => 'revoked'),
                     headers => ["x-api-key: $::CAROL"]);
    push @bad, "revoked: $r->{status} $r->{body}"
        unless $r->{status} == 502
               && $r->{body} =~ /"code":"provider_unavailable"/;
    push @r, $r;

    my @m = mock_requests();
    my @creds = map { $_->{headers}{authorization} // 'none' } @m;
    push @bad, "backend saw: @creds" unless "@creds" eq 'Bearer sk-aaa111 '
        . 'Bearer sk-bbb222 Bearer sk-bbb222 Bearer sk-bbb222';
    for my $m (@m[0 .. 2]) {
        push @bad, "body upstream: " . length $m->{body}
            unless $m->{body} eq $body;
    }
    for my $m (@m) {
        push @bad, "client key upstream" if "$m->{head}$m->{body}" =~ /sk-llm-/;
    }

    my $logs = main::slurp(servroot() . '/logs/access.log')
               . main::slurp(servroot() . '/logs/error.log');
    for my $text ($logs, map { "$_->{head}$_->{body}" } @r) {
        push @bad, "a secret went out" if $text =~ /sk-(?:aaa111|bbb222)/;
    }

    return (!@bad, join "\n", @bad);
}



=== TEST 8: (holds) refusals over h2 come in the API's JSON with the rate-limit headers: 429 rate_limit_exceeded with Retry-After, retry-after-ms and x-ratelimit-*, 403 account_suspended during the cooldown, 400 for a body that is not JSON (SPEC §4)
--- http_config eval
(main::http_conf('tokens=100000/m') . q{
    llm_tier cool requests=2/m tokens=100000/m cooldown=30s;
}) =~ s{llm_default_tier tok;}{llm_default_tier cool;}gr
--- config
--- check eval
sub {
    my @bad;
    my @s;

    for my $i (1 .. 3) {
        my $r = main::h2('/v1/models', tls => $i % 2,
                         headers => ["Authorization: Bearer $::CAROL"]);
        push @s, $r;
    }

    my $r = $s[2];
    push @bad, "third: $r->{status} $r->{head}$r->{body}"
        unless $r->{status} == 429
               && $r->{body} =~ /"code":"rate_limit_exceeded"/
               && $r->{headers}{'retry-after'} >= 1
               && $r->{headers}{'retry-after-ms'} >= 1
               && $r->{headers}{'x-ratelimit-limit-requests'} == 2
               && $r->{headers}{'x-ratelimit-remaining-requests'} == 0
               && $r->{headers}{'content-type'} eq 'application/json';

    $r = main::h2('/v1/models', headers => ["x-api-key: $::CAROL"]);
    push @bad, "fourth: $r->{status} $r->{head}$r->{body}"
        unless $r->{status} == 403
               && $r->{body} =~ /"code":"account_suspended"/
               && $r->{headers}{'retry-after'} >= 1;

    # a POST with its body still coming: the raw client reads the answer
    my $a = main::h2_exchange('/v1/messages', tls => 1,
                              headers => ['x-api-key' => $::CAROL],
                              body => main::chat('x' x 100000),
                              piece => 16000);
    push @bad, "anthropic: $a->{status} $a->{body}"
        unless $a->{status} == 403
               && $a->{body} =~ /^\{"type":"error","error":\{"type":"permission_error"/;

    $a = main::h2_exchange('/v1/chat/completions', tls => 1,
                           headers => ['x-api-key' => $Test::LLM::Keys::FRANK],
                           body => '{"model":');
    push @bad, "bad JSON: $a->{status} $a->{body}"
        unless $a->{status} == 400
               && $a->{body} =~ /"code":"invalid_request_error"/;

    return (!@bad, join "\n", @bad);
}



=== TEST 9: (holds) a body over client_max_body_size over h2 at locations where the proxy module, not the gateway, reads it (a tier counting requests only; also with proxy_request_buffering off): the API's JSON 413 request_too_large, without Content-Length too (SPEC §4)
--- http_config eval
($::Tiers . q{
    server {
        listen 127.0.0.1:$TEST_NGINX_H2C_PORT http2;
        client_max_body_size 100k;
        location /v1/ {
            llm_gateway on;
            proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        }
        location /nb/v1/ {
            llm_gateway on;
            proxy_request_buffering off;
            proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT/v1/;
        }
    }
})
--- config
--- check eval
sub {
    my @bad;
    my $big = main::chat('hello ' x 40000);

    for my $path ('/v1/messages', '/nb/v1/messages') {
        for my $nl (0, 1) {
            my $a = main::h2_exchange($path, body => $big, no_length => $nl,
                                      headers => ['x-api-key' => $::ALICE]);
            push @bad, "$path no_length=$nl: $a->{status} $a->{body}"
                unless $a->{status} == 413
                       && $a->{body} =~ /^\{"type":"error","error":\{"type":"request_too_large"/;
        }
    }

    return (!@bad, join "\n", @bad);
}
--- no_error_log
[alert]



=== TEST 10: (holds) llm_token_info counts a body POSTed over h2 without Content-Length, and "llm_stream_usage on" adds include_usage to a spooled h2 body sent without Content-Length, whose usage is then charged (SPEC §3 llm_stream_usage, §8 llm_token_info)
--- http_config eval
main::http_conf('tokens=100000/m') =~ s{llm_default_tier tok;}{llm_default_tier tok;
        llm_stream_usage on;
        location = /tokens { llm_token_info; }}gr
--- config
--- mock eval
sub {
    my ($req) = @_;
    my $u = $req->{json}{stream_options}{include_usage};
    return mock_openai_stream(usage => $u ? 1 : 0);
}
--- check eval
sub {
    my @bad;

    my $text = main::chat('hello ' x 2000);
    my $r = main::h2('/tokens', body => 'hello ' x 2000, no_length => 1);
    push @bad, "token_info: $r->{status} $r->{body}"
        unless $r->{status} == 200 && $r->{body} =~ /"characters":12000,/;

    my $body = main::chat('hello ' x 2000, stream => JSON::PP::true);
    $r = main::h2('/v1/chat/completions', body => $body, no_length => 1,
                  tls => 1, headers => ["Authorization: Bearer $::CAROL"]);
    push @bad, "stream: $r->{status} $r->{body}"
        unless $r->{status} == 200 && $r->{body} =~ /"total_tokens":30/;

    my @m = mock_requests();
    push @bad, "upstream: " . substr($m[0]{head}, 0, 300)
        unless @m == 1 && $m[0]{json}{stream_options}{include_usage}
               && $m[0]{headers}{'content-length'} == length $m[0]{body};

    my $used = main::usage_of($::CAROL, 'tokens');
    push @bad, "tokens used: $used, not 30" unless $used == 30;

    return (!@bad, join "\n", @bad);
}



=== TEST 11: (holds) with llm_redis (admissions parked on Redis's answer): over h2 a spooled body sent without Content-Length and an SSE answer are charged their usage, and a stream reset mid-answer its prompt plus what went out, estimated (SPEC §7, README: a stream the client cut)
--- skip_eval: `redis-cli -p $ENV{TEST_NGINX_REDIS_PORT} ping 2>&1` !~ /PONG/
--- http_config eval
main::http_conf('tokens=100000/m concurrency=2',
    "    llm_redis 127.0.0.1:\$TEST_NGINX_REDIS_PORT prefix=r11-$$-"
    . time() . ":;\n")
--- config
--- mock eval
sub {
    my ($req) = @_;
    return mock_openai_stream(delay => 0.3,
        text => 'one two three four five six seven eight nine ten')
        if $req->{json}{stream} && $req->{json}{model} eq 'slow';
    return LLMMock::default_handler($req);
}
--- check eval
sub {
    my @bad;

    my $r = main::h2('/v1/chat/completions', no_length => 1, tls => 1,
                     body => main::chat('hello ' x 2000),
                     headers => ["x-api-key: $::CAROL"]);
    push @bad, "spooled: $r->{status} $r->{body}" unless $r->{status} == 200;

    $r = main::h2('/v1/chat/completions',
                  body => main::chat('hello', stream => JSON::PP::true),
                  headers => ["x-api-key: $::CAROL"]);
    push @bad, "stream: $r->{status} $r->{body}"
        unless $r->{status} == 200 && $r->{body} =~ /"total_tokens":30/;

    my $s = main::h2_connect(tls => 1);
    main::h2_send($s, 1, '/v1/chat/completions',
                  ['authorization' => "Bearer $::CAROL"],
                  main::chat('hello there', stream => JSON::PP::true,
                             model => 'slow'));
    my $got = '';
    while (my $f = main::h2_frame($s)) {
        $got .= $f->[3] if $f->[0] == 0 && $f->[2] == 1;
        last if $got =~ /"content":"two /;
    }
    main::h2_write($s, main::frame(3, 0, 1, pack('N', 8)));
    push @bad, "the stream did not start: $got" unless $got =~ /two/;
    sleep 0.5;
    main::h2_close($s);
    sleep 0.3;

    my @l = grep { $_->[2] =~ /^POST/ } main::log_lines();
    my ($cut) = grep { $_->[6] ne '0' } @l;
    push @bad, "logged: " . join(' | ', map { "@$_" } @l)
        unless @l == 3 && $cut && $cut->[4] > 0 && $cut->[5] >= 2
               && $cut->[5] < 20;

    my $used = main::usage_of($::CAROL, 'tokens');
    my $want = $cut ? 60 + $cut->[4] + $cut->[5] : -1;
    push @bad, "tokens used: $used, not $want" unless $used == $want;

    return (!@bad, join "\n", @bad);
}



=== TEST 12: a ?key= client key is masked in $request, in the access log, also for a request that nginx refuses before any phase runs: an HTTP/2 HEADERS frame that declares a body and ends the stream (nginx's 400 "client prematurely closed stream"), or an HTTP/1.1 "Content-Length: abc" (review11: the key went to the access log in clear); and over h2 for a body over client_max_body_size, with or without Content-Length (README llm_gateway: "a key argument shaped like a gateway key (sk-llm-...) masked in $request (what nginx's error lines quote)")
--- http_config eval: $::Http
--- config
--- log_level: info
--- check eval
sub {
    my @bad;
    my $big = main::chat('hello ' x 40000);
    my $q = "?key=$::CAROL";

    for my $nl (0, 1) {
        my $a = main::h2_exchange("/v1/chat/completions$q", body => $big,
                                  no_length => $nl);
        push @bad, "413, no_length=$nl: $a->{status}"
            unless $a->{status} == 413;
    }

    my $c = main::h2_connect();
    main::h2_send($c, 1, "/v1/chat/completions$q",
                  ['content-length' => 10], undef);
    my $a = main::h2_answer($c, 1);
    main::h2_close($c);
    push @bad, "premature: $a->{status}" unless $a->{status} == 400;

    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1',
                                PeerPort => $ENV{TEST_NGINX_SERVER_PORT})
        or die "connect: $@\n";
    print $s "POST /v1/chat/completions$q HTTP/1.1\r\nHost: localhost\r\n"
             . "Content-Length: abc\r\n\r\n";
    my $h1 = join '', <$s>;
    push @bad, "HTTP/1.1: $h1" unless $h1 =~ m{^HTTP/1.1 400 };
    sleep 0.2;

    my @l = grep { /^POST/ } map { (split /\|/)[2] // $_ }
            grep { /\|/ } split /\n/,
            main::slurp(servroot() . '/logs/access.log');
    push @bad, scalar(@l) . " log lines" unless @l == 4;
    push @bad, "access log: $_" for grep { /sk-llm-/ } @l;

    # nginx's own [info] line about the refused stream is written before
    # any module runs; every other line quotes the masked $request
    my @e = grep { !/\[debug\]/ && /sk-llm-/
                   && !/client prematurely closed stream|invalid "Content-Length"/ }
            split /\n/, main::slurp(servroot() . '/logs/error.log');
    push @bad, "error log: $_" for @e;

    return (!@bad, join "\n", @bad);
}



=== TEST 13: (holds) streams multiplexed on one h2 connection, interleaved: concurrency=2 admits two at once and refuses the others 429 rate_limit_exceeded, each admitted stream is charged its own usage, and the slots are free when they end (SPEC §3 concurrency, §7)
--- http_config eval: main::http_conf('tokens=100000/m concurrency=2')
--- config
--- mock eval
sub {
    my ($req) = @_;
    return mock_openai_stream(delay => 0.2, completion_tokens => $req->{n},
                              text => 'one two three four');
}
--- check eval
sub {
    my @bad;

    my $c = main::h2_connect();
    for my $sid (1, 3, 5, 7) {
        main::h2_send($c, $sid, '/v1/chat/completions',
                      ['x-api-key' => $::CAROL],
                      main::chat("stream $sid", stream => JSON::PP::true));
        sleep 0.05;
    }

    my %a;
    my $open = 4;
    while ($open && (my $f = main::h2_frame($c))) {
        my ($type, $flags, $sid, $p) = @$f;
        next unless $sid;
        if ($type == 1) {
            $a{$sid}{status} = ord $p == 0x88 ? 200 : substr($p, 2, 3);
        } elsif ($type == 0) {
            $a{$sid}{body} .= $p;
        }
        $open-- if ($type == 0 || $type == 1) && ($flags & 1);
        $open-- if $type == 3;
    }
    main::h2_close($c);

    my $st = join ' ', map { $a{$_}{status} // '-' } 1, 3, 5, 7;
    push @bad, "statuses: $st" unless $st eq '200 200 429 429';
    push @bad, "refusal: $a{5}{body}"
        unless ($a{5}{body} // '') =~ /"code":"rate_limit_exceeded"/;
    for my $sid (1, 3) {
        push @bad, "stream $sid: $a{$sid}{body}"
            unless ($a{$sid}{body} // '') =~ /\[DONE\]/;
    }

    my $r = main::h2('/v1/chat/completions', body => main::chat('again'),
                     headers => ["x-api-key: $::CAROL"]);
    push @bad, "after: $r->{status}" unless $r->{status} == 200;

    # completion_tokens is the mock's request number: 1, 2 and 3
    my $used = main::usage_of($::CAROL, 'tokens');
    push @bad, "tokens used: $used, not 36" unless $used == 36;

    return (!@bad, join "\n", @bad);
}



=== TEST 14: (holds) an h2 client that resets its stream while the gateway reads its body (concurrency=1): nothing is charged, nothing reaches the backend, and the next request is admitted
--- http_config eval: main::http_conf('tokens=100000/m concurrency=1')
--- config
--- check eval
sub {
    my @bad;

    my $c = main::h2_connect(tls => 1);
    my $hdr = main::hpack(':method' => 'POST', ':scheme' => 'https',
                          ':authority' => 'localhost',
                          ':path' => '/v1/chat/completions',
                          'x-api-key' => $::CAROL);
    main::h2_write($c, main::frame(1, 4, 1, $hdr)
                       . main::frame(0, 0, 1, '{"model":"gpt-4o","messages":'));
    sleep 0.3;
    main::h2_write($c, main::frame(3, 0, 1, pack('N', 8)));
    sleep 0.3;

    my $r = main::h2('/v1/chat/completions', body => main::chat('hi'),
                     headers => ["x-api-key: $::CAROL"]);
    push @bad, "next: $r->{status}" unless $r->{status} == 200;
    main::h2_close($c);

    my @m = mock_requests();
    push @bad, scalar(@m) . " backend requests" unless @m == 1;

    my $used = main::usage_of($::CAROL, 'tokens');
    push @bad, "tokens used: $used, not 30" unless $used == 30;

    return (!@bad, join "\n", @bad);
}



=== TEST 15: (holds) an h2 client that resets its stream while its admission waits for Redis (frozen by SIGSTOP, timeout=3s, concurrency=1): the request ends at once, and once Redis answers the slot is not held, so the next request is admitted and nothing was charged for the one gone (SPEC §9: no slot leaked)
--- skip_eval: `redis-cli -p $ENV{TEST_NGINX_REDIS_PORT} ping 2>&1` !~ /PONG/
--- http_config eval
main::http_conf('tokens=100000/m concurrency=1',
    "    llm_redis 127.0.0.1:\$TEST_NGINX_REDIS_PORT timeout=3s "
    . "prefix=r11-$$-" . time() . ":;\n")
--- config
--- check eval
sub {
    my @bad;

    # a first request: the worker's Redis connection is up
    my $r = main::h2('/v1/models', headers => ["x-api-key: $::CAROL"]);
    push @bad, "first: $r->{status}" unless $r->{status} == 200;

    my ($pid) = `redis-cli -p $ENV{TEST_NGINX_REDIS_PORT} INFO server`
                =~ /process_id:(\d+)/;
    kill 'STOP', $pid;

    my $t0 = time;
    my $c = main::h2_connect();
    main::h2_send($c, 1, '/v1/chat/completions', ['x-api-key' => $::CAROL],
                  main::chat('hello'));
    sleep 0.3;
    main::h2_write($c, main::frame(3, 0, 1, pack('N', 8)));
    sleep 0.5;
    kill 'CONT', $pid;
    sleep 0.3;
    main::h2_close($c);

    $r = main::h2('/v1/chat/completions', body => main::chat('hi'),
                  headers => ["x-api-key: $::CAROL"]);
    push @bad, "next: $r->{status} $r->{body}" unless $r->{status} == 200;

    my @m = mock_requests();
    push @bad, scalar(@m) . " backend requests, not 2" unless @m == 2;

    my $used = main::usage_of($::CAROL, 'tokens');
    push @bad, "tokens used: $used, not 30" unless $used == 30;

    my @l = grep { $_->[2] =~ /^POST/ } main::log_lines();
    push @bad, "logged: " . join(' | ', map { "@$_" } @l)
        unless @l == 2 && $l[0][1] == 499;

    return (!@bad, join "\n", @bad);
}



=== TEST 16: "error_page 429 = @overflow" (README: "over the limit: a cheaper backend") at a tier counting requests only: a chat request refused 429 reaches the overflow backend with its body, over h2 (with and without Content-Length) as over HTTP/1.1, and the client gets that backend's answer (README error_page: "a named location ... answers instead")
--- http_config eval
($::Tiers . q{
    server {
        listen 127.0.0.1:$TEST_NGINX_H2C_PORT http2;
        location /v1/ {
            llm_gateway on;
            error_page 429 = @overflow;
            proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        }
        location @overflow {
            proxy_set_header X-Overflow yes;
            proxy_read_timeout 3s;
            proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        }
    }
})
--- config
location /v1/ {
    llm_gateway on;
    error_page 429 = @overflow;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location @overflow {
    proxy_set_header X-Overflow yes;
    proxy_read_timeout 3s;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
--- timeout: 10
--- check eval
sub {
    my @bad;
    my $body = main::chat('hello');

    for my $i (1 .. 3) {
        my $r = http_request('GET /v1/models',
                             more_headers => "x-api-key: $::ALICE");
        push @bad, "GET $i: $r->{status}" unless $r->{status} == 200;
    }

    my $r = http_request('POST /v1/chat/completions', body => $body,
                         more_headers => "x-api-key: $::ALICE\n"
                                         . "Content-Type: application/json");
    push @bad, "HTTP/1.1: $r->{status} $r->{body}"
        unless $r->{status} == 200 && $r->{body} =~ /"total_tokens":30/;

    for my $nl (0, 1) {
        my $a = main::h2_exchange('/v1/chat/completions', body => $body,
                                  no_length => $nl, piece => 20,
                                  pause => 0.05,
                                  headers => ['x-api-key' => $::ALICE]);
        push @bad, "h2, no_length=$nl: $a->{status} $a->{body}"
            unless $a->{status} == 200 && $a->{body} =~ /"total_tokens":30/;
    }

    my @o = grep { ($_->{headers}{'x-overflow'} // '') eq 'yes' }
            mock_requests();
    push @bad, scalar(@o) . " overflow requests, not 3" unless @o == 3;
    for my $m (@o) {
        push @bad, "overflow body: '$m->{body}'" unless $m->{body} eq $body;
        push @bad, "client key forwarded" if $m->{head} =~ /sk-llm-/;
    }

    return (!@bad, join "\n", @bad);
}



=== TEST 17: (holds) llm_pool without keys balancing two servers, one refusing connections, behind h2 clients: every chat request (spooled, without Content-Length) fails over to the live server with its whole body and is charged its usage (SPEC §3: "5xx and timeouts count as failures of the server")
--- http_config eval
main::http_conf('tokens=100000/m', q{
    upstream fleet {
        server 127.0.0.1:$TEST_NGINX_DEAD_PORT;
        server 127.0.0.1:$TEST_NGINX_MOCK_PORT;
        llm_pool;
    }
}) =~ s{proxy_pass http://127.0.0.1:\$TEST_NGINX_MOCK_PORT;(?=\s*\}\s*location /v1beta)}{proxy_next_upstream error timeout non_idempotent;
            proxy_pass http://fleet;}gr
--- config
--- check eval
sub {
    my @bad;
    my $body = main::chat('hello ' x 3000);

    for my $i (1 .. 4) {
        my $r = main::h2('/v1/chat/completions', body => $body,
                         no_length => 1, tls => $i % 2,
                         headers => ["x-api-key: $::CAROL"]);
        push @bad, "request $i: $r->{status} $r->{body}"
            unless $r->{status} == 200;
    }

    my @m = mock_requests();
    push @bad, scalar(@m) . " backend requests" unless @m == 4;
    push @bad, "a body cut" if grep { $_->{body} ne $body } @m;

    my $used = main::usage_of($::CAROL, 'tokens');
    push @bad, "tokens used: $used, not 120" unless $used == 120;

    return (!@bad, join "\n", @bad);
}
--- error_log
connect() failed (111: Connection refused)



=== TEST 18: (holds) an h2 client whose connection drops mid-answer (TCP closed, no RST_STREAM), two streams open on it: each is charged its prompt estimate plus the text that went out, estimated, and the concurrency slots are free at once (README: a stream the client cut; SPEC §9)
--- http_config eval: main::http_conf('tokens=100000/m concurrency=2')
--- config
--- mock eval
sub {
    my ($req) = @_;
    return mock_openai_stream(delay => 0.3,
        text => 'one two three four five six seven eight nine ten')
        if $req->{json}{stream};
    return mock_openai();
}
--- check eval
sub {
    my @bad;

    my $c = main::h2_connect(tls => 1);
    for my $sid (1, 3) {
        main::h2_send($c, $sid, '/v1/chat/completions',
                      ['authorization' => "Bearer $::CAROL"],
                      main::chat("hello $sid", stream => JSON::PP::true));
    }
    my %got;
    while (my $f = main::h2_frame($c)) {
        $got{$f->[2]} .= $f->[3] if $f->[0] == 0;
        last if ($got{1} // '') =~ /"content":"two /
                && ($got{3} // '') =~ /"content":"two /;
    }
    main::h2_close($c);
    sleep 0.3;

    for my $i (1, 2) {
        my $r = main::h2('/v1/chat/completions', body => main::chat('hi'),
                         headers => ["x-api-key: $::CAROL"]);
        push @bad, "after $i: $r->{status}" unless $r->{status} == 200;
    }

    my @cut = grep { $_->[2] =~ /^POST/ && $_->[6] eq '1' } main::log_lines();
    push @bad, "cut streams logged: " . join(' | ', map { "@$_" } @cut)
        unless @cut == 2
               && !grep { !($_->[4] > 0 && $_->[5] >= 2 && $_->[5] < 20) }
                  @cut;

    my $used = main::usage_of($::CAROL, 'tokens');
    my $want = 60;
    $want += $_->[4] + $_->[5] for @cut;
    push @bad, "tokens used: $used, not $want" unless $used == $want;

    return (!@bad, join "\n", @bad);
}



=== TEST 19: (holds) Gemini over h2 with the client key in ?key= and the pool's key as a query argument (llm_pool_auth query=key): the backend gets the provider's key and not the client's, usage is read from the SSE answer, and neither key shows in the logs -- the error lines quoting the upstream URI included (SPEC §3: "never into what nginx logs as the upstream URI") -- or in the answer
--- http_config eval
main::http_conf('tokens=100000/m', q{
    upstream gemini {
        server 127.0.0.1:$TEST_NGINX_MOCK_PORT;
        llm_pool;
        llm_pool_auth query=key;
        llm_pool_key g secret=AIzaSECRETgemini444;
        llm_pool_key h secret=AIzaSECREThhh555;
    }
}) =~ s{proxy_pass http://127.0.0.1:\$TEST_NGINX_MOCK_PORT;(?=\s*\}\s*location = /usage)}{proxy_next_upstream error timeout http_429 non_idempotent;
            proxy_pass http://gemini;}gr
--- config
--- mock eval
sub {
    my ($req) = @_;
    return { status => 429, body => '{"error":{"code":429}}' }
        if $req->{args} =~ /SECRETgemini/;
    return LLMMock::default_handler($req);
}
--- check eval
sub {
    my @bad;
    my $body = '{"contents":[{"role":"user","parts":[{"text":"hello"}]}]}';
    my $path = '/v1beta/models/gemini-pro:streamGenerateContent';

    my @r = (main::h2("$path?alt=sse&key=$::CAROL", body => $body),
             main::h2("$path?key=$::CAROL&alt=sse", body => $body, tls => 1,
                      no_length => 1));
    for my $r (@r) {
        push @bad, "answer: $r->{status} $r->{body}"
            unless $r->{status} == 200 && $r->{body} =~ /usageMetadata/
                   && $r->{headers}{'x-llm-provider-key'} eq 'h';
    }

    my @m = mock_requests();
    my @args = map { $_->{args} } @m;
    push @bad, "backend args: @args" unless "@args" eq
        'alt=sse&key=AIzaSECRETgemini444 alt=sse&key=AIzaSECREThhh555 '
        . 'alt=sse&key=AIzaSECREThhh555';
    push @bad, "client key upstream" if grep { /sk-llm-/ } map { $_->{head} } @m;

    my @l = grep { $_->[2] =~ /^POST/ } main::log_lines();
    push @bad, "logged: " . join(' | ', map { "@$_" } @l)
        unless @l == 2 && !grep { $_->[4] != 10 || $_->[5] != 20 } @l;

    my $logs = main::slurp(servroot() . '/logs/access.log')
        . join "\n", grep { !/\[debug\]/ }
          split /\n/, main::slurp(servroot() . '/logs/error.log');
    push @bad, "logs: $1" if $logs =~ /(.{0,80}(?:SECRET|sk-llm-).{0,20})/;
    push @bad, "no upstream URI quoted" unless $logs =~ /upstream: "http/;
    for my $r (@r) {
        push @bad, "a secret went out" if "$r->{head}$r->{body}" =~ /SECRET/;
    }

    return (!@bad, join "\n", @bad);
}
