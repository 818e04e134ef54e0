# Review 3 (outage replay rewrite): the replay script of
# src/ngx_http_llm_rstore_lua.c run by redis-server itself, the way
# t/092-redis-scripts.t runs it: usage goes to the slot it was counted
# in, what has left a window is dropped there, and a time ahead of
# Redis's clock (a node's guess) is the current slot (SPEC 9: nothing it
# accounts is lost).

use strict;
use warnings;

use Test::More;

use lib 't/lib';
use Test::LLM::Lua;

my $port = script_redis_port();

my %lua = lua_scripts('src/ngx_http_llm_rstore_lua.c', '',
                       qw(settle replay));

my $P = "t097-$$-" . time;

sub redis { redis_out($port, @_) }

sub now_ms { redis_now_ms($port) }

sub replay {
    my ($acct, $mark, $t0, @w) = @_;
    my (@keys, @args);
    while (my ($name, $period, $n) = splice @w, 0, 3) {
        push @keys, "$P:{acct:$acct}:w:$name";
        push @args, $period, $n;
    }
    return redis('EVAL', $lua{replay}, 1 + @keys,
                 "$P:{acct:$acct}:replay:$mark", @keys, 60000, $t0, @args);
}

sub total {
    my %h = split /\n/, redis('HGETALL', "$P:{acct:$_[0]}:w:$_[1]");
    my $s = 0;
    $s += $h{$_} for grep { /^\d+$/ } keys %h;
    return $s;
}

my $now = now_ms();

# 1. The replay script adds usage to the slot it was counted in, and
#    drops what has left the window: a reservation counted locally 2
#    minutes ago no longer counts in a minute window (review3 asked for
#    the settle script's rule, an excess into the current slot; the
#    node does that instead, stamping what a settle adds with the time
#    it was known: t/094 TEST 8), but still in the day window.
replay('r1', 'a', $now - 120000, 'tokens:1m', 60000, 50, 'tokens:1d',
       86400000, 50);
is(total('r1', 'tokens:1m') . ' ' . total('r1', 'tokens:1d'), '0 50',
   'usage replayed into a slot that has left the minute window is '
   . 'dropped there, counted in the day window');

# 2. The same for a calendar month: last month's usage is not this
#    month's; an excess known this month is stamped this month.
my $last_month = $now - 40 * 86400000;
replay('r2', 'a', $last_month, 'cost:1mo', 0, 5000);
replay('r2', 'b', $now, 'cost:1mo', 0, 700);
is(total('r2', 'cost:1mo'), 700,
   'last month\'s usage is not replayed into this month; this '
   . 'month\'s is');

# 3. Usage counted locally by a node whose idea of Redis's clock is a few
#    seconds ahead (skew unknown: no admission answered since the worker
#    started, e.g. after a reload during the outage, so "at" is the
#    node's own clock): the replay script drops it, although it is not
#    old usage but this slot's.
replay('r3', 'a', $now + 7000, 'tokens:1m', 60000, 50, 'tokens:1d',
       86400000, 50);
is(total('r3', 'tokens:1m') . ' ' . total('r3', 'tokens:1d'), '50 50',
   'usage stamped a little ahead of Redis\'s clock is counted (in the '
   . 'current slot), not dropped');

redis('DEL', map { "$P:{acct:$_->[0]}:$_->[1]" }
      [r1 => 'w:tokens:1m'], [r1 => 'w:tokens:1d'], [r1 => 'replay:a'],
      [r2 => 'w:cost:1mo'], [r2 => 'replay:a'], [r2 => 'replay:b'],
      [r3 => 'w:tokens:1m'], [r3 => 'w:tokens:1d'], [r3 => 'replay:a']);

done_testing();
