# Review 3 (outage replay rewrite): checks of the Lua scripts of
# src/ngx_http_llm_rstore_lua.c run by redis-server itself, the way
# t/092-redis-scripts.t runs them.  They FAIL ON PURPOSE until the code is
# mended (SPEC 9: nothing it accounts is lost).
#
# A settle Redis cannot have run is replayed (ngx_http_llm_rstore_settled
# -> ngx_http_llm_replay_add(account, tier, t0, used - reserved)), so
# what the replay script does with that difference should be what the
# settle script would have done with it.

use strict;
use warnings;

use Test::More;

my $port = $ENV{TEST_NGINX_REDIS_PORT} || 6399;

if ((`redis-cli -p $port PING 2>/dev/null` // '') !~ /PONG/) {
    plan skip_all => "no Redis on port $port";
}

my $src = do {
    open(my $fh, '<', 'src/ngx_http_llm_rstore_lua.c') or die $!;
    local $/;
    <$fh>;
};

sub literals {
    my ($text) = @_;
    my $out = '';
    while ($text =~ /"((?:[^"\\]|\\.)*)"/g) {
        (my $s = $1) =~ s/\\n/\n/g;
        $s =~ s/\\(["\\])/$1/g;
        $out .= $s;
    }
    return $out;
}

my %chunk;
while ($src =~ /#define NGX_HTTP_LLM_LUA_(\w+)\s*\\\n(.*?[^\\])\n\n/sg) {
    $chunk{$1} = literals($2);
}
my %lua;
for my $name (qw(settle replay)) {
    my ($body) = $src =~ /ngx_http_llm_lua_$name\[\] =\n(.*?);\n/s
        or die "no script $name";
    $lua{$name} = join '', map { /^NGX_HTTP_LLM_LUA_(\w+)$/
                                 ? ($chunk{$1} // die "no chunk $1")
                                 : literals($_) } split /\n/, $body;
}

my $P = "t097-$$-" . time;

sub redis {
    open(my $fh, '-|', 'redis-cli', '-p', $port, @_) or die $!;
    local $/;
    my $out = <$fh>;
    close $fh;
    $out =~ s/\s+\z//;
    return $out;
}

sub now_ms {
    my ($s, $us) = split /\n/, redis('TIME');
    return $s * 1000 + int($us / 1000);
}

sub settle {
    my ($acct, $t0, @w) = @_;
    my (@keys, @args);
    while (my ($name, $period, $delta) = splice @w, 0, 3) {
        push @keys, "$P:{acct:$acct}:w:$name";
        push @args, $period, $delta;
    }
    return redis('EVAL', $lua{settle}, scalar @keys, @keys, $t0, @args);
}

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

# 1. A request Redis admitted 2 minutes ago (a long stream) used 50 tokens
#    more than it reserved.  Its settle counts the 50 in the minute
#    window's current slot (the reservation's slot has left the window);
#    the same settle, not sent because Redis was away, and replayed with
#    its reservation's time, counts nothing there.
settle('s1', $now - 120000, 'tokens:1m', 60000, 50);
replay('r1', 'a', $now - 120000, 'tokens:1m', 60000, 50);
is(total('r1', 'tokens:1m'), total('s1', 'tokens:1m'),
   'a replayed settle (used above reserved, reservation 2 min old) counts '
   . 'what the settle counts in the minute window (FAILS ON PURPOSE)');

# 2. The same for a calendar month: admitted last month, settled this
#    month with more used than reserved.  The settle counts the excess in
#    this month; its replay drops it from every month.
my $last_month = $now - 40 * 86400000;
settle('s2', $last_month, 'cost:1mo', 0, 5000);
replay('r2', 'a', $last_month, 'cost:1mo', 0, 5000);
is(total('r2', 'cost:1mo'), total('s2', 'cost:1mo'),
   'a replayed settle whose reservation is last month counts its excess '
   . 'this month as the settle does (FAILS ON PURPOSE)');

# 3. Usage counted locally by a node whose idea of Redis's clock is a few
#    seconds ahead (skew unknown: no admission answered since the worker
#    started, e.g. after a reload during the outage, so "at" is the
#    node's own clock): the replay script drops it, although it is not
#    old usage but this slot's.
replay('r3', 'a', $now + 7000, 'tokens:1m', 60000, 50, 'tokens:1d',
       86400000, 50);
is(total('r3', 'tokens:1m') . ' ' . total('r3', 'tokens:1d'), '50 50',
   'usage stamped a little ahead of Redis\'s clock is counted (in the '
   . 'current slot), not dropped (FAILS ON PURPOSE)');

redis('DEL', map { "$P:{acct:$_->[0]}:$_->[1]" }
      [s1 => 'w:tokens:1m'], [r1 => 'w:tokens:1m'], [r1 => 'replay:a'],
      [s2 => 'w:cost:1mo'], [r2 => 'w:cost:1mo'], [r2 => 'replay:a'],
      [r3 => 'w:tokens:1m'], [r3 => 'w:tokens:1d'], [r3 => 'replay:a']);

done_testing();
