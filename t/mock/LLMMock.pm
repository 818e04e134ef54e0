package LLMMock;

# A scriptable HTTP/1.1 backend for the ngx_llm_gateway tests.
#
# serve() runs an accept loop on one or more listening sockets and forks one
# child per connection (so slow or streaming answers never block the others).
# Each request is parsed (Content-Length and chunked bodies, keep-alive),
# recorded under the log directory, and handed to a handler code ref whose
# return value describes the answer:
#
#   { status => 200, headers => { Name => 'value' | [values] } | [[N, v], ...],
#     body => 'bytes',                       # sent with Content-Length
#     chunks => [ 'bytes', { delay => 0.2 }, 'bytes', { close => 1 } ],
#                                            # one chunk each, flushed;
#                                            # { close => 1 } aborts the stream
#     raw => [ 'bytes', { delay => 0.1 }, 'bytes' ],  # exact bytes, then close
#     delay => 0.5,                          # before answering
#     close => 1,                            # drop the connection, no answer
#     keepalive => 0 }                       # close after this answer
#
# A plain string returned by the handler is a 200 body. A handler that dies
# gets a 500 and a "mock handler died" line on stderr.
#
# The handler receives
#
#   { method, uri, path, args, proto, headers => { lowercase name => value },
#     header_list => [[Name, value], ...], body, json (decoded body or undef),
#     n (request number since the log directory was reset, from 1),
#     port, conn (connection number), conn_req (request number on it) }
#
# Files in the log directory: mock.log (human-readable: head as received with
# CRLF turned into LF, then the decoded body), mock.jsonl (one JSON record per
# request: the handler's fields minus json, plus "head", the raw head),
# mock.counter (last n).
#
# The response helpers (openai_chat, openai_stream, anthropic_message,
# anthropic_stream, gemini_content, gemini_stream, openai_embeddings) build
# answers in the providers' real wire formats; default_handler picks one from
# the request path and its "stream" flag.

use strict;
use warnings;

use Exporter 'import';
use Fcntl qw(:flock O_RDWR O_CREAT);
use IO::Select;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(time sleep);

our @EXPORT_OK = qw(
    serve default_handler read_requests
    openai_chat openai_stream openai_embeddings
    anthropic_message anthropic_stream
    gemini_content gemini_stream
);

# latin1: byte strings pass through unchanged (UTF-8 in a test file stays
# UTF-8 on the wire), wide characters become \u escapes.
my $JSON = JSON::PP->new->latin1->canonical;

my $IDLE_TIMEOUT = 60;          # seconds a kept-alive connection may idle
my $MAX_HEAD     = 1024 * 1024;

my %REASON = (
    100 => 'Continue', 200 => 'OK', 201 => 'Created', 204 => 'No Content',
    301 => 'Moved Permanently', 302 => 'Found', 304 => 'Not Modified',
    400 => 'Bad Request', 401 => 'Unauthorized', 402 => 'Payment Required',
    403 => 'Forbidden', 404 => 'Not Found', 405 => 'Method Not Allowed',
    408 => 'Request Timeout', 409 => 'Conflict', 413 => 'Payload Too Large',
    429 => 'Too Many Requests', 500 => 'Internal Server Error',
    502 => 'Bad Gateway', 503 => 'Service Unavailable',
    504 => 'Gateway Timeout', 529 => 'Overloaded',
);


# --- server ---------------------------------------------------------------

# serve(listeners => [sockets], logdir => DIR, handler => CODE): never
# returns. SIGTERM stops the accept loop and every connection child.
sub serve {
    my (%a) = @_;

    my $handler   = $a{handler} || \&default_handler;
    my $logdir    = $a{logdir} or die "serve: logdir missing\n";
    my @listeners = @{ $a{listeners} || [] } or die "serve: no listeners\n";

    # own process group, so that SIGTERM reaches the connection children
    setpgrp(0, 0);

    $SIG{PIPE} = 'IGNORE';
    $SIG{CHLD} = 'IGNORE';            # children are reaped by the kernel
    $SIG{TERM} = sub {
        $SIG{TERM} = 'IGNORE';
        kill 'TERM', -$$;
        1 while waitpid(-1, 0) > 0;
        POSIX::_exit(0);
    };

    my $select = IO::Select->new(@listeners);
    my $conn   = 0;

    for (;;) {
        for my $ls ($select->can_read) {
            my $c = $ls->accept or next;

            my $port = 0 + $ls->sockport;

            $conn++;

            my $pid = fork;

            if (!defined $pid) {
                warn "mock: fork() failed: $!\n";
                close $c;
                next;
            }

            if ($pid == 0) {
                $SIG{TERM} = 'DEFAULT';
                $SIG{CHLD} = 'DEFAULT';
                close $_ for @listeners;

                eval {
                    _serve_connection($c, $port, $conn, $handler, $logdir);
                    1;
                } or warn "mock: $@";

                POSIX::_exit(0);
            }

            close $c;
        }
    }
}


sub _serve_connection {
    my ($c, $port, $conn, $handler, $logdir) = @_;

    binmode $c;

    my $buf  = '';
    my $nreq = 0;

    for (;;) {
        my $head = _read_head($c, \$buf);
        return unless defined $head;

        my $req = _parse_head($head);

        if (!$req) {
            _write_all($c, _head(400, [['Connection', 'close'],
                                       ['Content-Length', 0]], 1));
            return;
        }

        if (lc($req->{headers}{expect} // '') eq '100-continue') {
            _write_all($c, "HTTP/1.1 100 Continue\r\n\r\n");
        }

        my $body = _read_body($c, \$buf, $req);
        return unless defined $body;

        $req->{body}     = $body;
        $req->{port}     = $port;
        $req->{conn}     = $conn;
        $req->{conn_req} = ++$nreq;
        $req->{json}     = eval { $JSON->decode($body) } if length $body;

        _record($logdir, $req, $head);

        my $res = eval { $handler->($req) };

        if (my $err = $@) {
            warn "mock handler died: $err";
            $res = { status => 500, headers => { 'Content-Type' =>
                     'text/plain' }, body => "mock handler died: $err" };
        }

        $res = { body => $res } unless ref $res;

        return unless _send_response($c, $req, $res);
    }
}


# Reads until the end of a request head; returns it without the blank line,
# or undef on EOF, error or idle timeout.
sub _read_head {
    my ($c, $buf) = @_;

    for (;;) {
        if ($$buf =~ s/\A(.*?)\r?\n\r?\n//s) {
            return $1;
        }

        return undef if length $$buf > $MAX_HEAD;
        return undef unless _fill($c, $buf);
    }
}


sub _fill {
    my ($c, $buf) = @_;

    my $sel = IO::Select->new($c);

    return 0 unless $sel->can_read($IDLE_TIMEOUT);

    my $n = sysread($c, $$buf, 65536, length $$buf);

    return $n ? 1 : 0;
}


sub _parse_head {
    my ($head) = @_;

    $head =~ s/\A(?:\r?\n)+//;

    my ($line, @lines) = split /\r?\n/, $head;

    my ($method, $uri, $proto) = split / +/, $line // '';
    return undef unless defined $uri;

    $proto //= 'HTTP/0.9';

    my (%h, @list);

    for my $l (@lines) {
        my ($name, $value) = $l =~ /\A([^:]+):[ \t]*(.*?)[ \t]*\z/ or next;
        push @list, [$name, $value];
        my $k = lc $name;
        $h{$k} = exists $h{$k} ? "$h{$k}, $value" : $value;
    }

    my ($path, $args) = split /\?/, $uri, 2;

    return {
        method => $method, uri => $uri, path => $path, args => $args // '',
        proto => $proto, headers => \%h, header_list => \@list,
    };
}


sub _read_body {
    my ($c, $buf, $req) = @_;

    my $h = $req->{headers};

    if (($h->{'transfer-encoding'} // '') =~ /chunked/i) {
        my $body = '';

        for (;;) {
            my ($line, $hex);

            # the size line: hex digits, maybe extensions, then CRLF
            until (($line, $hex) = $$buf =~ /\A(([0-9a-fA-F]+)[^\r\n]*\r?\n)/)
            {
                return undef unless _fill($c, $buf);
            }

            my $size = hex $hex;
            my $skip = length $line;

            if ($size == 0) {
                substr($$buf, 0, $skip, '');

                # trailer fields up to the blank line
                for (;;) {
                    if ($$buf =~ s/\A\r?\n//) {
                        return $body;
                    }
                    if ($$buf =~ s/\A[^\r\n]+\r?\n//) {
                        next;
                    }
                    return undef unless _fill($c, $buf);
                }
            }

            while (length $$buf < $skip + $size + 2) {
                return undef unless _fill($c, $buf);
            }

            $body .= substr($$buf, $skip, $size);
            substr($$buf, 0, $skip + $size, '');
            $$buf =~ s/\A\r?\n//;
        }
    }

    my $len = $h->{'content-length'};

    return '' unless defined $len && $len =~ /\A\d+\z/ && $len > 0;

    while (length $$buf < $len) {
        return undef unless _fill($c, $buf);
    }

    return substr($$buf, 0, $len, '');
}


# Appends the request to mock.log and mock.jsonl and numbers it, under a
# lock on mock.counter so that n and the log order agree.
sub _record {
    my ($logdir, $req, $head) = @_;

    sysopen(my $lock, "$logdir/mock.counter", O_RDWR | O_CREAT)
        or die "open $logdir/mock.counter: $!\n";
    flock($lock, LOCK_EX) or die "flock: $!\n";

    sysread($lock, my $n, 64);
    $n = ($n || 0) + 1;
    seek($lock, 0, 0);
    truncate($lock, 0);
    syswrite($lock, "$n\n");

    $req->{n} = $n;

    (my $text = $head) =~ s/\r\n/\n/g;

    _append("$logdir/mock.log",
            "### mock request $n (port $req->{port}, connection "
            . "$req->{conn}, request $req->{conn_req} on it)\n"
            . "$text\n\n$req->{body}\n");

    my %rec = map { $_ => $req->{$_} } grep { $_ ne 'json' } keys %$req;
    $rec{head} = $head;
    $rec{time} = time;

    _append("$logdir/mock.jsonl", $JSON->encode(\%rec) . "\n");

    close $lock;
}


sub _append {
    my ($file, $data) = @_;

    open(my $fh, '>>', $file) or die "open $file: $!\n";
    binmode $fh;
    print $fh $data;
    close $fh or die "write $file: $!\n";
}


# read_requests(DIR): the records of mock.jsonl, oldest first, each with
# "json" (the decoded body, or undef) added back.
sub read_requests {
    my ($logdir) = @_;

    open(my $fh, '<', "$logdir/mock.jsonl") or return ();
    binmode $fh;

    my @r = map { $JSON->decode($_) } grep { /\S/ } <$fh>;

    $_->{json} = eval { $JSON->decode($_->{body}) } for @r;

    return @r;
}


# --- answers -----------------------------------------------------------

# Returns true when the connection may serve another request.
sub _send_response {
    my ($c, $req, $res) = @_;

    sleep $res->{delay} if $res->{delay};

    return 0 if $res->{close};

    if ($res->{raw}) {
        _write_items($c, $res->{raw}, 0);
        return 0;
    }

    my $h = $req->{headers};

    my $keep = $req->{proto} eq 'HTTP/1.1'
               ? lc($h->{connection} // '') !~ /close/
               : lc($h->{connection} // '') =~ /keep-alive/;

    $keep = 0 if defined $res->{keepalive} && !$res->{keepalive};

    my $status  = $res->{status} // 200;
    my $headers = _header_list($res->{headers});
    my %have    = map { lc($_->[0]) => 1 } @$headers;

    if ($res->{chunks}) {
        # HTTP/1.0 has no chunked coding: there the stream ends with a close
        my $chunked = $res->{chunked} // ($req->{proto} eq 'HTTP/1.1');

        $keep = 0 unless $chunked;

        push @$headers, ['Content-Type', 'text/event-stream']
            unless $have{'content-type'};
        push @$headers, ['Transfer-Encoding', 'chunked']
            if $chunked && !$have{'transfer-encoding'};

        _connection_header($headers, \%have, $keep, $req);

        return 0 unless _write_all($c, _head($status, $headers));
        return 0 unless _write_items($c, $res->{chunks}, $chunked);
        return 0 if $chunked && !_write_all($c, "0\r\n\r\n");

        return $keep;
    }

    my $body = $res->{body} // '';

    push @$headers, ['Content-Type', 'application/json']
        unless $have{'content-type'} || !length $body;
    push @$headers, ['Content-Length', length $body]
        unless $have{'content-length'} || $have{'transfer-encoding'};

    _connection_header($headers, \%have, $keep, $req);

    $body = '' if $req->{method} eq 'HEAD';

    return _write_all($c, _head($status, $headers) . $body) && $keep;
}


sub _connection_header {
    my ($headers, $have, $keep, $req) = @_;

    return if $have->{connection};

    if (!$keep) {
        push @$headers, ['Connection', 'close'];

    } elsif ($req->{proto} ne 'HTTP/1.1') {
        push @$headers, ['Connection', 'keep-alive'];
    }
}


# Writes strings (chunk-framed when $chunked) and honours { delay => s }
# and { close => 1 } items. Returns false when the stream was cut.
sub _write_items {
    my ($c, $items, $chunked) = @_;

    for my $it (@$items) {
        if (ref $it eq 'HASH') {
            sleep $it->{delay} if $it->{delay};
            return 0 if $it->{close};
            next;
        }

        next if $chunked && !length $it;

        my $data = $chunked ? sprintf("%x\r\n%s\r\n", length $it, $it) : $it;

        return 0 unless _write_all($c, $data);
    }

    return 1;
}


sub _head {
    my ($status, $headers) = @_;

    my $reason = $REASON{$status} // 'Unknown';
    my $head   = "HTTP/1.1 $status $reason\r\nServer: llm-mock\r\n";

    $head .= "$_->[0]: $_->[1]\r\n" for @$headers;

    return "$head\r\n";
}


sub _header_list {
    my ($h) = @_;

    return [] unless $h;
    return [ map { [@$_] } @$h ] if ref $h eq 'ARRAY';

    my @list;

    for my $name (sort keys %$h) {
        my $v = $h->{$name};
        push @list, map { [$name, $_] } ref $v eq 'ARRAY' ? @$v : ($v);
    }

    return \@list;
}


sub _write_all {
    my ($c, $data) = @_;

    while (length $data) {
        my $n = syswrite($c, $data);
        return 0 unless $n;
        substr($data, 0, $n, '');
    }

    return 1;
}


# --- provider formats --------------------------------------------------
#
# Common options: text, model, prompt_tokens (10), completion_tokens (20),
# usage (1; 0 leaves usage out), status (200), headers (extra), delay
# (seconds between stream events), id.

sub _opts {
    my (%o) = @_;

    $o{text}              //= 'Hello from the mock.';
    $o{model}             //= 'mock-model';
    $o{prompt_tokens}     //= 10;
    $o{completion_tokens} //= 20;
    $o{usage}             //= 1;
    $o{status}            //= 200;
    $o{id}                //= 'mock-0001';

    return %o;
}


sub _json_res {
    my ($o, $data) = @_;

    return { status => $o->{status}, headers => $o->{headers},
             body => $JSON->encode($data) };
}


# SSE events as chunks, with a delay item between them when asked.
sub _sse_res {
    my ($o, @events) = @_;

    my @chunks;

    for my $e (@events) {
        push @chunks, { delay => $o->{delay} } if $o->{delay} && @chunks;
        push @chunks, $e;
    }

    return { status => $o->{status}, headers => $o->{headers},
             chunks => \@chunks };
}


sub _pieces {
    my ($text) = @_;

    my @p = $text =~ /(\S+\s*)/g;

    return @p ? @p : ($text);
}


sub openai_chat {
    my %o = _opts(@_);

    my $data = {
        id => "chatcmpl-$o{id}", object => 'chat.completion',
        created => 1700000000, model => $o{model},
        choices => [{ index => 0, finish_reason => 'stop', logprobs => undef,
                      message => { role => 'assistant',
                                   content => $o{text} } }],
    };

    $data->{usage} = {
        prompt_tokens => $o{prompt_tokens},
        completion_tokens => $o{completion_tokens},
        total_tokens => $o{prompt_tokens} + $o{completion_tokens},
    } if $o{usage};

    return _json_res(\%o, $data);
}


# The usage chunk (empty choices) comes last before [DONE], as with
# stream_options.include_usage.
sub openai_stream {
    my %o = _opts(@_);

    my %base = (id => "chatcmpl-$o{id}", object => 'chat.completion.chunk',
                created => 1700000000, model => $o{model});

    my $ev = sub { 'data: ' . $JSON->encode({ %base, @_ }) . "\n\n" };

    my @events = $ev->(choices => [{ index => 0, finish_reason => undef,
        delta => { role => 'assistant', content => '' } }]);

    push @events, map {
        $ev->(choices => [{ index => 0, finish_reason => undef,
                            delta => { content => $_ } }])
    } _pieces($o{text});

    push @events, $ev->(choices => [{ index => 0, delta => {},
                                      finish_reason => 'stop' }]);

    push @events, $ev->(choices => [], usage => {
        prompt_tokens => $o{prompt_tokens},
        completion_tokens => $o{completion_tokens},
        total_tokens => $o{prompt_tokens} + $o{completion_tokens},
    }) if $o{usage};

    push @events, "data: [DONE]\n\n";

    return _sse_res(\%o, @events);
}


sub openai_embeddings {
    my %o = _opts(@_);

    my $data = {
        object => 'list', model => $o{model},
        data => [{ object => 'embedding', index => 0,
                   embedding => [0.0023, -0.0094, 0.0157] }],
    };

    $data->{usage} = { prompt_tokens => $o{prompt_tokens},
                       total_tokens => $o{prompt_tokens} } if $o{usage};

    return _json_res(\%o, $data);
}


sub anthropic_message {
    my %o = _opts(@_);

    my $data = {
        id => "msg_$o{id}", type => 'message', role => 'assistant',
        model => $o{model}, content => [{ type => 'text', text => $o{text} }],
        stop_reason => 'end_turn', stop_sequence => undef,
    };

    $data->{usage} = { input_tokens => $o{prompt_tokens},
                       output_tokens => $o{completion_tokens} } if $o{usage};

    return _json_res(\%o, $data);
}


sub anthropic_stream {
    my %o = _opts(@_);

    my $ev = sub {
        my ($type, %d) = @_;
        return "event: $type\ndata: "
               . $JSON->encode({ type => $type, %d }) . "\n\n";
    };

    my @events = $ev->('message_start', message => {
        id => "msg_$o{id}", type => 'message', role => 'assistant',
        model => $o{model}, content => [], stop_reason => undef,
        stop_sequence => undef,
        $o{usage} ? (usage => { input_tokens => $o{prompt_tokens},
                                output_tokens => 1 }) : (),
    });

    push @events, $ev->('content_block_start', index => 0,
                        content_block => { type => 'text', text => '' });
    push @events, $ev->('ping');

    push @events, map {
        $ev->('content_block_delta', index => 0,
              delta => { type => 'text_delta', text => $_ })
    } _pieces($o{text});

    push @events, $ev->('content_block_stop', index => 0);

    push @events, $ev->('message_delta',
        delta => { stop_reason => 'end_turn', stop_sequence => undef },
        $o{usage} ? (usage => { output_tokens => $o{completion_tokens} })
                  : ());

    push @events, $ev->('message_stop');

    return _sse_res(\%o, @events);
}


sub _gemini_usage {
    my ($o) = @_;

    return (usageMetadata => {
        promptTokenCount => $o->{prompt_tokens},
        candidatesTokenCount => $o->{completion_tokens},
        totalTokenCount => $o->{prompt_tokens} + $o->{completion_tokens},
    });
}


sub gemini_content {
    my %o = _opts(@_);

    return _json_res(\%o, {
        candidates => [{ index => 0, finishReason => 'STOP',
                         content => { role => 'model',
                                      parts => [{ text => $o{text} }] } }],
        modelVersion => $o{model},
        $o{usage} ? _gemini_usage(\%o) : (),
    });
}


# streamGenerateContent?alt=sse: every event carries the usage so far, the
# last one the final figures.
sub gemini_stream {
    my %o = _opts(@_);

    my @pieces = _pieces($o{text});
    my @events;

    for my $i (0 .. $#pieces) {
        my $last = $i == $#pieces;
        my %u    = _gemini_usage({ %o, completion_tokens =>
                       $last ? $o{completion_tokens} : $i + 1 });

        push @events, 'data: ' . $JSON->encode({
            candidates => [{ index => 0,
                             content => { role => 'model',
                                          parts => [{ text => $pieces[$i] }] },
                             $last ? (finishReason => 'STOP') : () }],
            modelVersion => $o{model},
            $o{usage} ? %u : (),
        }) . "\r\n\r\n";
    }

    return _sse_res(\%o, @events);
}


# OpenAI chat completions unless the path says otherwise; streams when the
# JSON body has a true "stream" (Gemini: streamGenerateContent).
sub default_handler {
    my ($req) = @_;

    my $json   = ref $req->{json} eq 'HASH' ? $req->{json} : {};
    my $stream = $json->{stream} ? 1 : 0;
    my $model  = defined $json->{model} && !ref $json->{model}
                 ? $json->{model} : 'mock-model';
    my $path   = $req->{path};

    if ($path =~ m{/models/([^/:]+):(stream)?[gG]enerateContent}) {
        return $2 ? gemini_stream(model => $1) : gemini_content(model => $1);
    }

    if ($path =~ m{/messages\z}) {
        return $stream ? anthropic_stream(model => $model)
                       : anthropic_message(model => $model);
    }

    if ($path =~ m{/embeddings\z}) {
        return openai_embeddings(model => $model);
    }

    return $stream ? openai_stream(model => $model)
                   : openai_chat(model => $model);
}


1;
