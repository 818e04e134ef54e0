# The settles script of src/ngx_http_llm_rstore_lua.c, run by redis-server
# itself (taken from the C source): the settles of one account and tier
# made in one event-loop iteration go to Redis as one call, and must
# leave Redis exactly as the settle script leaves it when each goes
# alone: refunds in the reservation's slot, never below zero, an excess
# into the current slot once the reservation's slot has left the window,
# the running total ("t", "c", "o") and the keys' expiry.

use strict;
use warnings;

use Test::More;

use lib 't/lib';
use Test::LLM::Lua;

my $port = script_redis_port();

my %lua = lua_scripts('src/ngx_http_llm_rstore_lua.c', '',
                       qw(admit settle settles));

my $P = "t100-$$-" . time;

sub redis { redis_out($port, @_) }

sub key { "$P:{acct:$_[0]}:w:$_[1]" }

# Redis's clock, ms
sub now { redis_now_ms($port) }

# the windows of the tier: [name, period]; a month is period 0
my @W = (['tokens:1h', 3600000], ['input_tokens:1d', 86400000],
         ['cost:1mo', 0]);

# reservations through the admission script: one of "need" per window
sub reserve {
    my ($acct, @need) = @_;
    my @keys = ("$P:{acct:$acct}:conc", "$P:{acct:$acct}:cool",
                map { key($acct, $_->[0]) } @W);
    my @args = (0, '', 60000, 0, 0,
                map { ($W[$_][1], 1000000000, $need[$_]) } 0 .. $#W);
    my @r = split /\n/, redis('EVAL', $lua{admit}, scalar @keys, @keys,
                              @args);
    die "not admitted: @r" if $r[0] != 0;
}

# one settle alone: only the windows it changes, as the node sends it
sub settle {
    my ($acct, $t0, @delta) = @_;
    my (@keys, @args);
    for my $i (0 .. $#W) {
        next unless $delta[$i];
        push @keys, key($acct, $W[$i][0]);
        push @args, $W[$i][1], $delta[$i];
    }
    return unless @keys;
    redis('EVAL', $lua{settle}, scalar @keys, @keys, $t0, @args);
}

# several in one call
sub settles {
    my ($acct, @s) = @_;
    my @keys = map { key($acct, $_->[0]) } @W;
    my @args = map { $_->[1] } @W;
    push @args, @$_ for @s;
    return redis('EVAL', $lua{settles}, scalar @keys, @keys, @args);
}

# a window's state: every field, and whether it expires
sub state {
    my ($acct) = @_;
    return join ' | ', map {
        my %h = split /\n/, redis('HGETALL', key($acct, $_->[0]));
        my $ttl = redis('PTTL', key($acct, $_->[0]));
        join(',', map { "$_=$h{$_}" } sort keys %h)
            . ($ttl > 0 ? ' ttl' : " ttl$ttl");
    } @W;
}

# the same reservations and settles one by one (s-NAME) and in one call
# (b-NAME): the same state afterwards
sub same {
    my ($name, $reserve, @s) = @_;
    for my $acct ("s-$name", "b-$name") {
        reserve($acct, @$_) for @$reserve;
    }
    settle("s-$name", @$_) for @s;
    is(settles("b-$name", @s), 1, "$name: the settles script answers 1");
    my ($a, $b) = (state("s-$name"), state("b-$name"));
    is($b, $a, "$name: the same state as one by one ($b)");
}

my $now = now();

# three reservations; refunds, an excess, untouched windows (0)
same('basic', [[100, 80, 5], [100, 80, 5], [100, 80, 5]],
     [$now, -60, -40, -3], [$now, 0, 10, 0], [$now, 250, 0, 2]);

# never below zero, in any window
same('floor', [[100, 80, 5]],
     [$now, -90, -70, -4], [$now, -1000000, -1000000, -1000000]);

# a reservation 30 minutes old: its slot is still in the hour and the
# day (refunds go there, to a slot holding nothing: it stays at zero),
# and 2 hours old: out of the hour, an excess goes to the current slot,
# a refund is dropped
same('old', [[100, 80, 5]],
     [$now - 1800000, -50, -20, -1], [$now - 7200000, 40, -10, 1],
     [$now - 7200000, -30, 0, 0]);

# a settle emptying every window: the running total goes, the oldest
# slot moves on
same('empty', [[100, 80, 5]],
     [$now, -100, -80, -5], [$now, 0, 0, 0]);

# nothing reserved before: an excess alone makes the key, with expiry
same('fresh', [], [$now, 7, 0, 0], [$now, 5, 3, 1]);

# an older slot holding the oldest count is emptied after the current
# slot was changed in the same call: the ring is counted again, with the
# current slot's new count in it
same('recount', [[100, 80, 5]],
     [$now - 1800000, 30, 20, 0], [$now, 10, 5, 1],
     [$now - 1800000, -30, -20, 0], [$now, -5, 0, 0]);

# one settle in the settles script is the settle script
same('one', [[100, 80, 5]], [$now, -25, 15, -2]);

done_testing();
