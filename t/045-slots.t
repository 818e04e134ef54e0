# Concurrency slots under faults: a client that goes away, a worker that
# crashes while it holds a slot.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Keys;
use POSIX ();
use Time::HiRes ();

our $Tiers = $Test::LLM::Keys::TIERS
    . "llm_tier solo requests=100000/m concurrency=1;\n";
our $CAROL = $Test::LLM::Keys::CAROL;

our $Gateway = <<'_EOC_';
location /v1/ {
    llm_gateway on;
    llm_default_tier solo;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
_EOC_

# the mock answers /v1/slow after 4 s and anything else at once
our $Mock = sub {
    my $r = shift;
    return $r->{path} eq '/v1/slow' ? { delay => 4, body => '{}' }
                                    : { body => '{}' };
};

sub held_then {
    my ($gap) = @_;
    my $auth = "Authorization: Bearer $CAROL";

    # hold the only slot with a slow request, and see it is held
    my $child = fork // die "fork: $!";
    if ($child == 0) {
        http_request("GET /v1/slow", more_headers => $auth, timeout => 10);
        POSIX::_exit(0);
    }

    Time::HiRes::sleep(0.5);
    my $busy = http_request("GET /v1/models", more_headers => $auth);

    return ($child, $busy);
}

run_tests();

__DATA__

=== TEST 1: a client that hangs up gives its slot back at once
--- workers: 1
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- mock eval: $::Mock
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code: 200
--- check eval
sub {
    my $auth = "Authorization: Bearer $::CAROL";

    # a slow request abandoned by its client after 0.5 s
    my $gone = http_request("GET /v1/slow", more_headers => $auth,
                            timeout => 0.5);

    Time::HiRes::sleep(0.3);
    my $r = http_request("GET /v1/models", more_headers => $auth);

    return ($r->{status} == 200,
            "after the client hung up: status $r->{status}, expected 200");
}
--- error_log
client prematurely closed connection



=== TEST 2: a crashed worker's slot is taken back at the limit
--- workers: 1
--- allow_alert
--- http_config eval: $::Tiers
--- config eval: $::Gateway
--- mock eval: $::Mock
--- request
GET /v1/models
--- more_headers eval: "Authorization: Bearer $::CAROL"
--- error_code: 200
--- check eval
sub {
    my ($child, $busy) = main::held_then();

    return (0, "the slot was not held: status $busy->{status}")
        if $busy->{status} != 429;

    my @workers = worker_pids();
    kill 'KILL', @workers;
    waitpid $child, 0;

    # the master respawns the worker; the dead one's slot must come back
    for (1 .. 50) {
        Time::HiRes::sleep(0.1);
        my @now = worker_pids();
        last if @now && "@now" ne "@workers";
    }

    # reclaiming is tried at most once a second per account
    my $r;
    for (1 .. 30) {
        $r = http_request("GET /v1/models",
                          more_headers => "Authorization: Bearer $::CAROL");
        last if $r->{status} == 200;
        Time::HiRes::sleep(0.1);
    }

    return ($r->{status} == 200,
            "3 s after the crash: status $r->{status}, expected 200");
}
--- error_log eval
[qr/took back 1 concurrency slots of exited process \d+/,
 qr/exited on signal 9/]
