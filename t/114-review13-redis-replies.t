# Review 13: the batch script's compact answer (ngx_http_llm_rstore_unpack)
# and the RESP formatter (ngx_http_llm_redis_format), against a real
# redis-server seen through a link (Test::LLM::Link) that can hold and
# rewrite the batch script's answers.  Each block is a reproducer of a
# finding, or a check of what held.
#
# Batches are made deterministic with the clock: until a fresh nginx has
# read Redis's clock (the link holds the answer to TIME while the file
# "gate" exists), its admissions wait in one batch; when the gate opens
# they go as one call of the batch script.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use Test::LLM::Chat ();
use Test::LLM::Client ();
use Test::LLM::Redis;
use Test::LLM::Link;
use File::Path qw(make_path);
use IO::Select ();
use IO::Socket::INET ();
use POSIX ();
use Time::HiRes ();

our $CAROL = $Test::LLM::Keys::CAROL;
our $P     = "t114-$$-" . time;

# Redis, and a link in front of it; with a password, the same
our ($RP, $LP, $AP, $ALP) = (free_port(), free_port(), free_port(),
                             free_port());
our $DIR = "$Test::LLM::Nginx::ROOT/t/servroot/t114-link-$LP";
make_path($DIR);
unlink "$DIR/gate", "$DIR/mode", "$DIR/log";

redis_start($RP);
redis_start($AP, '--requirepass', 'open sesame');
our @AUTH = ('-a', 'open sesame', '--no-auth-warning');

# --- the link -------------------------------------------------------------

sub slurp_file {
    open(my $fh, '<', $_[0]) or return undef;
    local $/;
    return scalar <$fh>;
}

sub append_log {
    open(my $fh, '>>', "$DIR/log") or return;
    print $fh @_;
    close $fh;
}

# the next line of "mode" (consumed): how the next batch answer changes
sub next_mode {
    my $m = slurp_file("$DIR/mode") // return '';
    my ($first, $rest) = split /\n/, $m, 2;
    open(my $fh, '>', "$DIR/mode.tmp") or die;
    print $fh $rest // '';
    close $fh;
    rename "$DIR/mode.tmp", "$DIR/mode";
    return $first // '';
}

# the batch answer $v (its command's argv $argv) changed by $mode
sub mangle {
    my ($mode, $v, $argv) = @_;
    my ($name, $arg) = split ' ', $mode;
    my $a = $v->[1];
    return $v unless $name && $v->[0] eq '*';
    my @e = @$a;
    if ($name eq 'drop_last') { pop @e }
    elsif ($name eq 'extra') { push @e, [':', 0] }
    elsif ($name eq 'nwin') { $e[1] = [':', $e[1][1] + 1] }
    elsif ($name eq 'string') { $e[-1] = ['$', $e[-1][1]] }
    elsif ($name eq 'code') { $e[2 + 2 * $e[1][1]] = [':', $arg // 12] }
    elsif ($name eq 'error') { return ['-', 'ERR mangled by the link'] }
    elsif ($name eq 'nil') { return ['$', undef] }
    elsif ($name eq 'pad') { push @e, map { [':', 0] } 1 .. ($arg // 300) }
    elsif ($name eq 'header') { @e = @e[0 .. 1 + 2 * $e[1][1]] }
    return ['*', \@e];
}

our (%BatchSha, %Gated);

# in the link, each of Redis's answers: a batch script's is held or
# changed as "mode" says, and logged; a connection whose TIME is answered
# while the gate is closed waits for it to open
sub answer {
    my ($conn, $argv, $v) = @_;
    my $cmd = uc $argv->[0];
    my $ms = 0;
    $Gated{$conn} = 1 if $cmd eq 'TIME' && -e "$DIR/gate";
    if ($cmd eq 'SCRIPT' && ($argv->[2] // '') =~ /local base = 3/
        && $v->[0] eq '$')
    {
        $BatchSha{$v->[1]} = 1;
    }
    my $batch = ($cmd eq 'EVALSHA' && $BatchSha{$argv->[1]})
                || ($cmd eq 'EVAL' && $argv->[1] =~ /local base = 3/);
    if ($batch) {
        my $nkeys = $argv->[2];
        my $nwin = $nkeys - 2;
        my $nargs = @$argv - 3 - $nkeys;
        my $nreq = ($nargs - 3 - 2 * $nwin) / (2 + $nwin);
        my $mode = next_mode();
        if ($mode =~ /^hold (\d+)/) {
            $ms = $1;
        } elsif ($mode) {
            $v = mangle($mode, $v, $argv);
        }
        my $got = $v->[0] eq '*'
            ? join(' ', map { $_->[1] // 'nil' } @{ $v->[1] })
            : "$v->[0]" . ($v->[1] // 'nil');
        append_log("$cmd nreq=$nreq nwin=$nwin mode=$mode: $got\n");
    }
    return ($v, $ms, $Gated{$conn});
}

link_start($LP, $RP, answer => \&answer, gate => "$DIR/gate");
link_start($ALP, $AP, answer => \&answer, gate => "$DIR/gate");

# --- helpers ----------------------------------------------------------------

sub gate_close { open(my $fh, '>', "$DIR/gate") or die; close $fh }
sub gate_open { unlink "$DIR/gate" }

sub set_mode {
    open(my $fh, '>', "$DIR/mode") or die;
    print $fh map { "$_\n" } @_;
    close $fh;
}

sub link_log { slurp_file("$DIR/log") // '' }

# a fresh link state for a block: the TIME answer held, "mode" as given
sub fresh {
    my (@mode) = @_;
    unlink "$DIR/log";
    set_mode(@mode);
    gate_close();
}

sub conf {
    my ($block, $tiers, $redis) = @_;
    return $Test::LLM::Keys::TIERS . ($tiers // '')
        . "llm_redis " . ($redis // "127.0.0.1:$LP timeout=3s connections=1"
                                    . " on_error=deny")
        . " prefix=$P-$block:;\n";
}

our $Gateway = <<'_EOC_';
location /v1/ {
    llm_gateway on;
    llm_default_tier t;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    add_header X-Result "$llm_limit_result" always;
}
location = /plain {
    return 200 "plain\n";
}
_EOC_

our $Mock = sub {
    return { body => $Test::LLM::Chat::ANSWER };
};

# n of carol's chats at once, exchange k with timeout $to->[k] (then the
# client closes; 10 s if undef), while the gate opens after $open s
sub batch_of {
    my ($n, %o) = @_;
    my $to = $o{timeouts} // [];
    my $body = $o{body} // Test::LLM::Chat::chat(max => $o{max} // 50);
    my $req = Test::LLM::Client::build_request("POST /v1/chat/completions",
        more_headers => "Authorization: Bearer $CAROL\r\n"
                        . "Content-Type: application/json",
        body => $body);
    my $pid = fork // die;
    if (!$pid) {
        Time::HiRes::sleep($o{open} // 0.4);
        gate_open();
        POSIX::_exit(0);
    }
    my @res = Test::LLM::Client::exchange_all(
        port => $ENV{TEST_NGINX_SERVER_PORT}, concurrency => $n,
        exchanges => [ map {
            defined $to->[$_] ? { %$req, timeout => $to->[$_], abort => 1 }
                              : { %$req, timeout => 10 }
        } 0 .. $n - 1 ]);
    waitpid $pid, 0;
    return @res;
}

sub window_sum {
    my ($block, $what, $port) = @_;
    return window_total($port // $RP,
                        "$P-$block:{acct:carol}:w:" . ($what // 'requests:1m'));
}


# n of carol's chats read by the worker in one event-loop iteration: n
# connections accepted, the worker stopped (SIGSTOP), the n requests
# written, the worker woken: one batch (at most what one call carries).
# %o: close => [indices] closed close_at s after the wake-up (the
# client goes), body, max.  The responses, in order ({gone => 1} for
# those closed)
sub stopped_batch {
    my ($n, %o) = @_;
    my $body = $o{body} // Test::LLM::Chat::chat(max => $o{max} // 50);
    my $req = Test::LLM::Client::build_request(
        "POST " . ($o{uri} // "/v1/chat/completions"),
        more_headers => "Authorization: Bearer " . ($o{key} // $CAROL)
                        . "\r\nContent-Type: application/json",
        body => $body);
    my @s = map {
        IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                              PeerPort => $ENV{TEST_NGINX_SERVER_PORT})
            or die "connect: $!"
    } 1 .. $n;
    # the request line first: each connection accepted and read from
    my $cut = index($req->{bytes}, "\r\n") + 2;
    syswrite($_, substr($req->{bytes}, 0, $cut)) for @s;
    Time::HiRes::sleep(0.3);
    my @w = worker_pids();
    kill 'STOP', @w;
    # stopped by now (a signal is not delivered at once)
    Time::HiRes::sleep(0.05);
    syswrite($_, substr($req->{bytes}, $cut)) for @s;
    Time::HiRes::sleep(0.05);
    kill 'CONT', @w;
    my $t0 = Time::HiRes::time();
    my %close = map { $_ => 1 } @{ $o{close} // [] };
    my @raw = ('') x $n;
    my %open = map { $_ => 1 } 0 .. $n - 1;
    my @res;
    while (%open && Time::HiRes::time() - $t0 < 10) {
        my $now = Time::HiRes::time() - $t0;
        for my $i (keys %open) {
            next unless $close{$i} && $now >= ($o{close_at} // 0.2);
            close $s[$i];
            delete $open{$i};
            $res[$i] = { gone => 1 };
        }
        my $sel = IO::Select->new(map { $s[$_] } keys %open);
        for my $h ($sel->can_read(0.02)) {
            my ($i) = grep { $open{$_} && $s[$_] == $h } keys %open;
            next unless defined $i;
            my $n = sysread($h, my $buf, 65536);
            if ($n) { $raw[$i] .= $buf; next }
            close $h;
            delete $open{$i};
            $res[$i] = Test::LLM::Client::parse_response($raw[$i], 'POST', 1);
        }
    }
    return map { $res[$_] // { error => 'timeout' } } 0 .. $n - 1;
}

sub codes {
    join ' ', map { $_->{gone} ? 'gone' : $_->{status} // '-' } @_;
}

run_tests();

__DATA__

=== TEST 1: control: six chats queued behind TIME go as one batch call and are all admitted, the link changing nothing; Redis holds 6 requests
--- workers: 1
--- http_config eval: ::fresh(); ::conf(1, "llm_tier t requests=100/m tokens=100000/m;\n")
--- config eval: $::Gateway
--- mock eval: $::Mock
--- request
GET /plain
--- timeout: 30
--- check eval
sub {
    my @r = ::batch_of(6);
    my $got = ::codes(@r) . " | " . ::window_sum(1);
    my $log = ::link_log();
    return (0, "got $got; link: $log")
        unless $got eq '200 200 200 200 200 200 | 6'
               && $log =~ /^EVALSHA nreq=6 nwin=2 mode=: /m;
    return 1;
}



=== TEST 2: a batch answer that is not the script's (one number short, one too many, a wrong nwin, a string, a code out of range, an error reply, a nil, the header alone, 300 numbers too many) means on_error for every request of it (deny: 503), never a guess and never a crash; a batch after each is admitted again
--- workers: 1
--- http_config eval: ::fresh(); ::conf(2, "llm_tier t requests=1000/m tokens=1000000/m;\n")
--- config eval: $::Gateway
--- mock eval: $::Mock
--- request
GET /plain
--- timeout: 90
--- check eval
sub {
    ::gate_open();
    my @modes = ('drop_last', 'extra', 'nwin', 'string', 'code 12',
                 'code 9', 'code 7', 'error', 'nil', 'header', 'pad 300');
    my @bad;
    for my $mode (@modes) {
        my ($got, $log);
        # the four as one call of the batch script (else once more)
        for (1 .. 3) {
            unlink "$::DIR/log";
            ::set_mode($mode, '');
            $got = ::codes(::stopped_batch(4));
            $log = ::link_log();
            last if $log =~ /^EVALSHA nreq=4 nwin=2 mode=\Q$mode\E: /;
        }
        push @bad, "$mode: $got; link: $log" unless $got eq '503 503 503 503';
        $got = ::codes(::stopped_batch(4));
        push @bad, "after $mode: $got" unless $got eq '200 200 200 200';
    }
    return (0, join("\n", @bad)) if @bad;
    return 1;
}



=== TEST 3: clients that go while their batch is in Redis (the link holds its answer 800 ms): what Redis granted them goes back, their lease too; admitted, refused (requests=5/m) and gone mixed: Redis's windows hold exactly what the requests served used (requests: one each, tokens: 30 each), no lease is left
--- workers: 1
--- http_config eval: ::fresh(); ::conf(3, "llm_tier t requests=5/m tokens=100000/m concurrency=20;\n")
--- config eval: $::Gateway
--- mock eval: $::Mock
--- request
GET /plain
--- timeout: 60
--- check eval
sub {
    ::gate_open();
    my @bad;
    for my $close ([0, 2, 4, 6], [5, 6, 7], [0, 1, 2, 3, 4, 5, 6, 7], [1]) {
        my $b = "3-" . join '', @$close;
        redis_cli($::RP, 'DEL', map { "$::P-3:{acct:carol}:$_" }
                  qw(w:requests:1m w:tokens:1m conc cool));
        ::set_mode('hold 800', '');
        my @r = ::stopped_batch(8, close => $close, close_at => 0.3);
        # the answer comes 0.8 s after the call (all gone: 0.5 s after
        # they went), then the refunds and settles
        Time::HiRes::sleep(1.2);
        my $ok = grep { ($_->{status} // 0) == 200 } @r;
        my $got = sprintf "%s | requests %d, tokens %d, leases %d",
            ::codes(@r), ::window_sum(3), ::window_sum(3, 'tokens:1m'),
            redis_cli($::RP, 'ZCARD', "$::P-3:{acct:carol}:conc");
        my $want = sprintf "requests %d, tokens %d, leases 0", $ok, 30 * $ok;
        push @bad, "close @$close: $got, want $want" unless $got =~ /\| \Q$want\E$/;
    }
    return (0, join("\n", @bad) . "\nlink: " . ::link_log()) if @bad;
    return 1;
}



=== TEST 4: a batch that meets NOSCRIPT (SCRIPT FLUSH: a Redis restarted) goes again as EVAL, the script's text through the RESP formatter: every request answered, Redis counts each once
--- workers: 1
--- http_config eval: ::fresh(); ::conf(4, "llm_tier t requests=100/m tokens=100000/m concurrency=20;\n")
--- config eval: $::Gateway
--- mock eval: $::Mock
--- request
GET /plain
--- timeout: 60
--- check eval
sub {
    ::gate_open();
    my @bad;
    for my $round (1 .. 3) {
        unlink "$::DIR/log";
        redis_cli($::RP, 'SCRIPT', 'FLUSH');
        my $before = ::window_sum(4);
        my $got = ::codes(::stopped_batch(5));
        Time::HiRes::sleep(0.3);
        my $n = ::window_sum(4) - $before;
        my $log = ::link_log();
        push @bad, "round $round: $got, Redis counted $n; link: $log"
            unless $got eq '200 200 200 200 200' && $n == 5
                   && $log =~ /^EVAL nreq=\d+ /m;
    }
    return (0, join("\n", @bad)) if @bad;
    return 1;
}
--- no_error_log
[warn]



=== TEST 5: one batch against a tier of five windows (two request, three token windows), concurrency and a cooldown: each answer's headers are what the admission script would say to that request alone, in the batch's order: remaining-requests 3 2 1 0, remaining-tokens (the output_tokens window, the least) 950 900 850 800, then a refusal (429) and two cooling down (403, Retry-After 3)
--- workers: 1
--- http_config eval: ::fresh(); ::conf(5, "llm_tier t requests=4/m requests=100/h tokens=100000/m input_tokens=50000/h output_tokens=1000/m concurrency=10 cooldown=3s;\n")
--- config eval: $::Gateway
--- mock eval: $::Mock
--- request
GET /plain
--- timeout: 60
--- check eval
sub {
    ::gate_open();
    my @r = ::stopped_batch(7);
    my $log = ::link_log();
    my @got = sort map {
        join ',', $_->{status} // '-',
            map { $_ // '-' } @{ $_->{header} }{qw(x-ratelimit-remaining-requests
                                                   x-ratelimit-remaining-tokens
                                                   retry-after)}
    } @r;
    my $got = join ' ', @got;
    return (0, "got $got; link: $log") unless $log =~ /^EVALSHA nreq=\d+ nwin=5 /m;
    return (0, "got $got") unless $got =~ /^200,0,800,- 200,1,850,- 200,2,900,- 200,3,950,- 403,0,800,3 403,0,800,3 429,0,800,6\d$/;
    return 1;
}



=== TEST 6: the formatter with what is long or odd: AUTH with a password holding a space, SELECT 3, a 64-byte prefix and a 64-byte account name, batches and their settles: every request admitted, Redis's database 3 holds each once, database 0 nothing
--- workers: 1
--- http_config eval
"llm_zone llm:1m;\n"
. "llm_tier t requests=100/m tokens=100000/m concurrency=20;\n"
. "llm_key_file $ENV{TEST_NGINX_SERVROOT}/keys.txt;\n"
. "llm_redis 127.0.0.1:$::ALP db=3 password_file=$ENV{TEST_NGINX_SERVROOT}/redis.pass"
. " prefix=" . ('p' x 63) . ": timeout=3s connections=1 on_error=deny;\n"
--- user_files eval
{ 'keys.txt' => "a60bfb397939c3a80b7aeef6b419f663d96e967d3364b7fc686e1481e292f99c acct."
                . ('x' x 59) . "\n",
  'redis.pass' => "open sesame\n" }
--- config eval: $::Gateway
--- mock eval: $::Mock
--- request
GET /plain
--- timeout: 60
--- check eval
sub {
    ::gate_open();
    my $key = 'sk-llm-6WRcNfe4snF-Wzr-aOi5dpW3jbUE0qwXe19PDWXeegk';
    my $w = ('p' x 63) . ":{acct:acct." . ('x' x 59) . "}:w:requests:1m";
    redis_cli($::AP, @::AUTH, '-n', 3, 'DEL', $w);
    my @got;
    for (1 .. 3) {
        push @got, ::codes(::stopped_batch(5, key => $key));
    }
    Time::HiRes::sleep(0.3);
    my $got = join(' | ', @got) . " | db3 "
        . window_total($::AP, $w, @::AUTH, '-n', 3) . ", db0 "
        . window_total($::AP, $w, @::AUTH);
    my $want = join(' | ', ('200 200 200 200 200') x 3) . " | db3 15, db0 0";
    return $got eq $want ? 1 : (0, "got $got\nlink: " . ::link_log());
}
--- no_error_log
[warn]



=== TEST 7: how many admissions one batch call carries (batch=64), oldest first (the full batch before the one after it, so that an account's requests are decided in the order they came): a tier of one window 50 (its answer at most 4 + 5 per request of the 256 numbers a reply may carry; README said 36), of three windows 22 (README: 19), of no window (concurrency only) all five; every request answered as one call each would be
--- workers: 1
--- http_config eval: ::fresh(); ::conf(7, "llm_tier t requests=1000/m;\nllm_tier three requests=1000/m requests=10000/h requests=100000/d;\nllm_tier conc concurrency=3;\n", "127.0.0.1:$::LP timeout=3s connections=1 on_error=deny batch=64")
--- config eval
$::Gateway . join '', map { <<"_EOC_" } qw(three conc)
location /$_/v1/ {
    llm_gateway on;
    llm_default_tier $_;
    proxy_pass http://127.0.0.1:\$TEST_NGINX_MOCK_PORT/v1/;
}
_EOC_
--- mock eval
sub { return { delay => 1, body => $Test::LLM::Chat::ANSWER } }
--- request
GET /plain
--- timeout: 60
--- check eval
sub {
    ::gate_open();
    my @bad;
    for my $c (['', 60, 1, '50 10'], ['/three', 30, 3, '22 8'],
               ['/conc', 5, 0, '5']) {
        my ($pre, $n, $nwin, $want) = @$c;
        my ($got, $codes);
        # once more if a request came in an iteration of its own
        for (1 .. 3) {
            unlink "$::DIR/log";
            my @r = ::stopped_batch($n, uri => "$pre/v1/chat/completions");
            my $log = ::link_log();
            # sent as they came: the full batch (the first 50) first
            $got = join " ", $log =~ /^EVALSHA nreq=(\d+) nwin=$nwin /mg;
            $codes = Test::LLM::Client::status_counts(@r);
            last if $got eq $want;
            Time::HiRes::sleep(1.5);    # the requests of /conc end
        }
        my $want_codes = $pre eq '/conc' ? '200=3 429=2' : "200=$n";
        push @bad, "$pre: calls of $got, want $want; $codes, want $want_codes"
            unless $got eq $want && $codes eq $want_codes;
    }
    return (0, join "\n", @bad) if @bad;
    return 1;
}




=== TEST 8: the RESP formatter's buffer under valgrind: a worker whose first command is TIME (no AUTH, no SELECT) hands hiredis a command of one argument, and redisAsyncFormattedCommand() reads the byte after it (is a second argument there?): before the fix an uninitialised byte of a fresh buffer ("Conditional jump or move depends on uninitialised value(s)" in libhiredis, from ngx_http_llm_redis_format's allocation), hiredis's own formatters end theirs with a NUL
--- skip_eval: 1: !-x '/usr/bin/valgrind' || ($ENV{LLM_MODULE} // '') =~ /asan/
--- workers: 1
--- http_config eval: ::conf(8, "llm_tier t requests=100/m;\n")
--- config eval: $::Gateway
--- request
GET /plain
--- timeout: 90
--- check eval
sub {
    my $dir = "$ENV{TEST_NGINX_SERVROOT}/vg";
    mkdir $dir;
    mkdir "$dir/logs";
    my $port = free_port();
    my $module = $ENV{LLM_MODULE}
        // "$Test::LLM::Nginx::ROOT/build/release/ngx_http_llm_gateway_module.so";
    my $nginx = $ENV{LLM_NGINX_BIN} // '/usr/sbin/nginx';
    open(my $fh, '>', "$dir/nginx.conf") or die;
    print $fh <<"_EOC_";
load_module $module;
worker_processes 1;
daemon off;
error_log logs/error.log info;
pid logs/nginx.pid;
events { worker_connections 64; }
http {
    access_log off;
    llm_zone llm:1m;
    llm_tier t requests=100/m;
    llm_redis 127.0.0.1:$::RP prefix=$::P-vg: timeout=2s connections=1;
    server {
        listen 127.0.0.1:$port;
        location / {
            llm_gateway on;
            llm_anonymous_tier t;
            proxy_pass http://127.0.0.1:$ENV{TEST_NGINX_DEAD_PORT};
        }
    }
}
_EOC_
    close $fh;
    my $c0 = redis_conns_received($::RP);
    system("timeout 90 valgrind --trace-children=yes --track-origins=yes"
           . " $nginx -p $dir/ -c $dir/nginx.conf > $dir/vg.out 2>&1 &");
    # the worker has connected and sent its handshake (AUTH, SELECT,
    # TIME, SCRIPT LOADs: a few seconds under valgrind)
    my $up = wait_until(40, sub { redis_conns_received($::RP) > $c0 });
    Time::HiRes::sleep(3);
    my $mpid = (::slurp_file("$dir/logs/nginx.pid") // '') =~ /(\d+)/ ? $1 : 0;
    kill 'QUIT', $mpid if $mpid;
    wait_until(40, sub {
        my $o = ::slurp_file("$dir/vg.out") // '';
        (() = $o =~ /ERROR SUMMARY/g) >= 2
    });
    my $out = ::slurp_file("$dir/vg.out") // '';
    my @bad = $out =~ /^(==\d+== (?:Conditional jump|Use of uninitialised|Invalid read).*)$/mg;
    return (0, "no handshake seen under valgrind") unless $up;
    return (0, join("\n", @bad, grep { /redis|hiredis/ } split /\n/, $out))
        if @bad;
    return 1;
}
