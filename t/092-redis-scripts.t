# The Lua scripts of src/ngx_http_llm_rstore_lua.c, run by redis-server itself
# (taken from the C source): token windows reserved atomically, settled to
# the actual usage in the reservation's slot (never below zero, or into
# the current slot once that slot has left the window), calendar months,
# and concurrency leases that expire when nobody renews them (a crashed
# worker's slots).

use strict;
use warnings;

use Test::More;

use lib 't/lib';
use Test::LLM::Lua;
use Time::HiRes qw(sleep);

my $port = script_redis_port();

my %lua = lua_scripts('src/ngx_http_llm_rstore_lua.c', '',
                       qw(admit settle renew replay batch));

my $P = "t092-$$-" . time;

sub redis { redis_out($port, @_) }

# admit(KEYS, climit, lease, ttl, cooldown, [period, limit, need]...);
# $Deadline is the deadline argument (0: none)
our $Deadline = 0;
sub admit {
    my ($acct, $climit, $lease, $lttl, $cool, @w) = @_;
    my @keys = ("$P:{acct:$acct}:conc", "$P:{acct:$acct}:cool");
    my @args = ($climit, $lease, $lttl, $cool, $Deadline);
    while (my ($name, $period, $limit, $need) = splice @w, 0, 4) {
        push @keys, "$P:{acct:$acct}:w:$name";
        push @args, $period, $limit, $need;
    }
    my @r = split /\n/, redis('EVAL', $lua{admit}, scalar @keys, @keys, @args);
    return { status => $r[0], now => $r[1], wait => $r[2], n => $r[3],
             win => [ map { [ @r[4 + 3 * $_ .. 6 + 3 * $_] ] } 0 .. $r[3] - 1 ] };
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

# the slots' sum (fields that are slot numbers; "t", "c", "o" are not)
sub total {
    my %h = split /\n/, redis('HGETALL', "$P:{acct:$_[0]}:w:$_[1]");
    my $s = 0;
    $s += $h{$_} for grep { /^\d+$/ } keys %h;
    return $s;
}

sub field { redis('HGET', "$P:{acct:$_[0]}:w:$_[1]", $_[2]) }

# tokens=250/m, reservations of 100; the admissions and settles below
# count on one slot of 6 s (a1 and a4 in two slots leave a4's 100 after
# "never below zero", which takes back a1's slot only): not begun in the
# last 1.5 s of one
{
    my $into = redis_now_ms($port) % 6000;
    sleep((6000 - $into) / 1000 + 0.01) if $into > 4500;
}
my $a1 = admit('tok', 0, '', 60000, 0, 'tokens:1m', 60000, 250, 100);
is("$a1->{status} $a1->{win}[0][0] $a1->{win}[0][2]", '0 100 -1',
   'a reservation of 100 tokens fits in 250/m');
my $a2 = admit('tok', 0, '', 60000, 0, 'tokens:1m', 60000, 250, 100);
is("$a2->{status} $a2->{win}[0][0]", '0 200', 'a second one too');
my $a3 = admit('tok', 0, '', 60000, 0, 'tokens:1m', 60000, 250, 100);
ok($a3->{status} == 1 && $a3->{win}[0][2] > 0 && $a3->{win}[0][2] <= 66000,
   "a third is refused, with the time until it fits ($a3->{win}[0][2] ms)");
is(total('tok', 'tokens:1m'), 200, 'a refusal charges nothing');

# settle: 30 used of 100 reserved, in the reservation's slot
settle('tok', $a1->{now}, 'tokens:1m', 60000, 30 - 100);
is(total('tok', 'tokens:1m'), 130, 'settled: 100 reserved, 30 used');
my $a4 = admit('tok', 0, '', 60000, 0, 'tokens:1m', 60000, 250, 100);
is("$a4->{status} $a4->{win}[0][0]", '0 230', 'the freed tokens admit again');

# never below zero
settle('tok', $a1->{now}, 'tokens:1m', 60000, -100000);
is(total('tok', 'tokens:1m'), 0, 'a settlement never goes below zero');

# a reservation whose slot has left the window: only positive differences
# count, in the current slot
my $old = $a1->{now} - 120000;
settle('tok', $old, 'tokens:1m', 60000, -50);
is(total('tok', 'tokens:1m'), 0, 'an old reservation: a refund is dropped');
settle('tok', $old, 'tokens:1m', 60000, 40);
is(total('tok', 'tokens:1m'), 40, 'an old reservation: an overrun counts now');
my $ttl = redis('PTTL', "$P:{acct:tok}:w:tokens:1m");
ok($ttl > 60000 && $ttl <= 67000, "window keys expire after 1.1 periods ($ttl)");

# several dimensions at once, all or nothing
my $m = admit('multi', 0, '', 60000, 0, 'requests:1m', 60000, 10, 1,
              'tokens:1m', 60000, 100, 150, 'cost:1d', 86400000, 1000, 5);
is("$m->{status} " . total('multi', 'requests:1m') . ' '
   . total('multi', 'cost:1d'), '1 0 0',
   'one window too small: no window is charged');
ok($m->{win}[1][2] == 60000, 'a need over the limit waits a whole period');

# calendar month: one field, the month number; reset at the next month
my $mo = admit('month', 0, '', 60000, 0, 'requests:1mo', 0, 2, 1);
my %f = split /\n/, redis('HGETALL', "$P:{acct:month}:w:requests:1mo");
my @t = gmtime($mo->{now} / 1000);
my $month = ($t[5] + 1900 - 1970) * 12 + $t[4];
is(join(',', %f), "$month,1", 'a month window counts in its month number');
my @n = gmtime(($mo->{now} + $mo->{win}[0][1]) / 1000);
is("$n[3] $n[2] $n[1] $n[0]", '1 0 0 0',
   'its reset is the first second of the next month (UTC)');

# concurrency leases: a lease nobody renews expires (a crashed worker)
my $c1 = admit('conc', 1, 'w1:1', 300, 0, 'requests:1m', 60000, 100, 1);
my $c2 = admit('conc', 1, 'w2:1', 300, 0, 'requests:1m', 60000, 100, 1);
is("$c1->{status} $c2->{status}", '0 2', 'concurrency=1: the second waits');
is(redis('EVAL', $lua{renew}, 1, "$P:{acct:conc}:conc", 'w1:1', 300), 1,
   'a held lease is renewed');
sleep 0.5;
my $c3 = admit('conc', 1, 'w3:1', 300, 0, 'requests:1m', 60000, 100, 1);
is($c3->{status}, 0, 'a lease nobody renewed has expired');
is(redis('EVAL', $lua{renew}, 1, "$P:{acct:conc}:conc", 'w1:1', 300), 0,
   'an expired lease is not brought back');
is(redis('ZREM', "$P:{acct:conc}:conc", 'w3:1'), 1, 'release is a ZREM');

# cooldown: set by a refusal, for its length
my $h1 = admit('cool', 0, '', 60000, 5000, 'requests:1s', 1000, 1, 1);
my $h2 = admit('cool', 0, '', 60000, 5000, 'requests:1s', 1000, 1, 1);
my $h3 = admit('cool', 0, '', 60000, 5000, 'requests:1s', 1000, 1, 1);
ok($h1->{status} == 0 && $h2->{status} == 1 && $h2->{wait} == 5000
   && $h3->{status} == 3 && $h3->{wait} > 4000,
   "a refusal starts the cooldown ($h2->{status} $h2->{wait}, "
   . "$h3->{status} $h3->{wait})");

# a refusal writes nothing: a flood of 429s is not a flood of writes (at
# most one write, should the ten calls cross into a new slot)
sub hset_calls {
    my $s = redis('INFO', 'commandstats');
    return $s =~ /cmdstat_hset:calls=(\d+)/ ? $1 : 0;
}
admit('full', 0, '', 60000, 0, 'requests:10m', 600000, 1, 1);
admit('full', 0, '', 60000, 0, 'requests:10m', 600000, 1, 1);
my $hs0 = hset_calls();
my @refused = map { admit('full', 0, '', 60000, 0, 'requests:10m', 600000,
                          1, 1)->{status} } 1 .. 10;
my $writes = hset_calls() - $hs0;
ok("@refused" eq join(' ', (1) x 10) && $writes <= 1,
   "ten refusals, $writes writes");

# a deadline in the past: nothing is charged or leased (status 4); one
# in the future changes nothing
{
    local $Deadline = 1;
    my $late = admit('late', 1, 'l1:1', 60000, 0, 'requests:1m', 60000, 5, 1);
    is("$late->{status} $late->{n}", '4 1', 'too late: status 4');
}
is(redis('EXISTS', "$P:{acct:late}:w:requests:1m", "$P:{acct:late}:conc"),
   0, 'too late: no window and no lease was written');
{
    my $t = admit('late', 0, '', 60000, 0, 'requests:1m', 60000, 5, 0);
    local $Deadline = $t->{now} + 60000;
    my $ok = admit('late', 1, 'l2:1', 60000, 0, 'requests:1m', 60000, 5, 1);
    is("$ok->{status} $ok->{win}[0][0]", '0 1',
       'before its deadline: admitted as ever');
}

# the running total: "t" is the slots' sum, read instead of the ring
# while the slot stays the same, counted again once it moves on
my $r1 = admit('run', 0, '', 60000, 0, 'requests:1s', 1000, 100, 3);
my $r2 = admit('run', 0, '', 60000, 0, 'requests:1s', 1000, 100, 2);
is(field('run', 'requests:1s', 't') . ' ' . total('run', 'requests:1s')
   . " $r2->{win}[0][0]", '5 5 5', 'the running total follows the slots');
redis('HSET', "$P:{acct:run}:w:requests:1s", 't', 50);
sleep 0.25;
my $r3 = admit('run', 0, '', 60000, 0, 'requests:1s', 1000, 100, 1);
is("$r3->{win}[0][0] " . field('run', 'requests:1s', 't'), '6 6',
   'a wrong total is counted again from the slots once the slot moves on');
# r1's 100 ms slot, the oldest, leaves 11 slots after it began: that is
# the reset, as Redis's clock read it at r3 (the calls between took
# 250 ms and up, far more on a loaded machine)
my $reset = (int($r1->{now} / 100) + 11) * 100 - $r3->{now};
ok($reset > 0 && abs($r3->{win}[0][1] - $reset) <= 1,
   "reset: when the oldest slot leaves ($r3->{win}[0][1] ms, want $reset)");
sleep 1.2;
my $r4 = admit('run', 0, '', 60000, 0, 'requests:1s', 1000, 100, 1);
is("$r4->{win}[0][0] " . field('run', 'requests:1s', 't') . ' '
   . total('run', 'requests:1s'), '1 1 1', 'slots that left are gone');

# settled to zero: the oldest slot is the next one holding a count
my $z1 = admit('zero', 0, '', 60000, 0, 'tokens:1s', 1000, 1000, 100);
sleep 0.25;
my $z2 = admit('zero', 0, '', 60000, 0, 'tokens:1s', 1000, 1000, 100);
settle('zero', $z1->{now}, 'tokens:1s', 1000, -100);
my $z3 = admit('zero', 0, '', 60000, 0, 'tokens:1s', 1000, 1000, 0);
my $want = (int($z2->{now} / 100) + 11) * 100 - $z3->{now};
ok($z3->{win}[0][0] == 100 && abs($z3->{win}[0][1] - $want) <= 1,
   "after a refund to zero, reset follows the next slot ($z3->{win}[0][1],"
   . " want $want)");
is(field('zero', 'tokens:1s', 't'), 100, 'and the total is what is left');

# a window that holds nothing keeps no key (no total without an expiry)
my $e = admit('empty', 0, '', 60000, 0, 'requests:1m', 60000, 1, 5);
is("$e->{status} " . redis('EXISTS', "$P:{acct:empty}:w:requests:1m"),
   '1 0', 'a refusal of an empty window writes nothing');
settle('empty', $e->{now}, 'requests:1m', 60000, -3);
is(redis('EXISTS', "$P:{acct:empty}:w:requests:1m"), 0,
   'neither does a refund to an empty window');
settle('tok', $a1->{now}, 'tokens:1m', 60000, 5);
ok(redis('PTTL', "$P:{acct:tok}:w:tokens:1m") > 0,
   'a window holding a total has its expiry');

# replay: a batch counted locally during an outage, added once, to its slot
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
my $rp = admit('rep', 0, '', 60000, 0, 'requests:1m', 60000, 100, 1);
is(replay('rep', 'w:1', $rp->{now} - 20000, 'requests:1m', 60000, 4,
          'requests:1h', 3600000, 4), 1, 'a batch is replayed');
is(total('rep', 'requests:1m') . ' ' . total('rep', 'requests:1h'), '5 4',
   'it counts in every window');
my %rs = split /\n/, redis('HGETALL', "$P:{acct:rep}:w:requests:1m");
ok(exists $rs{int(($rp->{now} - 20000) / 6000)},
   'in the slot it was counted in');
is(replay('rep', 'w:1', $rp->{now}, 'requests:1m', 60000, 4), 0,
   'the same batch again is not added');
replay('rep', 'w:2', $rp->{now} - 120000, 'requests:1m', 60000, 7);
is(total('rep', 'requests:1m') . ' ' . field('rep', 'requests:1m', 't'),
   '5 5', 'usage that has left the window is not added');
ok(redis('PTTL', "$P:{acct:rep}:replay:w:1") > 50000,
   'the batch marker expires');

# replayed refunds (a settlement below its reservation, counted after its
# reservation's batch had gone): taken back in their slot, never below
# zero, the running totals kept as the slots
my $rn = admit('neg', 0, '', 60000, 0, 'tokens:1m', 60000, 100000, 100);
my $tn = $rn->{now} - 12000;
replay('neg', 'n:1', $tn, 'tokens:1m', 60000, 1000, 'tokens:1h', 3600000,
       1000);
is(replay('neg', 'n:2', $tn, 'tokens:1m', 60000, -970, 'tokens:1h',
          3600000, -970), 1, 'a refund alone is replayed');
is(total('neg', 'tokens:1m') . ' ' . total('neg', 'tokens:1h'), '130 30',
   'it is taken back in the slot of its reservation');
my %ns = split /\n/, redis('HGETALL', "$P:{acct:neg}:w:tokens:1m");
is(($ns{int($tn / 6000)} // 0) . ' ' . ($ns{int($rn->{now} / 6000)} // 0),
   '30 100', 'there, not in the current slot');
is(field('neg', 'tokens:1m', 't') . ' ' . field('neg', 'tokens:1h', 't'),
   '130 30', 'the running totals follow');
replay('neg', 'n:3', $tn, 'tokens:1m', 60000, -500, 'tokens:1h', 3600000,
       -500);
is(total('neg', 'tokens:1m') . ' ' . field('neg', 'tokens:1m', 't') . ' '
   . field('neg', 'tokens:1m', 'o'), '100 100 ' . int($rn->{now} / 6000),
   'never below zero; the oldest slot is the next one holding a count');
is(redis('EXISTS', "$P:{acct:neg}:w:tokens:1h"), 0,
   'a window taken back to nothing keeps no key');
replay('neg', 'n:4', $rn->{now} - 120000, 'tokens:1m', 60000, -100);
is(total('neg', 'tokens:1m'), 100,
   'a refund whose slot has left the window changes nothing');
my $rn2 = admit('neg', 0, '', 60000, 0, 'tokens:1m', 60000, 100000, 1);
is("$rn2->{win}[0][0]", '101', 'admissions see the totals replayed');

# every key of one account hashes to one Cluster slot
my %slots = map { redis('CLUSTER', 'KEYSLOT', $_) => 1 }
            "$P:{acct:tok}:conc", "$P:{acct:tok}:cool",
            "$P:{acct:tok}:w:tokens:1m";
ok(keys %slots == 1 || (keys %slots)[0] =~ /ERR/,
   'one hash slot per account');

redis('DEL', map { "$P:{acct:$_->[0]}:$_->[1]" }
      [tok => 'w:tokens:1m'], [multi => 'w:requests:1m'],
      [month => 'w:requests:1mo'], [conc => 'conc'],
      [conc => 'w:requests:1m'], [cool => 'cool'], [cool => 'w:requests:1s'],
      [late => 'w:requests:1m'], [late => 'conc'],
      [run => 'w:requests:1s'], [zero => 'w:tokens:1s'],
      [rep => 'w:requests:1m'], [rep => 'w:requests:1h'],
      [rep => 'replay:w:1'], [rep => 'replay:w:2'],
      [neg => 'w:tokens:1m'], [neg => 'w:tokens:1h'],
      (map { [neg => "replay:n:$_"] } 1 .. 4),
      [full => 'w:requests:10m']);

# the batch script: the admissions of one account and tier in one call,
# each answered exactly as the admission script answers it alone

# batch(acct, climit, lttl, cooldown, [[window, period, limit]...],
#       [[lease, deadline, need per window]...])
sub batch {
    my ($acct, $climit, $lttl, $cool, $wins, $reqs) = @_;
    my @keys = ("$P:{acct:$acct}:conc", "$P:{acct:$acct}:cool");
    my @args = ($climit, $lttl, $cool);
    for my $w (@$wins) {
        push @keys, "$P:{acct:$acct}:w:$w->[0]";
        push @args, $w->[1], $w->[2];
    }
    push @args, @$_ for @$reqs;
    my @r = split /\n/, redis('EVAL', $lua{batch}, scalar @keys, @keys,
                              @args);
    return unpack_batch(\@r, $wins, $reqs);
}

# the batch script's compact answer as each request's admission answer,
# read as ngx_http_llm_rstore_unpack() reads it: {now, nwin, per window:
# sum, reset}, then per request a code (status, + 8: new resets) and
# what it needs; an admission adds its needs to the sums
sub unpack_batch {
    my ($r, $wins, $reqs) = @_;
    my @r = @$r;
    my $nwin = @$wins;
    my ($now, $n) = splice @r, 0, 2;
    die "nwin $n, not $nwin" unless $n == $nwin;
    my (@sum, @reset);
    push(@sum, shift @r), push(@reset, shift @r) for 1 .. $nwin;
    my @out;
    for my $q (@$reqs) {
        my (undef, undef, @need) = @$q;
        my $code = shift @r;
        die "no code for a request" unless defined $code;
        my $status = $code & 7;
        my ($wait, @over) = (0, (-1) x $nwin);
        if ($status == 4) {
            push @out, { status => 4, now => $now, wait => 0, n => $nwin,
                         win => [ map { [ 0, 0, -1 ] } 1 .. $nwin ] };
            next;
        }
        if ($status == 1) {
            $wait = shift @r;
            for my $i (0 .. $nwin - 1) {
                ($sum[$i], $reset[$i], $over[$i]) = splice @r, 0, 3;
            }
        } else {
            $wait = shift @r if $status != 0;
            if ($status == 0) {
                $sum[$_] += $need[$_] for 0 .. $nwin - 1;
            }
            @reset = splice @r, 0, $nwin if $code >= 8;
        }
        push @out, { status => $status, now => $now, wait => $wait,
                     n => $nwin,
                     win => [ map { [ $sum[$_], $reset[$_], $over[$_] ] }
                              0 .. $nwin - 1 ] };
    }
    die "numbers left over: @r" if @r;
    return \@out;
}

# what must not differ: status, each window's sum, whether it is over
sub shape {
    my ($x) = @_;
    return join ' ', $x->{status}, ($x->{wait} > 0 ? 'w' : '-'),
        map { "$_->[0]" . ($_->[1] > 0 ? 'r' : '') . ($_->[2] >= 0 ? '+' : '') }
            @{ $x->{win} };
}

# the same requests one by one (account s-NAME) and as one batch (b-NAME):
# the same answers and the same state afterwards
sub same {
    my ($name, $climit, $cool, $wins, @reqs) = @_;
    my @single;
    my $t0 = Time::HiRes::time();
    for my $q (@reqs) {
        my ($lease, $dl, @need) = @$q;
        local $Deadline = $dl;
        push @single, admit("s-$name", $climit, $lease, 60000, $cool,
                            map { (@{ $wins->[$_] }, $need[$_]) }
                            0 .. $#$wins);
    }
    my $b = batch("b-$name", $climit, 60000, $cool, $wins, \@reqs);
    # the time the calls took (redis-cli runs: 100 ms and more on a slow
    # machine), which may pass between a single call's resets and the batch's
    my $gap = int((Time::HiRes::time() - $t0) * 1000) + 20;
    $gap = 100 if $gap < 100;
    is(join(', ', map { shape($_) } @$b),
       join(', ', map { shape($_) } @single),
       "$name: a batch answers as single calls ("
       . join(', ', map { shape($_) } @$b) . ')');
    my @state = map {
        my $a = $_;
        join ' ', (map { total($a, $_->[0]) . '/'
                         . (field($a, $_->[0], 't') // '') } @$wins),
                  redis('ZCARD', "$P:{acct:$a}:conc"),
                  redis('EXISTS', "$P:{acct:$a}:cool");
    } ("b-$name", "s-$name");
    is($state[0], $state[1], "$name: the same state afterwards ($state[0])");
    # a slot boundary (a tenth of the period) may pass between the calls
    my @far = grep {
        my $d = abs($_->[0] - $_->[1]);
        $d > $gap && abs($d - $_->[2]) > $gap;
    } map {
        my $k = $_;
        map { [ $b->[$k]{win}[$_][1], $single[$k]{win}[$_][1],
                $wins->[$_][1] / 10 ] } 0 .. $#$wins;
    } 0 .. $#single;
    ok(!@far, "$name: the same resets, within the $gap ms the calls took"
              . " or a slot apart"
              . join('', map { " ($_->[0] vs $_->[1])" } @far));
    return $b;
}

my $W = [[ 'requests:1m', 60000, 3 ]];
my $b1 = same('three', 0, 0, $W, map { [ '', 0, 1 ] } 1 .. 5);
is(join(' ', map { $_->{status} } @$b1), '0 0 0 1 1',
   'requests=3/m, five in one batch: three admitted, in order');
my $after = admit('b-three', 0, '', 60000, 0, 'requests:1m', 60000, 3, 1);
is("$after->{status} $after->{win}[0][0]", '1 3',
   'a single call after the batch sees its charges');
ok((redis('PTTL', "$P:{acct:b-three}:w:requests:1m")) > 60000,
   'the batch gives its windows their expiry');

# a refusal in the middle, the later smaller one fits; on a window that
# holds something already
$W = [[ 'tokens:1m', 60000, 250 ]];
admit("$_-mid", 0, '', 60000, 0, 'tokens:1m', 60000, 250, 50)
    for qw(s b);
my $b2 = same('mid', 0, 0, $W, [ '', 0, 100 ], [ '', 0, 200 ],
              [ '', 0, 50 ], [ '', 0, 51 ]);
is(join(' ', map { "$_->{status}:$_->{win}[0][0]" } @$b2),
   '0:150 1:150 0:200 1:200', 'a refusal in the middle of a batch');
ok($b2->[1]{win}[0][2] > 0 && $b2->[1]{win}[0][2] <= 66000,
   "its time until it fits ($b2->[1]{win}[0][2] ms)");

# a refusal's cooldown turns the later requests of the batch away
my $b3 = same('cool', 0, 5000, [[ 'requests:1m', 60000, 2 ]],
              map { [ '', 0, 1 ] } 1 .. 4);
ok($b3->[2]{status} == 1 && $b3->[2]{wait} >= 5000
   && $b3->[3]{status} == 3 && $b3->[3]{wait} == 5000,
   'cooldown set by a refusal in the batch ('
   . join(' ', map { "$_->{status}:$_->{wait}" } @$b3[2, 3]) . ')');

# concurrency leases: taken in order, counted against the later ones
my $b4 = same('conc', 2, 0, [[ 'requests:1m', 60000, 100 ]],
              [ 'a:1', 0, 1 ], [ 'a:2', 0, 1 ], [ 'a:3', 0, 1 ]);
is(join(' ', map { $_->{status} } @$b4), '0 0 2',
   'concurrency=2: the third of a batch waits');
is(join(' ', map { redis('ZSCORE', "$P:{acct:b-conc}:conc", $_) ? 1 : 0 }
             qw(a:1 a:2 a:3)), '1 1 0', 'the leases of the admitted ones');

# one past its deadline changes nothing, the others go on
my $b5 = same('late', 1, 0, [[ 'requests:1m', 60000, 5 ]],
              [ 'l:1', 1, 1 ], [ 'l:2', 0, 1 ], [ 'l:3', 1, 1 ]);
is(join(' ', map { $_->{status} } @$b5), '4 0 4',
   'too late in a batch: status 4, nothing charged or leased');

# several windows, all or nothing per request
same('multi', 0, 0,
     [[ 'requests:1m', 60000, 10 ], [ 'tokens:1m', 60000, 100 ]],
     [ '', 0, 1, 60 ], [ '', 0, 1, 60 ], [ '', 0, 1, 30 ]);

done_testing();
