#!/usr/bin/env python3
#
# same.py OLD.c NEW.c [SEED] [OPS] [PORT]: the rstore scripts of two
# versions of src/ngx_http_llm_rstore_lua.c give the same answers and
# leave the same state.  Random admissions, batches, settles, replays,
# usage reads and foreign writes (a total, a slot, "c" or "o" changed or
# deleted) on a few accounts (1-3 windows of 1 s .. 1 day and calendar
# months, concurrency limits, cooldowns, deadlines) go through both, each
# on its own keys, with one fake clock (TIME replaced by a hash read)
# that jumps across slots, windows and months; every reply and every
# key (type, value, field order, expiry within 200 ms) must match.
# Uses a redis-server of yours on PORT (default 6451; FLUSHALLed).
#
#   git show HEAD~3:src/ngx_http_llm_rstore_lua.c > /tmp/old.c
#   tools/lua-bench/same.py /tmp/old.c src/ngx_http_llm_rstore_lua.c 1
#
# Exit status 0: no difference.
import os, socket, subprocess, random, sys, re

LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 't', 'lib')

old_c, new_c = sys.argv[1], sys.argv[2]
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
nops = int(sys.argv[4]) if len(sys.argv) > 4 else 3000
port = int(sys.argv[5]) if len(sys.argv) > 5 else 6451
rnd = random.Random(seed)

class R:
    def __init__(s, port):
        s.s = socket.create_connection(('127.0.0.1', port)); s.f = s.s.makefile('rb')
    def cmd(s, *a):
        out = b'*%d\r\n' % len(a)
        for x in a:
            x = x if isinstance(x, bytes) else str(x).encode()
            out += b'$%d\r\n%s\r\n' % (len(x), x)
        s.s.sendall(out); return s.rd()
    def rd(s):
        l = s.f.readline()[:-2]; t, r = l[:1], l[1:]
        if t == b'+': return r.decode()
        if t == b'-': return ('ERR', r.decode())
        if t == b':': return int(r)
        if t == b'$':
            n = int(r)
            if n < 0: return None
            d = s.f.read(n + 2)[:-2]; return d.decode()
        if t == b'*':
            n = int(r)
            if n < 0: return None
            return [s.rd() for _ in range(n)]
        raise Exception(l)

def scripts(c):
    out = {}
    for n in ('admit', 'batch', 'settle', 'replay', 'usage'):
        t = subprocess.run(['perl', '-I' + LIB, '-MTest::LLM::Lua', '-e',
            'my %l = lua_scripts($ARGV[0], "", $ARGV[1]); print $l{$ARGV[1]}', c, n],
            capture_output=True, check=True).stdout.decode()
        t2 = re.sub(r"(redis\.)?call\('TIME'\)", "redis.call('HMGET', 'faketime', 's', 'us')", t)
        assert t2 != t, n
        out[n] = t2
    return out

r = R(port)
r.cmd('FLUSHALL')
S = {'o': scripts(old_c), 'n': scripts(new_c)}
SHA = {v: {n: r.cmd('SCRIPT', 'LOAD', t) for n, t in S[v].items()} for v in S}

now = 1798761540000 - rnd.randint(0, 3600000 * 24 * 3)   # around 2027-01-01
def settime():
    r.cmd('HSET', 'faketime', 's', now // 1000, 'us', (now % 1000) * 1000 + rnd.randint(0, 999))

PERIODS = [60000, 1000, 0, 86400000, 3600000, 1001, 7777]
accts = []
for a in range(6):
    nw = rnd.randint(1, 3)
    ws = [(f'w{i}', rnd.choice(PERIODS), rnd.choice([3, 10, 50, 1000, 10**9])) for i in range(nw)]
    accts.append({'name': f'a{a}', 'ws': ws, 'climit': rnd.choice([0, 0, 2, 5]),
                  'cooldown': rnd.choice([0, 0, 0, 0, 600000]), 'lttl': rnd.choice([3000, 60000])})

def keys(v, a):
    p = '{%s:%s}' % (v, a['name'])
    return [p + ':c', p + ':k'] + [p + ':' + w[0] for w in a['ws']]

def state(v, a):
    st = []
    for k in keys(v, a) + ['{%s:%s}:m%d' % (v, a['name'], i) for i in range(a.get('marks', 0))]:
        ty = r.cmd('TYPE', k)
        if ty == 'hash': val = r.cmd('HGETALL', k)
        elif ty == 'zset': val = r.cmd('ZRANGE', k, 0, -1, 'WITHSCORES')
        elif ty == 'string': val = r.cmd('GET', k)
        else: val = None
        et = r.cmd('PEXPIRETIME', k)
        st.append((ty, val, et))
    return st

def need():
    return rnd.choice([0, 1, 1, 2, 5, 20])

# the batch script's compact answer (since 2026-12-06: {now, nwin, per
# window: sum, reset}, then per request a code and what it needs) as the
# answers of its requests one after the other, as before: the first
# number of the old form is a status (0-4), of the new one the time
def unpack_batch(ans, nwin, needs):
    if not isinstance(ans, list) or not ans or ans[0] <= 4:
        return ans
    now, n = ans[0], ans[1]
    sums = [ans[2 + 2 * i] for i in range(nwin)]
    resets = [ans[3 + 2 * i] for i in range(nwin)]
    k, out = 2 + 2 * nwin, []
    for need in needs:
        code = ans[k]; k += 1
        st, wait, over = code & 7, 0, [-1] * nwin
        if st == 4:
            out += [4, now, 0, n] + [0, 0, -1] * nwin
            continue
        if st == 1:
            wait = ans[k]; k += 1
            for i in range(nwin):
                sums[i], resets[i], over[i] = ans[k:k + 3]; k += 3
        else:
            if st != 0:
                wait = ans[k]; k += 1
            else:
                sums = [x + y for x, y in zip(sums, need)]
            if code >= 8:
                resets = ans[k:k + nwin]; k += nwin
        out += [st, now, wait, n]
        for i in range(nwin):
            out += [sums[i], resets[i], over[i]]
    assert k == len(ans), (k, ans)
    return out

fails = 0
counts = {}
for op in range(nops):
    if rnd.random() < 0.3:
        now += rnd.choice([0, 1, 50, 100, 700, 3000, 6000, 20000, 70000, 3600000, 86400000 * 3])
    settime()
    a = rnd.choice(accts); nwin = len(a['ws'])
    kind = rnd.choice(['admit'] * 4 + ['batch'] * 4 + ['settle'] * 3 + ['replay', 'corrupt', 'usage'])
    counts[kind] = counts.get(kind, 0) + 1
    if kind == 'corrupt':
        w = rnd.choice(a['ws'])
        f = rnd.choice(['t', 'c', 'o', 'slot'])
        val = rnd.randint(0, 30)
        back = rnd.randint(0, 12)
        dele = rnd.random() < 0.5
        for v in 'no':
            k = keys(v, a)[2 + a['ws'].index(w)]
            if f == 'slot':
                if w[1]: r.cmd('HSET', k, now // (w[1] // 10) - back, val)
            elif dele: r.cmd('HDEL', k, f)
            else: r.cmd('HSET', k, f, val)
        continue
    if kind == 'admit':
        dl = rnd.choice([0, 0, now + 100, now - 1])
        args = [a['climit'], 'l%d' % op, a['lttl'], a['cooldown'], dl]
        for w in a['ws']: args += [w[1], w[2], need()]
    elif kind == 'batch':
        args = [a['climit'], a['lttl'], a['cooldown']]
        for w in a['ws']: args += [w[1], w[2]]
        for q in range(rnd.randint(1, 8)):
            args += ['l%d.%d' % (op, q), rnd.choice([0, 0, 0, now + 100, now - 1])]
            args += [need() for _ in a['ws']]
    elif kind == 'settle':
        t0 = now - rnd.choice([0, 10, 3000, 7000, 50000, 61000, 3600000, 86400000 * 20])
        args = [t0]
        for w in a['ws']: args += [w[1], rnd.choice([-20, -5, -1, 0, 1, 3, 10])]
    elif kind == 'replay':
        t0 = now - rnd.choice([-5000, 0, 10, 3000, 7000, 50000, 61000, 86400000 * 20])
        m = rnd.randint(0, a.get('marks', 0))
        a['marks'] = max(a.get('marks', 0), m + 1)
        args = [60000, t0]
        for w in a['ws']: args += [w[1], rnd.choice([-20, -5, -1, 0, 1, 3, 10])]
    elif kind == 'usage':
        args = [w[1] for w in a['ws']]
    res = {}
    for v in 'on':
        ks = keys(v, a)
        if kind in ('settle', 'usage'): ks = ks[2:]
        if kind == 'replay': ks = ['{%s:%s}:m%d' % (v, a['name'], m)] + ks[2:]
        ans = r.cmd('EVALSHA', SHA[v][kind], len(ks), *ks, *args)
        if kind == 'batch':
            base = 3 + 2 * nwin
            needs = [[int(x) for x in args[b + 2:b + 2 + nwin]]
                     for b in range(base, len(args), 2 + nwin)]
            ans = unpack_batch(ans, nwin, needs)
        res[v] = (ans, state(v, a))
    o, n = res['o'], res['n']
    ok = o[0] == n[0]
    if not ok and kind in ('admit', 'batch') and isinstance(o[0], list) and len(o[0]) == len(n[0]):
        # a cooldown's wait is its key's PTTL: real time, not the fake clock
        m = 4 + 3 * nwin
        ok = True
        for j in range(0, len(o[0]), m):
            x, y = o[0][j:j + m], n[0][j:j + m]
            if x[0] == 3 and y[0] == 3 and abs(x[2] - y[2]) <= 50:
                x, y = x[:2] + x[3:], y[:2] + y[3:]
            if x != y: ok = False
    if ok:
        for (ty1, v1, e1), (ty2, v2, e2) in zip(o[1], n[1]):
            if ty1 != ty2 or v1 != v2 or (e1 < 0) != (e2 < 0) or abs(e1 - e2) > 200:
                ok = False
    if not ok:
        fails += 1
        if fails <= 5:
            print('DIFF op', op, kind, a['ws'], args)
            print('  old', o); print('  new', n)
print('seed', seed, 'ops', nops, counts, 'fails', fails)
sys.exit(1 if fails else 0)
