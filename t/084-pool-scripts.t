# The Lua scripts of src/ngx_http_llm_pool_sync.c, run by redis-server
# itself (taken from the C source): a cooldown keeps the later deadline,
# a disabled key records when, a budget's count rolls into the previous
# window and then out; the pull restates cooldowns, reports every state
# in lines relative to Redis's clock and drops what is past; the pool's
# hash expires when nothing in it is of use.

use strict;
use warnings;

use Test::More;

use lib 't/lib';
use Test::LLM::Lua;

my $port = script_redis_port();

my %lua = lua_scripts('src/ngx_http_llm_pool_sync.c', 'pool_',
                       qw(event pull));

my $P = "t093-$$-" . time;
my $K = "$P:{pool:openai}";

sub redis { redis_out($port, @_) }

sub event { redis('EVAL', $lua{event}, 1, $K, @_) }

sub pull {
    my @r = split /\n/, redis('EVAL', $lua{pull}, 1, $K, @_), 2;
    return { now => $r[0],
             lines => { map { my @f = split / /; ("$f[0] $f[4]" => "@f[1..3]") }
                        split /\n/, $r[1] // '' } };
}

sub field { redis('HGET', $K, $_[0]) }

sub now_ms { redis_now_ms($port) }

# cooldowns: the later deadline wins
event('c', 'a', 30000, 0);
my $d1 = field('c:a');
ok(abs($d1 - now_ms() - 30000) < 1000, 'a cooldown is a deadline on Redis\'s clock');
event('c', 'a', 5000, 0);
is(field('c:a'), $d1, 'a shorter cooldown does not shorten it');
event('c', 'a', 60000, 0);
ok(field('c:a') > $d1, 'a longer one extends it');
my $ttl = redis('PTTL', $K);
ok($ttl > 59000 && $ttl <= 61000, "the hash lives as long as the cooldown ($ttl)");

# disabled: when
event('d', 'b', 0, 0);
ok(abs(field('d:b') - now_ms()) < 1000, 'a disabled key records when');
$ttl = redis('PTTL', $K);
ok($ttl > 86000000, "and is kept a day ($ttl)");

# budgets: "window count previous"
my $win = int(now_ms() / 3600000);
event('r', 'a', 1, 3600000) for 1 .. 3;
event('t', 'a', 250, 3600000);
is(field('r:3600000:a'), "$win 3 0", 'attempts count in the current window');
is(field('t:3600000:a'), "$win 250 0", 'tokens too');
redis('HSET', $K, 'r:3600000:c', ($win - 1) . ' 7 2');
event('r', 'c', 1, 3600000);
is(field('r:3600000:c'), "$win 1 7", 'a new window: the current count becomes the previous');
redis('HSET', $K, 'r:3600000:e', ($win - 5) . ' 7 2');
event('r', 'e', 1, 3600000);
is(field('r:3600000:e'), "$win 1 0", 'an old window is forgotten');

# names are what they are, colons included
event('r', 'team:x', 2, 60000);
like(field('r:60000:team:x'), qr/^\d+ 2 0$/, 'a name with a colon');

# the pull: lines relative to Redis's clock; what is past is dropped
redis('HSET', $K, 'c:old', now_ms() - 5000);
redis('HSET', $K, 'r:60000:gone', '5 1 1');
redis('HSET', $K, 'r:3600000:prev', ($win - 1) . ' 4 9');
my $p = pull();
my %l = %{ $p->{lines} };
ok($p->{now} > 0, 'the pull gives Redis\'s time');
ok($l{'c a'} =~ /^(\d+) 0 0$/ && $1 > 58000 && $1 <= 60000, "c a: $l{'c a'}");
ok($l{'d b'} =~ /^(\d+) 0 0$/ && $1 < 5000, "d b: age $l{'d b'}");
is($l{'r a'}, '3600000 3 0', 'r a: period, current, previous');
is($l{'t a'}, '3600000 250 0', 't a');
is($l{'r team:x'}, '60000 2 0', 'r team:x');
is($l{'r prev'}, '3600000 0 4', 'last window\'s count is the previous one now');
ok(!exists $l{'c old'} && !exists $l{'r gone'}, 'past states are not reported');
is(redis('HEXISTS', $K, 'c:old') . redis('HEXISTS', $K, 'r:60000:gone'), '00',
   'and are dropped from the hash');

# the pull restates a node's own cooldowns (after Redis lost them)
redis('HDEL', $K, 'c:a');
$p = pull('a', 20000, 'z', 1000);
ok($p->{lines}{'c a'} =~ /^(\d+) / && $1 > 19000 && $1 <= 20000,
   'a restated cooldown is back: ' . ($p->{lines}{'c a'} // 'none'));
ok(exists $p->{lines}{'c z'}, 'for any key the node names');
$p = pull('a', 1000);
ok($p->{lines}{'c a'} =~ /^(\d+) / && $1 > 19000,
   'a restated cooldown never shortens one');

# an empty pool
my $E = "$P:{pool:empty}";
my @e = split /\n/, redis('EVAL', $lua{pull}, 1, $E);
ok($e[0] > 0 && @e == 1, 'an empty pool: the time and no lines');
is(redis('EXISTS', $E), '0', 'and no key is made');

redis('DEL', $K);

done_testing();
