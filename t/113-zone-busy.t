# A full zone answers 503 "every entry is busy" only when every entry is
# held by a request in flight: entries of tiers of different sizes (one
# slab size class each), busy entries at the tail of the LRU queue, and
# concurrency leases must not make it say so while idle entries exist.

use strict;
use warnings;

use lib 't/lib';
use Test::LLM::Nginx;
use Test::LLM::Client ();
use POSIX ();

# GET "path" once for each address (an anonymous client each, by
# X-Forwarded-For), "conc" at once: their statuses counted ("200=400")
sub clients {
    my ($path, $conc, @addrs) = @_;
    my @ex = map {
        { %{ Test::LLM::Client::build_request("GET $path",
                 more_headers => "X-Forwarded-For: $_") },
          timeout => 10 }
    } @addrs;
    my @res = Test::LLM::Client::exchange_all(
        port => $ENV{TEST_NGINX_SERVER_PORT}, concurrency => $conc,
        exchanges => \@ex);
    return Test::LLM::Client::status_counts(@res);
}

sub addrs {
    my ($net, $from, $to) = @_;
    return map { sprintf "10.%d.%d.%d", $net, $_ >> 8 & 255, $_ & 255 }
           $from .. $to;
}

# a shuffle that is the same in every run
sub shuffled {
    my @a = @_;
    srand(113);
    for (my $i = $#a; $i > 0; $i--) {
        my $j = int rand($i + 1);
        @a[$i, $j] = @a[$j, $i];
    }
    return @a;
}

our $Locations = <<'_EOC_';
set_real_ip_from 127.0.0.1;
real_ip_header X-Forwarded-For;
location = /small {
    llm_gateway on;
    llm_anonymous_tier small;
    proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/plain;
}
location = /big {
    llm_gateway on;
    llm_anonymous_tier big;
    proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/plain;
}
location = /plain {
    return 200 "plain\n";
}
_EOC_

run_tests();

__DATA__

=== TEST 1: a 256 KB zone full of idle entries of a tier of one window, touched in a shuffled order; then 300 new clients of a tier of four windows are all admitted (before the fix: an entry of one window was a 256-byte slab chunk, one of four a 512-byte one, a size class of its own; the 16 idle entries evicted for one freed no page, and 26 of the 300 got 503 "every entry is busy")
--- workers: 1
--- http_config
llm_zone llm:256k;
llm_tier small requests=100000/m;
llm_tier big requests=100000/m tokens=4000000000/m
             input_tokens=4000000000/m cost=40000/m;
--- config eval: $::Locations
--- request
GET /plain
--- response_body
plain
--- check eval
sub {
    my @small = ::addrs(1, 1, 2000);
    my $fill = ::clients('/small', 8, @small);
    my $touch = ::clients('/small', 1, ::shuffled(@small));
    my $big = ::clients('/big', 1, ::addrs(2, 1, 300));
    my $log = Test::LLM::Nginx::errlog();
    my $busy = () = $log =~ /every entry is busy/g;
    Test::More::diag("fill $fill, touch $touch, big $big, busy lines $busy");
    return (0, "fill: $fill") unless $fill eq '200=2000';
    return (0, "touch: $touch") unless $touch eq '200=2000';
    return (0, "the new clients of the other tier: $big")
        unless $big eq "200=300";
    return (0, "said every entry is busy") if $busy;
    return (0, "no eviction logged") unless $log =~ /is full, evicting/;
    return 1;
}
--- timeout: 30



=== TEST 2: 2,000 clients of a tier with concurrency through a 256 KB zone, 8 at once, then 150 at once, each holding its slot for a second: all admitted (before the fix: a concurrency lease was a 16-byte chunk, a size class of its own, whose page went back to the zone whenever no request held a lease; once entries had taken every page, evicting one made no room for a lease, and 827 to 974 of the 2,000 got 503 "every entry is busy")
--- workers: 1
--- http_config
llm_zone llm:256k;
llm_tier conc requests=100000/m concurrency=5;
--- config
set_real_ip_from 127.0.0.1;
real_ip_header X-Forwarded-For;
location = /slow {
    llm_gateway on;
    llm_anonymous_tier conc;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /fill {
    llm_gateway on;
    llm_anonymous_tier conc;
    proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/plain;
}
location = /plain {
    return 200 "plain\n";
}
--- mock eval
sub { return { delay => 1, body => "{}" } }
--- request
GET /plain
--- response_body
plain
--- check eval
sub {
    my $fill = ::clients('/fill', 8, ::addrs(1, 1, 2000));
    my $slow = ::clients('/slow', 150, ::addrs(2, 1, 150));
    my $log = Test::LLM::Nginx::errlog();
    Test::More::diag("fill $fill, slow $slow");
    return (0, "fill: $fill") unless $fill eq '200=2000';
    return (0, "in flight at once: $slow") unless $slow eq '200=150';
    return (0, "said every entry is busy") if $log =~ /every entry is busy/;
    return 1;
}
--- timeout: 30



=== TEST 3: 24 requests in flight hold their entries while the 32 KB zone fills with idle clients, which are then all used again, so that the 24 busy entries are the least recently used; a new client is admitted (before the fix: the eviction looked at 8 entries at the tail after the insertion's own look at 8, found them busy and answered 503 "every entry is busy")
--- workers: 1
--- log_level: info
--- http_config
llm_zone llm:32k;
llm_tier conc requests=100000/m concurrency=5;
llm_tier idle requests=100000/m;
--- config
set_real_ip_from 127.0.0.1;
real_ip_header X-Forwarded-For;
location = /slow {
    llm_gateway on;
    llm_anonymous_tier conc;
    proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
}
location = /fill {
    llm_gateway on;
    llm_anonymous_tier idle;
    proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/plain;
}
location = /plain {
    return 200 "plain\n";
}
--- mock eval
sub { return { delay => 4, body => "{}" } }
--- request
GET /plain
--- response_body
plain
--- check eval
sub {
    my $out = Test::LLM::Nginx::servroot() . '/slow.txt';
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        eval {
            my $s = ::clients('/slow', 24, ::addrs(1, 1, 24));
            open(my $fh, '>', $out) or die;
            print $fh $s;
            close $fh;
        };
        POSIX::_exit(0);
    }
    select(undef, undef, undef, 0.5);

    # idle clients until the zone is full: the first eviction is logged
    my @idle = ::addrs(2, 1, 400);
    my $k;
    for my $i (0 .. $#idle) {
        my $r = Test::LLM::Nginx::http_request('GET /fill',
                    more_headers => "X-Forwarded-For: $idle[$i]");
        return (0, "fill $idle[$i]: $r->{status}") unless $r->{status} == 200;
        if (Test::LLM::Nginx::errlog() =~ /is full, evicting/) {
            $k = $i;
            last;
        }
    }
    return (0, "the zone did not fill") unless defined $k;

    # the survivors (all but the first) used again, then new clients
    my $again = ::clients('/fill', 1, @idle[1 .. $k]);
    my $new = ::clients('/fill', 1, ::addrs(3, 1, 50));
    waitpid($pid, 0);
    my $slow = do { local (@ARGV, $/) = ($out); <> } // 'none';
    my $log = Test::LLM::Nginx::errlog();
    Test::More::diag("zone full at $k idle clients; again $again, "
                     . "new $new, slow $slow");
    return (0, "in flight: $slow") unless $slow eq '200=24';
    return (0, "used again: $again") unless $again eq "200=$k";
    return (0, "new clients: $new") unless $new eq '200=50';
    return (0, "said every entry is busy") if $log =~ /every entry is busy/;
    return 1;
}
--- timeout: 30



=== TEST 4: TEST 1 with llm_redis unreachable and on_error=local, so that the zone decides every admission: none answered 503 store_error (before the fix: 26 of the 300, and one "every entry is busy" line for them all, the error being said once a minute per worker)
--- workers: 1
--- log_level: info
--- http_config
llm_zone llm:256k;
llm_redis 127.0.0.1:$TEST_NGINX_DEAD_PORT on_error=local;
llm_tier small requests=100000/m;
llm_tier big requests=100000/m tokens=4000000000/m
             input_tokens=4000000000/m cost=40000/m;
--- config eval: $::Locations
--- request
GET /plain
--- response_body
plain
--- check eval
sub {
    my @small = ::addrs(1, 1, 2000);
    my $fill = ::clients('/small', 8, @small);
    my $touch = ::clients('/small', 1, ::shuffled(@small));
    my $big = ::clients('/big', 1, ::addrs(2, 1, 300));
    my $log = Test::LLM::Nginx::errlog();
    my $local = () = $log =~ /on_error applies/g;
    Test::More::diag("fill $fill, touch $touch, big $big, "
                     . "$local decided by the zone");
    return (0, "fill: $fill") unless $fill eq '200=2000';
    return (0, "touch: $touch") unless $touch eq '200=2000';
    return (0, "the new clients of the other tier: $big")
        unless $big eq "200=300";
    return (0, "said every entry is busy") if $log =~ /every entry is busy/;
    return (0, "Redis decided") unless $local >= 4300;
    return 1;
}
--- timeout: 60
