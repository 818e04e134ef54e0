package Test::LLM::Nginx;

# Test::Nginx-style data-driven tests for ngx_llm_gateway, on Debian's Perl
# modules only (Test::Base for the block format). Every block gets a fresh
# nginx (fresh shared memory) and a fresh recording of the mock backend; see
# t/README.md for the block reference and the environment variables.
#
#   use lib 't/lib';
#   use Test::LLM::Nginx;
#
#   run_tests();          # plans the exact number of tests itself
#
#   __DATA__
#
#   === TEST 1: hello
#   --- config
#   location /t { return 200 "hello\n"; }
#   --- request
#   GET /t
#   --- response_body
#   hello
#
# Per block: the servroot is emptied, user files and conf/nginx.conf are
# written, the mock backend is forked with the block's handler, nginx is
# started (daemon off, its own process group) and waited for through its pid
# file, the requests run, then the "check" hook, then nginx is stopped (QUIT,
# then TERM, then KILL, bounded) and the mock; then every assertion of the
# block is reported. The last one of each block asserts that the logs are
# clean: no [alert], [crit], [emerg], sanitizer report or crashed process.

use strict;
use warnings;


# String evals of test blocks run here, before any file-scoped lexical is
# declared, so that they see none of this module's variables.
sub _eval_in_main {
    return eval "package main; no strict; no warnings 'once';\n"
                . '#line 1 "' . ($_[1] =~ tr/"\n//dr) . "\"\n$_[0]";
}


use Cwd ();
use File::Basename qw(basename dirname);
use File::Path qw(make_path remove_tree);
use Fcntl qw(:flock);
use File::Spec;
use IO::Socket::IP;
use POSIX qw(WNOHANG);
use Scalar::Util qw(openhandle);
use Time::HiRes qw(time sleep);

our $ROOT;

BEGIN {
    $ROOT = Cwd::abs_path(dirname(__FILE__) . '/../../../..');
    unshift @INC, "$ROOT/t/mock";
}

use LLMMock ();
use Test::Base ();
use Test::Builder;
use Test::LLM::Client ();

our @EXPORT = qw(
    run_tests blocks count_tests plan
    mock_requests http_request servroot nginx_pid worker_pids proc_age
    reload_nginx
    harness_config errlog access_lines
    mock_default mock_openai mock_openai_stream mock_openai_embeddings
    mock_anthropic mock_anthropic_stream mock_gemini mock_gemini_stream
    free_port start_extra_nginx stop_extra_nginx
    redis_start redis_stop redis_cli
);

# Every section a block may have; anything else is a typo and dies.
my %SECTIONS = map { $_ => 1 } qw(
    main_config http_config config user_files no_module workers log_level
    request request_body raw_request raw_request_middle_delay more_headers
    timeout abort request_delay wait concurrency repeat
    error_code response_body response_body_like response_headers
    response_headers_like ignore_response status_counts
    error_log no_error_log access_log_like access_log_unlike
    mock mock_log_like mock_log_unlike mock_count check
    must_die allow_alert allow_hard_stop skip_eval
    ONLY SKIP LAST
);

# Sections whose value is Perl code: no $TEST_NGINX_ substitution.
my %CODE_SECTIONS = map { $_ => 1 } qw(mock check skip_eval);

my $START_TIMEOUT = $ENV{TEST_NGINX_START_TIMEOUT} || 10;
my $QUIT_TIMEOUT  = $ENV{TEST_NGINX_QUIT_TIMEOUT}  || 5;
my $REQ_TIMEOUT   = $ENV{TEST_NGINX_TIMEOUT}       || 5;

my %C;              # this test file's settings (see _init)
my @MOCK_SOCKS;     # the mock's listening sockets, bound for the whole file
my $DEAD_SOCK;      # a bound port nobody listens on (connection refused)
my $MAIN_PID = $$;
my $NGINX_PID;      # the running master, our child
my $MOCK_PID;       # the running mock acceptor, our child
my %EXTRA;          # port => pid: more nginx nodes of the running block
my %REDIS;          # port => pid file: redis-servers a test started
my $BLOCKS;         # filtered blocks
our $CURRENT;       # block being filtered or run (for messages)
my $ASKED_PLAN;     # N of a "plan tests => N" made before run_tests()


# --- setup ----------------------------------------------------------------

sub import {
    my ($class, @opts) = @_;

    my $caller = caller;

    for my $o (@opts) {
        die "Test::LLM::Nginx: unknown option \"$o\"\n" if $o ne 'no_module';
        $C{no_module} = 1;
    }

    _init() unless $C{servroot};

    # Test::Base's exports (plan, is, like, ...) into the caller, then ours
    eval "package $caller; Test::Base->import(); 1" or die $@;

    no strict 'refs';
    no warnings 'redefine';

    *{"${caller}::$_"} = \&{$_} for @EXPORT;
}


sub _init {
    $C{nginx} = $ENV{LLM_NGINX_BIN} || $ENV{TEST_NGINX_BINARY}
                || '/usr/sbin/nginx';

    $C{module} = File::Spec->rel2abs($ENV{LLM_MODULE}
        || "$ROOT/build/release/ngx_http_llm_gateway_module.so");

    # t/servroot/NAME, kept after the run for a look at the last block; a
    # second run of the same file at the same time gets NAME.PID, removed
    # at exit
    (my $name = basename($0)) =~ s/(?:\.t)?(?:\.fixture)?\z//;
    my $base = "$ROOT/t/servroot";

    make_path($base);
    open($C{lock}, '>>', "$base/$name.lock") or die "$base/$name.lock: $!\n";

    if (flock($C{lock}, LOCK_EX | LOCK_NB)) {
        $C{servroot} = "$base/$name";
    } else {
        $C{servroot} = "$base/$name.$$";
        $C{temporary} = 1;
    }

    my $v = `$C{nginx} -V 2>&1`;
    $C{debug} = $v =~ /--with-debug/ ? 1 : 0;
    $C{log_level} = $ENV{TEST_NGINX_LOG_LEVEL}
                    || ($C{debug} ? 'debug' : 'info');

    my ($probe, $port) = _bind_port(1, $ENV{TEST_NGINX_PORT});
    close $probe;           # nginx binds it (with SO_REUSEADDR)
    $C{port} = $port;

    my ($m1, $mp1) = _bind_port(1);
    my ($m2, $mp2) = _bind_port(1);
    @MOCK_SOCKS = ($m1, $m2);

    ($DEAD_SOCK, $C{dead_port}) = _bind_port(0);

    my %vars = (
        TEST_NGINX_SERVER_PORT => $C{port},
        TEST_NGINX_MOCK_PORT   => $mp1,
        TEST_NGINX_MOCK_PORT2  => $mp2,
        TEST_NGINX_DEAD_PORT   => $C{dead_port},
        TEST_NGINX_SERVROOT    => $C{servroot},
        TEST_NGINX_HTML_DIR    => "$C{servroot}/html",
        TEST_NGINX_MODULE      => $C{module},
        TEST_NGINX_REDIS_PORT  => $ENV{TEST_NGINX_REDIS_PORT} || 6399,
    );

    # visible as $ENV{...}, as $TEST_NGINX_... in eval code and substituted
    # in block text
    no strict 'refs';
    no warnings 'once';

    for my $k (keys %vars) {
        $ENV{$k} = $vars{$k};
        ${"main::$k"} = $vars{$k};
    }
}


# A random port below the kernel's ephemeral range (so that no outgoing
# connection takes it between blocks), free on 127.0.0.1. Listening sockets
# are returned listening; others only bound (connecting to them is refused).
sub _bind_port {
    my ($listen, $fixed) = @_;

    my ($lo, $hi) = (20000, 32000);

    if (open(my $fh, '<', '/proc/sys/net/ipv4/ip_local_port_range')) {
        my ($first) = split ' ', scalar <$fh> // '';
        $hi = $first - 1 if $first && $first - 1 < $hi && $first > $lo + 2000;
    }

    for my $try (1 .. 200) {
        my $port = $fixed || $lo + int rand($hi - $lo);

        my $s = IO::Socket::IP->new(
            LocalHost => '127.0.0.1', LocalPort => $port, Proto => 'tcp',
            $listen ? (Listen => 1024, ReuseAddr => 1) : (),
        );

        return ($s, $port) if $s;
        die "cannot bind 127.0.0.1:$port: $@\n" if $fixed;
    }

    die "no free port found\n";
}


# --- blocks -----------------------------------------------------------------

sub _blocks {
    return $BLOCKS if $BLOCKS;

    my $fh = openhandle(\*main::DATA)
        or die "Test::LLM::Nginx: the test file has no __DATA__ section\n";

    my $spec = do { local $/; <$fh> };

    # "--- concurrency 10" means "--- concurrency: 10" (a filter name never
    # starts with a digit)
    $spec =~ s/^(---[ \t]+\w+)[ \t]+(\d[^\n]*)$/$1: $2/mg;

    Test::Base::spec_string($spec);
    Test::Base::filters_delay(1);

    # our eval filter: dies on errors (Test::Base's would turn the error
    # message into the section's value) and sees the $TEST_NGINX_ variables
    no warnings qw(redefine once);
    *main::eval = \&_eval_filter;

    my @blocks = Test::Base::blocks();

    for my $b (@blocks) {
        local $CURRENT = $b;

        eval {
            my %seen;

            for my $s (@{ $b->{_section_order}[0] }) {
                die "section \"--- $s\" appears twice\n" if $seen{$s}++;
            }

            $b->run_filters unless $b->is_filtered;
            _prepare_block($b);
            _plan($b);
            1;
        } or die $b->name . ": $@";
    }

    return $BLOCKS = \@blocks;
}


sub _eval_filter {
    my @r = _eval_in_main(join('', @_),
                          $CURRENT ? $CURRENT->name : 'block');

    die "eval failed: $@" if $@;

    # Test::Base replaces a filter's empty or numeric result by $_
    if (!@r) {
        $_ = undef;
    } elsif (@r == 1 && !ref $r[0]) {
        $_ = $r[0];
    }

    return @r;
}


sub _prepare_block {
    my ($b) = @_;

    for my $s (@{ $b->{_section_order}[0] }) {
        die "unknown section \"--- $s\"\n" unless $SECTIONS{$s};
        next if $CODE_SECTIONS{$s};
        $b->{$s} = [ map { _subst($_) } @{ $b->{$s} } ];
    }

    if (exists $b->{mock}) {
        my $m = _val($b, 'mock');

        if (!ref $m) {
            $m = _eval_in_main($m, $b->name . ' --- mock');
            die "--- mock: $@" if $@;
        }

        die "--- mock must be a code ref (sub { ... })\n"
            unless ref $m eq 'CODE';

        $b->{mock} = [$m];
    }

    if (exists $b->{check} && ref _val($b, 'check') ne 'CODE') {
        die "--- check must be \"--- check eval\" returning a code ref\n";
    }
}


# Replaces $TEST_NGINX_NAME and ${TEST_NGINX_NAME} in strings, also inside
# array and hash refs.
sub _subst {
    my ($v) = @_;

    return $v unless defined $v;
    return [ map { _subst($_) } @$v ] if ref $v eq 'ARRAY';
    return { map { $_ => _subst($v->{$_}) } keys %$v } if ref $v eq 'HASH';
    return $v if ref $v;

    $v =~ s{\$(?:\{(TEST_NGINX_\w+)\}|(TEST_NGINX_[A-Z0-9_]+))}{
        my $n = $1 // $2;
        defined $ENV{$n} ? $ENV{$n} : die "unknown variable \$$n\n";
    }ge;

    return $v;
}


# A section's value: undef when absent, a list of several values (an eval
# returning a list) as an array ref.
sub _val {
    my ($b, $name) = @_;

    my $l = $b->{$name} or return undef;

    return @$l > 1 ? [@$l] : $l->[0];
}


# A one-line option: undef when absent or empty.
sub _opt {
    my ($b, $name) = @_;

    my $v = _val($b, $name);
    return undef unless defined $v;

    $v =~ s/\A\s+|\s+\z//g unless ref $v;

    return length $v ? $v : undef;
}


sub _is_eval {
    my ($b, $name) = @_;

    my $map = $b->{_section_map}[0];

    return (($map->{$name}{filters} // '') =~ /\beval\b/);
}


# Value of a per-request section for request $i of $n: an array has one
# element per request, anything else applies to every request.
sub _per_req {
    my ($b, $name, $i, $n) = @_;

    my $v = _val($b, $name);

    return $v unless ref $v eq 'ARRAY';

    die "--- $name has " . @$v . " elements for $n requests\n" if @$v != $n;

    return $v->[$i];
}


sub blocks {
    my @b = @{ _blocks() };

    if (@_) {
        my $section = shift;
        @b = grep { exists $_->{$section} } @b;
    }

    return wantarray ? @b : scalar @b;
}


# Test::More's plan, except that "plan tests => N" is only noted: how many
# assertions a block makes depends on its sections, so run_tests() plans
# the exact count itself (Test::Nginx-style "blocks() * 3" files work).
sub plan {
    if (@_ == 2 && $_[0] eq 'tests') {
        $ASKED_PLAN = $_[1];
        return;
    }

    return Test::Builder->new->plan(@_);
}


# The number of tests run_tests() will report.
sub count_tests {
    my $n = 0;

    $n += @{ _plan($_)->{checks} } for @{ _blocks() };

    return $n;
}


# --- the plan of a block: what to send, what to assert ------------------

sub _plan {
    my ($b) = @_;

    return $b->{_llm_plan} if $b->{_llm_plan};

    my %p = (checks => [], exchanges => []);

    my $add = sub {
        my ($name, $code, %o) = @_;
        push @{ $p{checks} }, { name => $name, code => $code, %o };
    };

    $p{must_die} = exists $b->{must_die};

    if ($p{must_die}) {
        $add->('nginx refuses to start', sub {
            my ($ctx) = @_;
            return (0, "nginx started, but the block has --- must_die")
                if $ctx->{started};
            return 1;
        }, always => 1);

        _plan_log_checks($b, \%p, $add, 0);

    } else {
        _plan_exchanges($b, \%p);
        _plan_response_checks($b, \%p, $add);
        _plan_log_checks($b, \%p, $add, scalar @{ $p{exchanges} });
        _plan_other_checks($b, \%p, $add);
    }

    $add->('logs are clean', \&_check_clean, always => 1);

    return $b->{_llm_plan} = \%p;
}


sub _plan_exchanges {
    my ($b, $p) = @_;

    my $timeout = _opt($b, 'timeout') // $REQ_TIMEOUT;
    my $abort   = exists $b->{abort};

    if (exists $b->{raw_request}) {
        die "--- raw_request and --- request exclude each other\n"
            if exists $b->{request};

        my $raw    = _val($b, 'raw_request');
        my $pause  = _opt($b, 'raw_request_middle_delay');
        my @pieces = ref $raw eq 'ARRAY' ? @$raw : ($raw);

        if ($pause) {
            @pieces = map { ($_, { delay => $pause }) } @pieces;
            pop @pieces;
        }

        my ($method) = ((grep { !ref } @pieces)[0] // '') =~ /\A\s*(\S+)/;

        push @{ $p->{exchanges} }, { pieces => \@pieces, timeout => $timeout,
                                     abort => $abort, method => $method };

    } elsif (exists $b->{request}) {
        my $r    = _val($b, 'request');
        my @reqs = ref $r eq 'ARRAY' ? @$r : ($r);
        my $n    = @reqs;

        my $body = _val($b, 'request_body');

        for my $i (0 .. $#reqs) {
            my $req = Test::LLM::Client::build_request($reqs[$i],
                more_headers => _per_req($b, 'more_headers', $i, $n),
                body => ref $body eq 'ARRAY' ? $body->[$i] : $body,
                chomp_body => defined $body ? !_is_eval($b, 'request_body')
                                            : !_is_eval($b, 'request'));

            push @{ $p->{exchanges} }, { bytes => $req->{bytes},
                                         method => $req->{method},
                                         timeout => $timeout,
                                         abort => $abort };
        }
    }

    my $conc   = _opt($b, 'concurrency');
    my $repeat = _opt($b, 'repeat');

    if (defined $conc || defined $repeat) {
        die "--- concurrency/--- repeat need a request\n"
            unless @{ $p->{exchanges} };

        $p->{concurrent}  = 1;
        $p->{concurrency} = $conc // 1;
        $p->{repeat}      = $repeat // $conc;
    }
}


sub _plan_response_checks {
    my ($b, $p, $add) = @_;

    my $ignore = exists $b->{ignore_response};

    if ($p->{concurrent}) {
        for my $s (qw(error_code response_body response_body_like
                      response_headers response_headers_like))
        {
            die "--- $s must be a single value with --- concurrency\n"
                if ref _val($b, $s) eq 'ARRAY';
        }

        my $all = sub { @{ $_[0]{responses} } };

        if (defined(my $spec = _opt($b, 'status_counts'))) {
            my $want = _parse_status_counts($spec);
            $add->("status counts $spec",
                   sub { _check_status_counts($_[0], $want) });
        }

        my $code = _opt($b, 'error_code');
        $code //= 200 unless $ignore || defined _opt($b, 'status_counts');

        _add_response_checks($b, $add, 'all responses: ', $all, $code,
                             map { _val($b, $_) } qw(response_body
                             response_body_like response_headers
                             response_headers_like));
        return;
    }

    die "--- status_counts needs --- concurrency or --- repeat\n"
        if exists $b->{status_counts};

    my $n = @{ $p->{exchanges} };

    for my $i (0 .. $n - 1) {
        my $pfx  = $n > 1 ? 'request ' . ($i + 1) . ': ' : '';
        my $code = _per_req($b, 'error_code', $i, $n);

        $code =~ s/\A\s+|\s+\z//g if defined $code;
        $code = undef if defined $code && !length $code;
        $code //= 200 unless $ignore;

        _add_response_checks($b, $add, $pfx, sub { $_[0]{responses}[$i] },
                             $code,
                             map { _per_req($b, $_, $i, $n) }
                             qw(response_body response_body_like
                                response_headers response_headers_like));
    }
}


# Adds the checks of one request (or of all responses, when $get returns a
# list): status, body, body regex, headers.
sub _add_response_checks {
    my ($b, $add, $pfx, $get, $code, $body, $like, $hdrs, $hdrs_like) = @_;

    undef $like if defined $like && !ref $like && !length $like;

    $add->("${pfx}status $code", sub {
        _each_response([$get->($_[0])], sub { _check_status($_[0], $code) });
    }) if defined $code;

    $add->("${pfx}response body", sub {
        _each_response([$get->($_[0])], sub { _check_body($_[0], $body) });
    }) if defined $body;

    if (defined $like) {
        my $re = _regex($like);

        $add->("${pfx}response body like " . _show_pattern($re), sub {
            _each_response([$get->($_[0])], sub {
                my ($res) = @_;
                return (0, _no_response($res)) unless defined $res->{status};
                return 1 if $res->{body} =~ $re;
                return (0, "body: " . _show($res->{body}));
            });
        });
    }

    for my $h (_header_specs($hdrs, 0), _header_specs($hdrs_like, 1)) {
        $add->("${pfx}header $h->{text}", sub {
            _each_response([$get->($_[0])], sub { _check_header($_[0], $h) });
        });
    }
}


# Runs a response check over one or several responses; reports the first
# failure and how many failed.
sub _each_response {
    my ($list, $check) = @_;

    my ($bad, @diag) = (0);

    for my $i (0 .. $#$list) {
        my ($ok, @d) = $check->($list->[$i] || {});
        next if $ok;
        @diag = (@$list > 1 ? "response " . ($i + 1) . ":" : (), @d)
            unless $bad++;
    }

    push @diag, "$bad of " . @$list . " responses failed" if @$list > 1 && $bad;

    return ($bad ? 0 : 1, @diag);
}


sub _plan_log_checks {
    my ($b, $p, $add, $n) = @_;

    for my $s (qw(error_log no_error_log)) {
        my $v = _val($b, $s);
        next unless defined $v;

        my $want = $s eq 'error_log';

        # one array of patterns per request: each checked on its own slice
        if ($n > 1 && !$p->{concurrent} && ref $v eq 'ARRAY' && @$v
            && !grep { ref $_ ne 'ARRAY' } @$v)
        {
            die "--- $s has " . @$v . " lists for $n requests\n"
                if @$v != $n;

            for my $i (0 .. $n - 1) {
                for my $pat (_patterns($v->[$i], 0)) {
                    $add->('request ' . ($i + 1) . ": $s "
                           . _show_pattern($pat),
                           sub { _check_text($_[0]{slices}[$i], $pat, $want,
                                             'the request\'s error log') });
                }
            }
            next;
        }

        for my $pat (_patterns($v, 0)) {
            $add->("$s " . _show_pattern($pat), sub {
                my ($ctx) = @_;
                _check_text($p->{must_die} ? $ctx->{startup_text}
                                           : $ctx->{error_log},
                            $pat, $want, 'the error log');
            }, always => $p->{must_die});
        }
    }
}


sub _plan_other_checks {
    my ($b, $p, $add) = @_;

    for my $s (qw(mock_log_like mock_log_unlike access_log_like
                  access_log_unlike))
    {
        my ($log, $want) = $s =~ /\A(\w+_log)_(like|unlike)\z/;

        for my $pat (_patterns(_val($b, $s), 1)) {
            $add->("$s " . _show_pattern($pat), sub {
                _check_text($_[0]{$log}, $pat, $want eq 'like', "the $log");
            });
        }
    }

    if (defined(my $n = _opt($b, 'mock_count'))) {
        $add->("mock received $n requests", sub {
            my $got = () = mock_requests();
            return 1 if $got == $n;
            return (0, "the mock received $got requests, expected $n");
        });
    }

    if (exists $b->{check}) {
        $add->('check', sub {
            my $r = $_[0]{check_result} || [0, 'the check did not run'];
            return @$r;
        });
    }
}


# --- running --------------------------------------------------------------

# run_tests(extra => K): runs every block; plans count_tests() + K tests
# unless a plan was already made (no_plan, skip_all); K is for a file that
# makes K more assertions of its own after the blocks.
sub run_tests {
    my (%o) = @_;

    my $tb     = Test::Builder->new;
    my $blocks = _blocks();

    if (!$tb->has_plan) {
        my $n = count_tests() + ($o{extra} || 0);

        $tb->note("\"plan tests => $ASKED_PLAN\" replaced by the exact "
                  . "count, $n") if defined $ASKED_PLAN && $ASKED_PLAN != $n;

        $n ? $tb->plan(tests => $n) : $tb->plan(skip_all => 'no blocks');
    }

    if (!-f $C{module} && !$C{no_module}
        && grep { !exists $_->{no_module} } @$blocks)
    {
        $tb->diag("module not found: $C{module} (build it, or set "
                  . "LLM_MODULE)");
    }

    local $SIG{INT}  = sub { _cleanup(); exit 130 };
    local $SIG{TERM} = sub { _cleanup(); exit 143 };

    _run_block($_) for @$blocks;

    _cleanup();
}


sub _run_block {
    my ($b) = @_;

    local $CURRENT = $b;

    # failures point at the test file's run_tests() line
    local $Test::Builder::Level = $Test::Builder::Level + 2;

    my $tb     = Test::Builder->new;
    my $checks = _plan($b)->{checks};

    if (defined(my $why = _skip_reason($b))) {
        $tb->skip($why) for @$checks;
        return;
    }

    my $ctx = eval { _execute($b) };

    if (!$ctx) {
        my $err = $@;
        _cleanup();
        $ctx = { harness_error => $err };
    }

    my $failed = 0;

    for my $c (@$checks) {
        my ($ok, @diag);

        if ($ctx->{harness_error}) {
            ($ok, @diag) = (0, "harness error: $ctx->{harness_error}");

        } elsif (!$ctx->{started} && !$c->{always}) {
            ($ok, @diag) = (0, 'nginx did not start'
                               . ($failed ? '' : ":\n" . _startup_errors($ctx)));

        } else {
            ($ok, @diag) = eval { $c->{code}->($ctx) };
            ($ok, @diag) = (0, "the check died: $@") if $@;
        }

        $tb->ok($ok, $b->name . " - $c->{name}");

        next if $ok;

        $failed++;
        $tb->diag(join("\n", @diag)) if @diag;
    }

    _diag_block($ctx) if $failed && !$ctx->{harness_error};
}


sub _skip_reason {
    my ($b) = @_;

    my $v = _opt($b, 'skip_eval') // return undef;

    my ($expr) = $v =~ /\A\s*(?:\d+\s*:)?\s*(.*)\z/s;

    my $r = _eval_in_main($expr, $b->name . ' --- skip_eval');
    die $b->name . " --- skip_eval: $@" if $@;

    return $r ? "skip_eval: $expr" : undef;
}


sub _execute {
    my ($b) = @_;

    my $p   = _plan($b);
    my $ctx = { block => $b, responses => [], offsets => [] };

    _reset_servroot();
    _write_user_files($b);
    _write_conf($b);
    _start_mock($b);

    $ctx->{started} = _start_nginx($ctx);

    if ($ctx->{started} && !$p->{must_die}) {
        _send_requests($ctx, $p);

        my $wait = _opt($b, 'wait');
        sleep $wait if $wait;

        _run_check_hook($ctx) if exists $b->{check};
    }

    _stop_nginx($ctx);
    _stop_mock();
    _collect_logs($ctx);

    return $ctx;
}


sub _send_requests {
    my ($ctx, $p) = @_;

    my @ex = @{ $p->{exchanges} };

    if ($p->{concurrent}) {
        push @{ $ctx->{offsets} }, _log_size();

        $ctx->{responses} = [ Test::LLM::Client::exchange_all(
            port => $C{port}, concurrency => $p->{concurrency},
            exchanges => [ map { $ex[$_ % @ex] } 0 .. $p->{repeat} - 1 ]) ];

        return;
    }

    # a number: the pause between requests; a list: the pause before each
    my $delay = _val($ctx->{block}, 'request_delay');

    for my $i (0 .. $#ex) {
        my $d = ref $delay eq 'ARRAY' ? $delay->[$i] : $i ? $delay : 0;

        sleep $d if $d;

        push @{ $ctx->{offsets} }, _log_size();

        push @{ $ctx->{responses} }, Test::LLM::Client::exchange_all(
            port => $C{port}, exchanges => [$ex[$i]]);
    }
}


# --- check hook: runs while nginx is still up -----------------------------

sub _run_check_hook {
    my ($ctx) = @_;

    my $code = _val($ctx->{block}, 'check');

    my $view = {
        responses => $ctx->{responses},
        error_log => _slurp("$C{servroot}/logs/error.log"),
        servroot  => $C{servroot},
    };

    my @r = eval { $code->($view) };

    if ($@) {
        @r = (0, "the check died: $@");
    } elsif (!@r) {
        @r = (0, 'the check returned nothing');
    }

    $ctx->{check_result} = \@r;
}


# Functions for eval code (mock handlers, checks).

sub servroot { $C{servroot} }

# The running block's whole error log so far (every request's lines).
sub errlog { _slurp("$C{servroot}/logs/error.log") }

# The lines of logs/access.log once it has "n" (nginx writes a request's
# line after its answer went): waits up to 2.5 s, then returns what is there
sub access_lines {
    my ($n) = @_;
    my @l;
    for (1 .. 50) {
        @l = split /\n/, _slurp("$C{servroot}/logs/access.log") // '';
        last if @l >= $n;
        Time::HiRes::sleep(0.05);
    }
    return @l;
}

# Settings of the run (nginx binary, module path, ports), for tests that
# start an nginx of their own.
sub harness_config { return { %C } }


# The requests the mock received during the current block, oldest first.
sub mock_requests {
    return LLMMock::read_requests("$C{servroot}/logs");
}


# http_request("GET /x", more_headers => ..., body => ..., timeout => ...,
# port => ...): one request to the running nginx (from a --- check hook),
# or to another server on "port".
sub http_request {
    my ($text, %o) = @_;

    my $req = Test::LLM::Client::build_request(_subst($text),
        more_headers => _subst($o{more_headers}), body => $o{body});

    return Test::LLM::Client::exchange(port => $o{port} || $C{port},
        bytes => $req->{bytes}, method => $req->{method},
        timeout => $o{timeout} || $REQ_TIMEOUT);
}


# The running master's pid (from its pid file).
sub nginx_pid {
    open(my $fh, '<', "$C{servroot}/logs/nginx.pid") or return undef;

    my ($pid) = (scalar <$fh> // '') =~ /\A(\d+)/;

    return $pid;
}


# The pids of the running master's children (its workers, and the cache
# manager/loader if any), sorted.
sub worker_pids {
    my $master = nginx_pid() // return ();
    my @pids;

    for my $stat (glob '/proc/[0-9]*/stat') {
        open(my $fh, '<', $stat) or next;
        my ($pid, $ppid) = (scalar <$fh> // '') =~ /\A(\d+) \(.*\) \S (\d+)/s;
        push @pids, $pid if defined $ppid && $ppid == $master;
    }

    return sort { $a <=> $b } @pids;
}


# Seconds since process "pid" started (undef: unknown).
sub proc_age {
    my ($pid) = @_;
    open(my $st, '<', "/proc/$pid/stat") or return undef;
    my ($start) = ((scalar <$st>) // '') =~ /\) \S+(?: \S+){18} (\d+)/;
    close $st;
    open(my $up, '<', '/proc/uptime') or return undef;
    my ($uptime) = ((scalar <$up>) // '') =~ /^([\d.]+)/;
    close $up;
    return undef unless defined $start && defined $uptime;
    return $uptime - $start / POSIX::sysconf(POSIX::_SC_CLK_TCK());
}


# reload_nginx($timeout): SIGHUP, then waits (default 5 s) until as many
# new children as before run and the old ones are gone. True on success.
sub reload_nginx {
    my ($timeout) = @_;

    my $master = nginx_pid() // return 0;
    my %old    = map { $_ => 1 } worker_pids();

    kill 'HUP', $master or return 0;

    my $deadline = time + ($timeout || 5);

    while (time < $deadline) {
        my @now = worker_pids();
        my $new = grep { !$old{$_} } @now;

        return 1 if $new >= keys %old && $new == @now;

        sleep 0.01;
    }

    return 0;
}


# A free port (below the ephemeral range), for a test's own servers.
sub free_port {
    my ($sock, $port) = _bind_port(0);
    close $sock;
    return $port;
}


# start_extra_nginx($port): one more nginx running the block's own
# nginx.conf, listening on $port instead, with its own server root
# (servroot/extra-PORT: logs, pid, temp files). For tests across several
# nodes. Dies if it does not start. Returns its server root.
sub start_extra_nginx {
    my ($port) = @_;

    my $sr = "$C{servroot}/extra-$port";

    make_path("$sr/conf", "$sr/logs", "$sr/tmp");

    my $conf = _slurp("$C{servroot}/conf/nginx.conf");
    $conf =~ s/listen 127\.0\.0\.1:$C{port};/listen 127.0.0.1:$port;/
        or die "start_extra_nginx: no listen line\n";

    open(my $fh, '>', "$sr/conf/nginx.conf") or die "$sr: $!\n";
    print $fh $conf;
    close $fh;

    my $pid = fork // die "fork() failed: $!\n";

    if ($pid == 0) {
        POSIX::setpgid(0, 0);
        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>>', "$sr/logs/stderr.log");
        open(STDERR, '>&', \*STDOUT);
        { exec { $C{nginx} } $C{nginx}, '-p', "$sr/", '-c', 'conf/nginx.conf' }
        POSIX::_exit(127);
    }

    $EXTRA{$port} = $pid;

    my $deadline = time + $START_TIMEOUT;

    while (time < $deadline) {
        die "extra nginx on $port exited: " . _slurp("$sr/logs/stderr.log")
            . _slurp("$sr/logs/error.log") if defined _reap($pid, 0);

        return $sr if (_slurp("$sr/logs/nginx.pid") =~ /\A(\d+)\n/)
                      && $1 == $pid;
        sleep 0.005;
    }

    die "extra nginx on $port did not start\n";
}


# stop_extra_nginx(): stops (QUIT, bounded) every extra nginx of the block;
# returns their error logs and stderr, concatenated, for the caller to
# check ([alert], sanitizer reports, ...).
sub stop_extra_nginx {
    my $logs = '';

    for my $port (sort keys %EXTRA) {
        my $pid = delete $EXTRA{$port};

        kill 'QUIT', $pid;

        if (!defined _reap($pid, $QUIT_TIMEOUT)) {
            $logs .= "[alert] extra nginx on $port did not quit in time\n";
            kill 'KILL', -$pid;
            _reap($pid, 5);
        }

        my $sr = "$C{servroot}/extra-$port";
        $logs .= _slurp("$sr/logs/error.log") . _slurp("$sr/logs/stderr.log");
    }

    return $logs;
}


# redis_start($port, @args): a redis-server of the test's own on
# 127.0.0.1:$port (no persistence, @args added to its command line),
# waited for; stopped by redis_stop($port) or at exit.
sub redis_start {
    my ($port, @args) = @_;

    my $dir = "$ROOT/t/servroot/redis-$port";
    make_path($dir);

    system('redis-server', '--bind', '127.0.0.1', '--port', $port,
           '--save', '', '--appendonly', 'no', '--daemonize', 'yes',
           '--pidfile', "$dir/redis.pid", '--dir', $dir,
           '--logfile', "$dir/redis.log", @args) == 0
        or die "redis-server on $port did not start\n";

    $REDIS{$port} = "$dir/redis.pid";

    for (1 .. 200) {
        return 1 if (redis_cli($port, 'PING') // '') =~ /PONG/
                    || (redis_cli($port, 'PING') // '') =~ /NOAUTH/;
        sleep 0.02;
    }

    die "redis-server on $port does not answer\n";
}


sub redis_stop {
    my ($port) = @_;

    my $pidfile = delete $REDIS{$port} or return;
    my ($pid) = _slurp($pidfile) =~ /(\d+)/ or return;

    kill 'CONT', $pid;
    kill 'TERM', $pid;

    for (1 .. 250) {
        return 1 unless kill 0, $pid;
        sleep 0.02;
    }

    kill 'KILL', $pid;
    return 1;
}


# redis_cli($port, @command): redis-cli's output (raw), or undef.
sub redis_cli {
    my ($port, @cmd) = @_;

    my $pid = open(my $fh, '-|') // return undef;

    if ($pid == 0) {
        open(STDERR, '>', '/dev/null');
        { exec 'redis-cli', '-h', '127.0.0.1', '-p', $port, @cmd }
        POSIX::_exit(127);
    }

    local $/;
    my $out = <$fh>;
    close $fh;

    return $out;
}


sub mock_default          { LLMMock::default_handler(@_) }
sub mock_openai           { LLMMock::openai_chat(@_) }
sub mock_openai_stream    { LLMMock::openai_stream(@_) }
sub mock_openai_embeddings { LLMMock::openai_embeddings(@_) }
sub mock_anthropic        { LLMMock::anthropic_message(@_) }
sub mock_anthropic_stream { LLMMock::anthropic_stream(@_) }
sub mock_gemini           { LLMMock::gemini_content(@_) }
sub mock_gemini_stream    { LLMMock::gemini_stream(@_) }


# --- servroot and configuration -------------------------------------------

sub _reset_servroot {
    my $sr = $C{servroot};

    die "refusing to empty \"$sr\"\n" unless $sr =~ m{/t/servroot/[^/]+\z};

    remove_tree($sr, { keep_root => 1 }) if -d $sr;
    make_path(map { "$sr/$_" } qw(conf logs html tmp), { mode => 0755 });

    # the mock's files, created here so that they exist even when unused
    for my $f (qw(mock.log mock.jsonl mock.err)) {
        open(my $fh, '>', "$sr/logs/$f") or die "create $sr/logs/$f: $!\n";
    }
}


# "--- user_files": ">>> path" lines each followed by the file's content, or
# (eval) [[path, content], ...] or { path => content }. Paths are relative
# to the servroot (the nginx prefix).
sub _write_user_files {
    my ($b) = @_;

    my $v = _val($b, 'user_files') // return;
    my @files;

    if (ref $v eq 'HASH') {
        @files = map { [$_, $v->{$_}] } sort keys %$v;

    } elsif (ref $v eq 'ARRAY') {
        @files = map { ref $_ eq 'ARRAY' ? $_ : [$_, ''] } @$v;

    } else {
        my (undef, @parts) = split /^>>>[ \t]*(\S+)[ \t]*\n/m, $v;
        while (@parts) {
            my ($path, $content) = splice(@parts, 0, 2);
            push @files, [$path, $content // ''];
        }
    }

    for my $f (@files) {
        my ($path, $content) = @$f;

        die "--- user_files: bad path \"$path\"\n"
            if $path =~ m{\A/|(?:\A|/)\.\.(?:/|\z)};

        my $full = "$C{servroot}/$path";

        chmod 0755, make_path(dirname($full));

        open(my $fh, '>', $full) or die "write $full: $!\n";
        binmode $fh;
        print $fh $content // '';
        close $fh or die "write $full: $!\n";

        chmod 0644, $full;
    }
}


sub _write_conf {
    my ($b) = @_;

    my $no_module = $C{no_module} || exists $b->{no_module};
    my $workers   = _opt($b, 'workers') // 2;
    my $level     = _opt($b, 'log_level') // $C{log_level};

    my $text = sub {
        my $v = _val($b, $_[0]);
        return defined $v ? $v : '';
    };

    my $conf = join "\n",
        '# generated by Test::LLM::Nginx for "' . $b->name . '"',
        ($no_module ? () : "load_module $C{module};"),
        ($> == 0 ? 'user root root;' : ()),
        "worker_processes $workers;",
        'master_process on;',
        'daemon off;',
        "error_log logs/error.log $level;",
        'pid logs/nginx.pid;',
        '',
        $text->('main_config'),
        'events {',
        '    worker_connections 4096;',
        '}',
        '',
        'http {',
        '    access_log logs/access.log;',
        '    default_type text/plain;',
        '    client_body_temp_path tmp/client_body;',
        '    proxy_temp_path tmp/proxy;',
        '    fastcgi_temp_path tmp/fastcgi;',
        '    uwsgi_temp_path tmp/uwsgi;',
        '    scgi_temp_path tmp/scgi;',
        '',
        $text->('http_config'),
        '    server {',
        "        listen 127.0.0.1:$C{port};",
        '        server_name localhost;',
        '',
        $text->('config'),
        '    }',
        '}',
        '';

    open(my $fh, '>', "$C{servroot}/conf/nginx.conf")
        or die "write nginx.conf: $!\n";
    print $fh $conf;
    close $fh or die "write nginx.conf: $!\n";
}


# --- processes -----------------------------------------------------------------

sub _start_mock {
    my ($b) = @_;

    my $handler = exists $b->{mock} ? _val($b, 'mock')
                                    : \&LLMMock::default_handler;
    my $logdir  = "$C{servroot}/logs";

    my $pid = fork // die "fork() failed: $!\n";

    if ($pid == 0) {
        $SIG{INT} = $SIG{TERM} = 'DEFAULT';

        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>>', "$logdir/mock.err");
        open(STDERR, '>&', \*STDOUT);

        eval {
            LLMMock::serve(listeners => \@MOCK_SOCKS, handler => $handler,
                           logdir => $logdir);
        };

        print STDERR "mock: $@";
        POSIX::_exit(1);
    }

    $MOCK_PID = $pid;
}


sub _stop_mock {
    my $pid = $MOCK_PID or return;

    kill 'TERM', $pid;

    if (!defined _reap($pid, 3)) {
        kill 'KILL', -$pid, $pid;
        _reap($pid, 5);
    }

    $MOCK_PID = undef;
}


# Starts nginx in the foreground (its own process group) and waits until
# its pid file names it: by then its listening sockets are open. Returns
# false when nginx exits first or does not get there in time.
sub _start_nginx {
    my ($ctx) = @_;

    my $sr      = $C{servroot};
    my $pidfile = "$sr/logs/nginx.pid";

    my $pid = fork // die "fork() failed: $!\n";

    if ($pid == 0) {
        POSIX::setpgid(0, 0);

        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>>', "$sr/logs/stderr.log");
        open(STDERR, '>&', \*STDOUT);

        { exec { $C{nginx} } $C{nginx}, '-p', "$sr/", '-c', 'conf/nginx.conf' }

        print STDERR "exec $C{nginx} failed: $!\n";
        POSIX::_exit(127);
    }

    $NGINX_PID = $pid;

    my $deadline = time + $START_TIMEOUT;

    while (time < $deadline) {
        my $status = _reap($pid, 0);

        if (defined $status) {
            $ctx->{exit_status} = $status;
            $NGINX_PID = undef;
            return 0;
        }

        if (open(my $fh, '<', $pidfile)) {
            my $line = <$fh> // '';
            return 1 if $line =~ /\A(\d+)\n/ && $1 == $pid;
        }

        sleep 0.005;
    }

    $ctx->{start_error} = "nginx did not start within ${START_TIMEOUT}s";

    _stop_nginx($ctx);

    return 0;
}


# QUIT (graceful), then TERM, then KILL to the whole process group; each
# wait bounded. Records how it went for the "logs are clean" check.
sub _stop_nginx {
    my ($ctx) = @_;

    my $pid = $NGINX_PID or return;

    my ($how, $status) = ('quit');

    kill 'QUIT', $pid;
    $status = _reap($pid, $QUIT_TIMEOUT);

    if (!defined $status) {
        $how = 'term';
        kill 'TERM', -$pid;
        $status = _reap($pid, 3);
    }

    if (!defined $status) {
        $how = 'kill';
        kill 'KILL', -$pid;
        $status = _reap($pid, 5);
    }

    $ctx->{stopped_by}  = $how;
    $ctx->{exit_status} = $status;

    $NGINX_PID = undef;
}


# Waits up to $secs for our child $pid; returns its wait status, or undef.
sub _reap {
    my ($pid, $secs) = @_;

    my $deadline = time + $secs;

    for (;;) {
        my $r = waitpid($pid, WNOHANG);

        return $? if $r == $pid;
        return 0 if $r < 0;             # not our child (any more)
        return undef if time >= $deadline;

        sleep 0.005;
    }
}


sub _cleanup {
    return unless $$ == $MAIN_PID;

    stop_extra_nginx();

    if (my $pid = $NGINX_PID) {
        kill 'QUIT', $pid;
        if (!defined _reap($pid, 2)) {
            kill 'KILL', -$pid;
            _reap($pid, 5);
        }
        $NGINX_PID = undef;
    }

    _stop_mock();
}


END {
    _cleanup();
    if ($$ == $MAIN_PID) { redis_stop($_) for keys %REDIS }
    remove_tree($C{servroot}) if $C{temporary} && $$ == $MAIN_PID;
}


sub _log_size {
    return -s "$C{servroot}/logs/error.log" || 0;
}


sub _slurp {
    my ($file) = @_;

    open(my $fh, '<', $file) or return '';
    binmode $fh;
    local $/;

    return scalar <$fh> // '';
}


sub _collect_logs {
    my ($ctx) = @_;

    my $logs = "$C{servroot}/logs";

    $ctx->{error_log}  = _slurp("$logs/error.log");
    $ctx->{stderr}     = _slurp("$logs/stderr.log");
    $ctx->{access_log} = _slurp("$logs/access.log");
    $ctx->{mock_log}   = _slurp("$logs/mock.log");
    $ctx->{mock_err}   = _slurp("$logs/mock.err");

    $ctx->{startup_text} = $ctx->{stderr} . $ctx->{error_log};

    # one slice of the error log per request, from its start to the next's
    my @off = @{ $ctx->{offsets} };

    for my $i (0 .. $#off) {
        my $end = $i < $#off ? $off[$i + 1] : length $ctx->{error_log};
        push @{ $ctx->{slices} }, substr($ctx->{error_log}, $off[$i],
                                         $end - $off[$i]);
    }
}


# --- assertions ---------------------------------------------------------------

sub _no_response {
    my ($res) = @_;

    return 'no response: ' . ($res->{error} // 'not sent');
}


sub _check_status {
    my ($res, $want) = @_;

    return (0, _no_response($res)) unless defined $res->{status};

    my @d;

    push @d, "status $res->{status}, expected $want"
        if $res->{status} ne $want;
    push @d, "response error: $res->{error}" if $res->{error};
    push @d, 'body: ' . _show($res->{body}) if @d;

    return (!@d, @d);
}


sub _check_body {
    my ($res, $want) = @_;

    return (0, _no_response($res)) unless defined $res->{status};
    return 1 if $res->{body} eq $want;

    return (0, '     got: ' . _show($res->{body}),
               'expected: ' . _show($want));
}


# Header expectations: lines "Name: value" (exact), "!Name" (absent), or
# with $like "Name: regex"; eval may give a hash { Name => value } where
# undef means absent.
sub _header_specs {
    my ($v, $like) = @_;

    return () unless defined $v;

    my @specs;

    if (ref $v eq 'HASH') {
        for my $name (sort keys %$v) {
            my $want = $v->{$name};
            push @specs, { name => $name, want => $want, like => $like };
        }

    } else {
        for my $l (split /\n/, $v) {
            next unless $l =~ /\S/;

            if ($l =~ /\A\s*!\s*([^:\s]+)\s*\z/) {
                push @specs, { name => $1, want => undef, like => $like };
                next;
            }

            my ($name, $want) = $l =~ /\A\s*([^:\s]+)\s*:\s?(.*?)\s*\z/
                or die "bad header expectation \"$l\"\n";

            push @specs, { name => $name, want => $want, like => $like };
        }
    }

    for my $s (@specs) {
        $s->{text} = !defined $s->{want} ? "!$s->{name}"
                   : $like ? "$s->{name} =~ /$s->{want}/"
                   : "$s->{name}: $s->{want}";
        $s->{re} = qr/$s->{want}/ if $like && defined $s->{want};
    }

    return @specs;
}


sub _check_header {
    my ($res, $spec) = @_;

    return (0, _no_response($res)) unless defined $res->{status};

    my @got = Test::LLM::Client::header($res, $spec->{name});

    if (!defined $spec->{want}) {
        return 1 unless @got;
        return (0, "$spec->{name} is present: " . join(' | ', @got));
    }

    return (0, "no $spec->{name} header; headers:\n"
               . _show_headers($res)) unless @got;

    for my $g (@got) {
        return 1 if $spec->{like} ? $g =~ $spec->{re} : $g eq $spec->{want};
    }

    return (0, "$spec->{name}: " . join(' | ', map { _show($_) } @got));
}


sub _parse_status_counts {
    my ($spec) = @_;

    my %want;

    for my $t (split ' ', $spec) {
        my ($status, $lo, $hi) = $t =~ /\A(\d{3}|error)=(\d+)(?:\.\.(\d+))?\z/
            or die "bad --- status_counts item \"$t\" (want 200=10, "
                   . "429=5..8 or error=0)\n";
        $want{$status} = [$lo, $hi // $lo];
    }

    return \%want;
}


sub _check_status_counts {
    my ($ctx, $want) = @_;

    my (%got, @errors);

    for my $res (@{ $ctx->{responses} }) {
        if (!defined $res->{status} || $res->{error}) {
            $got{error}++;
            push @errors, $res->{error} // 'no response';
        } else {
            $got{ $res->{status} }++;
        }
    }

    my @bad;

    for my $s (sort keys %{ { %got, %$want } }) {
        my $n = $got{$s} // 0;
        my ($lo, $hi) = @{ $want->{$s} || [0, 0] };
        push @bad, $s if $n < $lo || $n > $hi;
    }

    return 1 unless @bad;

    my $show = join ' ', map { "$_=$got{$_}" } sort keys %got;
    my @d    = ("got $show; wrong: @bad");

    push @d, 'first errors: ' . join('; ', (@errors)[0 .. _min(2, $#errors)])
        if @errors;

    return (0, @d);
}


sub _min { $_[0] < $_[1] ? $_[0] : $_[1] }


# Patterns of a log section: each non-empty line (a substring, or with
# $regex a regex), or eval'd strings / qr// / lists of them.
sub _patterns {
    my ($v, $regex) = @_;

    return () unless defined $v;
    return map { _patterns($_, $regex) } @$v if ref $v eq 'ARRAY';
    return $v if ref $v eq 'Regexp';

    return map { $regex ? qr/$_/m : $_ } grep { /\S/ } split /\n/, $v;
}


sub _regex {
    my ($v) = @_;

    return $v if ref $v eq 'Regexp';

    chomp(my $s = $v);

    return qr/$s/s;
}


sub _check_text {
    my ($text, $pat, $want, $what) = @_;

    $text //= '';

    my $found = ref $pat ? $text =~ $pat : index($text, $pat) >= 0;

    return 1 if $found ? $want : !$want;

    return (0, _show_pattern($pat) . ($want ? " not found in $what"
                                            : " found in $what"),
               $want ? _mock_summary($text, $what)
                     : _matching_lines($text, $pat));
}


# For a mock_log miss: the request lines the mock did receive.
sub _mock_summary {
    my ($text, $what) = @_;

    return () unless $what eq 'the mock_log';

    my @req = $text =~ /^### mock request \d+[^\n]*\n([^\n]*)/mg;

    return 'the mock received ' . @req . ' requests'
           . (@req ? ":\n  " . join("\n  ", @req[0 .. _min(9, $#req)]) : '');
}


sub _matching_lines {
    my ($text, $pat) = @_;

    my @l = grep { ref $pat ? $_ =~ $pat : index($_, $pat) >= 0 }
            split /\n/, $text;

    return 'matching: ' . join("\n  ", @l[0 .. _min(4, $#l)]) if @l;
    return ();
}


# The block's own sanity: no [alert]/[crit]/[emerg], no sanitizer report,
# no process killed by a signal, a graceful stop, a quiet mock.
sub _check_clean {
    my ($ctx) = @_;

    my $b     = $ctx->{block};
    my $alert = exists $b->{allow_alert};
    my $die   = exists $b->{must_die};

    my @levels = ($alert ? () : qw(alert crit), $die ? () : 'emerg');
    my $lv     = join '|', @levels;
    my @bad;

    for my $l (split /\n/, $ctx->{stderr} . "\n" . $ctx->{error_log}) {
        my $level_hit = @levels
            && $l =~ m{^(?:\d{4}/\d\d/\d\d \d\d:\d\d:\d\d |nginx: )\[(?:$lv)\]};

        # a worker killed by KILL or TERM (on purpose) is fine with
        # --- allow_alert; any other signal is a crash
        my $crash = $l =~ /exited on signal (\d+)/ && ($1 != 9 && $1 != 15
                                                        || !$alert);

        # (a sanitizer that halts makes the worker exit with code 1)
        my $exit = !$alert && $l =~ /process \d+ exited with (?:fatal )?code
                                      [1-9]/x;

        my $san = $l =~ /AddressSanitizer|LeakSanitizer|ThreadSanitizer|
                         MemorySanitizer|UndefinedBehaviorSanitizer|
                         runtime\ error:|core\ dumped/x;

        push @bad, $l if $level_hit || $crash || $exit || $san;
    }

    my $st = $ctx->{exit_status};

    if (defined $st && ($st & 127) && ($ctx->{stopped_by} // '') ne 'kill') {
        push @bad, 'nginx master died on signal ' . ($st & 127);
    }

    if (!$die && $ctx->{started} && defined $st && !($st & 127) && $st >> 8) {
        push @bad, 'nginx master exited with code ' . ($st >> 8);
    }

    if (($ctx->{stopped_by} // 'quit') ne 'quit' && !exists $b->{allow_hard_stop})
    {
        push @bad, "nginx did not exit within ${QUIT_TIMEOUT}s of SIGQUIT "
                   . "(stopped by $ctx->{stopped_by}; a timer not "
                   . "cancelable or a stuck request?)";
    }

    push @bad, "start: $ctx->{start_error}" if $ctx->{start_error};

    push @bad, map { "mock: $_" } grep { /\S/ } split /\n/, $ctx->{mock_err};

    return 1 unless @bad;

    my $more = @bad > 20 ? "\n... and " . (@bad - 20) . " more" : '';

    return (0, join("\n", @bad[0 .. _min(19, $#bad)]) . $more);
}


# --- messages -----------------------------------------------------------------

sub _startup_errors {
    my ($ctx) = @_;

    my @l = grep { /\[(?:emerg|alert|crit|error)\]|failed|exec/ }
            split /\n/, ($ctx->{stderr} // '') . "\n"
                        . ($ctx->{error_log} // '');

    push @l, $ctx->{start_error} if $ctx->{start_error};

    return @l ? join("\n", @l[0 .. _min(9, $#l)]) : '(no message)';
}


sub _diag_block {
    my ($ctx) = @_;

    my @l = grep { /\[(?:warn|error|crit|alert|emerg)\]/ }
            split /\n/, $ctx->{stderr} . "\n" . $ctx->{error_log};

    my $msg = "servroot: $C{servroot} (conf/nginx.conf, logs/)";

    if (@l) {
        $msg .= "\nerror log, warn and above:\n  "
                . join("\n  ", @l[0 .. _min(14, $#l)]);
        $msg .= "\n  ... " . (@l - 15) . ' more' if @l > 15;
    }

    Test::Builder->new->diag($msg);
}


sub _show {
    my ($s) = @_;

    return 'undef' unless defined $s;

    my $cut = length $s > 600;

    $s = substr($s, 0, 600) if $cut;
    $s =~ s/([^\x20-\x7e\n])/$1 eq "\r" ? '\r' : sprintf('\x%02x', ord $1)/ge;
    $s =~ s/\n/\\n/g;

    return "\"$s\"" . ($cut ? '...' : '');
}


sub _show_pattern {
    my ($p) = @_;

    my $s = "$p";

    # a regex shows as /source/, without Perl's (?^flags: ) wrapper
    $s = ref $p ? '/' . ($s =~ s/\A\(\?\^\w*:(.*)\)\z/$1/sr) . '/' : "\"$s\"";

    $s = substr($s, 0, 77) . '...' if length $s > 80;

    return $s;
}


sub _show_headers {
    my ($res) = @_;

    return join "\n", map { "  $_->[0]: $_->[1]" } @{ $res->{headers} };
}


1;
