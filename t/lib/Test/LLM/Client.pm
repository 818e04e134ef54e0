package Test::LLM::Client;

# The test harness's HTTP/1.x client. It sends exact bytes (optionally in
# pieces with pauses between them), reads until the server closes the
# connection -- or, when the server keeps it alive, until the response is
# complete -- and parses the status line, the headers (all of them, in order)
# and the body (Content-Length, chunked, or up to the close). Any number of
# exchanges run at once over non-blocking sockets, so a concurrency limit in
# nginx really sees concurrent requests.
#
# Reading up to the close matters: nginx closes a "Connection: close"
# connection only after the request's log phase, so once a response is read
# everything nginx logs for that request is in the error log.
#
# A response is a hash:
#   status, reason, proto    from the status line (status undef: none came)
#   headers                  [[Name, value], ...] as received
#   header                   { lowercase name => values joined by ", " }
#   body                     decoded body
#   raw                      every byte received
#   complete                 the body is as long as its framing says
#   error                    undef, or why the exchange failed (timeout,
#                            no response, truncated body, connect error)
#   started, elapsed         epoch time of the connect; seconds from it to
#                            the end

use strict;
use warnings;

use Errno qw(EAGAIN EINPROGRESS EINTR EWOULDBLOCK);
use Exporter 'import';
use Fcntl qw(F_GETFL F_SETFL O_NONBLOCK);
use Socket qw(AF_INET IPPROTO_TCP SOCK_STREAM SOL_SOCKET SO_ERROR
              inet_aton pack_sockaddr_in);
use Time::HiRes qw(time);

our @EXPORT_OK = qw(build_request exchange exchange_all parse_response
                    header burst status_counts);


# build_request("METHOD URI [PROTO]\nbody...", %opt) -> { method, bytes }
#
#   more_headers  "Name: value" lines added after the request line
#   body          the body (overrides body lines in the text)
#   chomp_body    drop one trailing newline of the body (for bodies written
#                 as plain block text)
#
# Host: localhost and Connection: close are added unless more_headers has
# them; Content-Length is added for a body (and for POST/PUT/PATCH) unless
# more_headers has Content-Length or Transfer-Encoding.
sub build_request {
    my ($text, %o) = @_;

    $text =~ s/\A\s+//;

    my ($line, $body) = split /\r?\n/, $text, 2;

    my ($method, $uri, $proto) = split ' ', $line // '';
    die "bad request line \"" . ($line // '') . "\"\n" unless defined $uri;

    $proto //= 'HTTP/1.1';
    $body = $o{body} if defined $o{body};
    $body = undef if defined $body && !length $body;
    $body =~ s/\n\z// if defined $body && $o{chomp_body};

    my @headers;

    for my $l (split /\r?\n/, $o{more_headers} // '') {
        next unless $l =~ /\S/;
        my ($name, $value) = $l =~ /\A\s*([^:\s]+)\s*:\s?(.*?)\s*\z/
            or die "bad header line \"$l\"\n";
        push @headers, [$name, $value];
    }

    my %have = map { lc($_->[0]) => 1 } @headers;

    unshift @headers, ['Host', 'localhost'] unless $have{host};
    push @headers, ['Connection', 'close'] unless $have{connection};

    if ((defined $body || $method =~ /\A(?:POST|PUT|PATCH)\z/)
        && !$have{'content-length'} && !$have{'transfer-encoding'})
    {
        push @headers, ['Content-Length', length($body // '')];
    }

    my $bytes = "$method $uri $proto\r\n"
                . join('', map { "$_->[0]: $_->[1]\r\n" } @headers)
                . "\r\n" . ($body // '');

    return { method => $method, bytes => $bytes };
}


# exchange_all(port => P, exchanges => [...], concurrency => N, host => H)
#
# Each exchange is a hash:
#   bytes or pieces   what to send; pieces is a list of strings and
#                     { delay => seconds } pauses
#   method            the request's method (HEAD responses have no body)
#   timeout           seconds for the whole exchange (default 5)
#   port              this exchange's port instead of P
#   abort             a timeout is expected: close then and do not report an
#                     error (the client "disconnects")
#
# Runs up to N exchanges at once (default 1), each on its own connection,
# and returns the responses in the order of the exchanges.
sub exchange_all {
    my (%a) = @_;

    my $host  = $a{host} // '127.0.0.1';
    my $limit = $a{concurrency} || 1;
    my @todo  = @{ $a{exchanges} };
    my (@res, %active);

    local $SIG{PIPE} = 'IGNORE';

    my $next = 0;

    while ($next < @todo || %active) {
        while ($next < @todo && keys %active < $limit) {
            my $c = _start($host, $todo[$next]{port} // $a{port},
                           $todo[$next], $next);
            $next++;

            if ($c->{done}) {
                $res[$c->{idx}] = $c->{res};
            } else {
                $active{ fileno $c->{sock} } = $c;
            }
        }

        last unless %active;

        my ($rin, $win) = ('', '');
        my $now  = time;
        my $wake = $now + 1;

        for my $c (values %active) {
            my $fd = fileno $c->{sock};

            if ($c->{state} eq 'connecting') {
                vec($win, $fd, 1) = 1;

            } else {
                vec($rin, $fd, 1) = 1;

                if ($c->{state} eq 'writing') {
                    if ($c->{write_at} <= $now) {
                        vec($win, $fd, 1) = 1;
                    } elsif ($c->{write_at} < $wake) {
                        $wake = $c->{write_at};
                    }
                }
            }

            $wake = $c->{deadline} if $c->{deadline} < $wake;
        }

        my $wait = $wake - $now;
        $wait = 0 if $wait < 0;

        my ($rout, $wout) = ($rin, $win);
        my $n = select($rout, $wout, undef, $wait);

        if ($n < 0) {
            next if $! == EINTR;
            die "select() failed: $!\n";
        }

        $now = time;

        for my $fd (keys %active) {
            my $c = $active{$fd};

            if ($n > 0 && vec($wout, $fd, 1)) {
                $c->{state} eq 'connecting' ? _connected($c) : _write($c);
            }

            if (!$c->{done} && $n > 0 && vec($rout, $fd, 1)) {
                _read($c);
            }

            if (!$c->{done} && $c->{state} eq 'writing'
                && $c->{write_at} <= time)
            {
                _write($c);
            }

            _finish($c, 'timeout') if !$c->{done} && time >= $c->{deadline};

            if ($c->{done}) {
                delete $active{$fd};
                $res[$c->{idx}] = $c->{res};
            }
        }
    }

    return @res;
}


# exchange(port => P, %exchange): one exchange, returns its response.
sub exchange {
    my (%a) = @_;

    my $port = delete $a{port};
    my $host = delete $a{host};

    my ($res) = exchange_all(port => $port, host => $host,
                             exchanges => [\%a]);
    return $res;
}


# header($res, $name): the values of a header (case-insensitive name); in
# scalar context the values joined with ", ", undef when absent.
sub header {
    my ($res, $name) = @_;

    my @v = map { $_->[1] } grep { lc $_->[0] eq lc $name }
            @{ $res->{headers} || [] };

    return @v if wantarray;
    return @v ? join(', ', @v) : undef;
}


sub _start {
    my ($host, $port, $ex, $idx) = @_;

    my $c = {
        idx      => $idx,
        ex       => $ex,
        raw      => '',
        pieces   => [ $ex->{pieces} ? @{ $ex->{pieces} } : ($ex->{bytes}) ],
        write_at => 0,
        started  => time,
        state    => 'connecting',
    };

    $c->{deadline} = $c->{started} + ($ex->{timeout} || 5);

    my $s;

    if (!socket($s, AF_INET, SOCK_STREAM, IPPROTO_TCP)) {
        _fail($c, "socket() failed: $!");
        return $c;
    }

    $c->{sock} = $s;

    my $flags = fcntl($s, F_GETFL, 0);
    fcntl($s, F_SETFL, $flags | O_NONBLOCK);

    my $addr = pack_sockaddr_in($port, inet_aton($host));

    if (connect($s, $addr)) {
        $c->{state} = 'writing';

    } elsif ($! != EINPROGRESS) {
        _fail($c, "connect() to $host:$port failed: $!");
    }

    return $c;
}


sub _connected {
    my ($c) = @_;

    my $err = unpack('i', getsockopt($c->{sock}, SOL_SOCKET, SO_ERROR));

    if ($err) {
        local $! = $err;
        _fail($c, "connect() failed: $!");
        return;
    }

    $c->{state} = 'writing';
    _write($c);
}


sub _write {
    my ($c) = @_;

    my $pieces = $c->{pieces};

    while (@$pieces) {
        my $p = $pieces->[0];

        if (ref $p) {
            shift @$pieces;
            $c->{write_at} = time + ($p->{delay} || 0);
            return if $c->{write_at} > time;
            next;
        }

        if (!defined $p || !length $p) {
            shift @$pieces;
            next;
        }

        my $n = syswrite($c->{sock}, $p);

        if (!defined $n) {
            return if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;

            # the server may have answered and closed early (413, 400)
            $c->{write_error} = "write() failed: $!";
            @$pieces = ();
            last;
        }

        if ($n < length $p) {
            $pieces->[0] = substr($p, $n);
            return;
        }

        shift @$pieces;
    }

    $c->{state} = 'reading';
}


sub _read {
    my ($c) = @_;

    my $n = sysread($c->{sock}, $c->{raw}, 65536, length $c->{raw});

    if (!defined $n) {
        return if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
        _finish($c, "connection error: $!");
        return;
    }

    if ($n == 0) {
        _finish($c, 'eof');
        return;
    }

    # a kept-alive connection is not closed: stop at the end of the response
    if (!defined $c->{keepalive} && $c->{raw} =~ /\r?\n\r?\n/) {
        my $res = parse_response($c->{raw}, $c->{ex}{method});
        $c->{keepalive} = $res->{keepalive} if defined $res->{status};
    }

    if ($c->{keepalive}) {
        my $res = parse_response($c->{raw}, $c->{ex}{method});
        _finish($c, 'complete') if $res->{complete};
    }
}


sub _fail {
    my ($c, $error) = @_;

    _finish($c, 'error');
    $c->{res}{error} = $error;
}


sub _finish {
    my ($c, $why) = @_;

    close $c->{sock} if $c->{sock};

    my $ex  = $c->{ex};
    my $res = parse_response($c->{raw}, $ex->{method},
                             $why eq 'eof' || $why eq 'complete');

    $res->{started} = $c->{started};
    $res->{elapsed} = time - $c->{started};

    if ($ex->{abort} && $why eq 'timeout') {
        # expected: the client gave up
        $res->{aborted} = 1;

    } elsif (!defined $res->{status}) {
        $res->{error} //= $why eq 'timeout'
            ? "timeout: no response within " . ($ex->{timeout} || 5) . "s"
            : "no response ($why" . ($c->{write_error}
                                     ? ", $c->{write_error}" : '') . ")";

    } elsif (!$res->{complete}) {
        $res->{error} //= "incomplete response body ($why)";
    }

    $c->{res}  = $res;
    $c->{done} = 1;
}


# parse_response($raw, $method, $closed): parses what was received; $closed
# says the connection ended, which completes a body delimited by the close.
sub parse_response {
    my ($raw, $method, $closed) = @_;

    my $res  = { raw => $raw, headers => [], header => {}, body => '',
                 complete => 0 };
    my $rest = $raw;

    for (;;) {
        $rest =~ /\r?\n\r?\n/ or return $res;

        my $head = substr($rest, 0, $-[0]);
        $rest = substr($rest, $+[0]);

        my ($line, @lines) = split /\r?\n/, $head;

        my ($proto, $status, $reason) =
            ($line // '') =~ m{\A(HTTP/\d\.\d) +(\d{3})(?: +(.*))?\z};

        if (!defined $status) {
            $res->{error} = "bad status line \"" . ($line // '') . "\"";
            return $res;
        }

        # interim responses (100 Continue) precede the real one
        next if $status =~ /\A1/ && $status != 101;

        @$res{qw(proto status reason)} = ($proto, $status, $reason // '');

        for my $l (@lines) {
            my ($name, $value) = $l =~ /\A([^:]+):[ \t]*(.*?)[ \t]*\z/
                or next;
            push @{ $res->{headers} }, [$name, $value];
        }

        last;
    }

    # lowercase name -> values joined with ", " (for quick looks in checks)
    for my $h (@{ $res->{headers} }) {
        my $k = lc $h->[0];
        $res->{header}{$k} = exists $res->{header}{$k}
                             ? "$res->{header}{$k}, $h->[1]" : $h->[1];
    }

    my $conn = lc(header($res, 'Connection') // '');

    $res->{keepalive} = $conn =~ /close/ ? 0
                      : $conn =~ /keep-alive/ ? 1
                      : $res->{proto} eq 'HTTP/1.1' ? 1 : 0;

    my $te = header($res, 'Transfer-Encoding') // '';
    my $cl = header($res, 'Content-Length');

    if (($method // '') eq 'HEAD' || $res->{status} =~ /\A(?:1..|204|304)\z/)
    {
        $res->{complete} = 1;

    } elsif ($te =~ /chunked/i) {
        @$res{qw(body complete)} = _dechunk($rest);

    } elsif (defined $cl && $cl =~ /\A\d+\z/) {
        $res->{body}     = substr($rest, 0, $cl);
        $res->{complete} = length $rest >= $cl ? 1 : 0;

    } else {
        $res->{body}     = $rest;
        $res->{complete} = $closed ? 1 : 0;
    }

    return $res;
}


sub _dechunk {
    my ($data) = @_;

    my $body = '';

    while ($data =~ s/\A([0-9a-fA-F]+)[^\r\n]*\r?\n//) {
        my $size = hex $1;

        if ($size == 0) {
            # trailer, then the blank line
            return ($body, $data =~ /\A(?:[^\r\n]+\r?\n)*\r?\n/ ? 1 : 0);
        }

        if (length $data < $size) {
            $body .= $data;
            return ($body, 0);
        }

        $body .= substr($data, 0, $size, '');
        $data =~ s/\A\r?\n//;
    }

    return ($body, 0);
}


# status_counts(@responses) -> "200=20 429=280": how many of each status,
# sorted ("error" for an exchange that got no status)
sub status_counts {
    my %n;
    $n{ $_->{status} // 'error' }++ for @_;
    return join ' ', map { "$_=$n{$_}" } sort keys %n;
}


# burst($port, $uri, \@addrs, $timeout) -> how many answered 200: one
# pipelined GET per address on one connection, each with its address in
# X-Forwarded-For (for a server that trusts it with realip)
sub burst {
    my ($port, $uri, $addrs, $timeout) = @_;

    require IO::Socket::INET;

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Timeout => $timeout // 10)
        or die "connect: $!";
    print $s join '', map { "GET $uri HTTP/1.1\r\nHost: t\r\n"
                            . "X-Forwarded-For: $_\r\n\r\n" } @$addrs;

    my ($in, $n) = ('', 0);
    while ($n < @$addrs) {
        my $r = sysread($s, $in, 65536, length $in);
        last unless $r;
        $n = () = $in =~ /HTTP\/1\.1 200/g;
    }

    close $s;
    return $n;
}


1;
