
/*
 * ngx_llm_gateway: the Lua scripts of the Redis store.
 *
 * Owns the text of every script ngx_http_llm_rstore.c sends (EVALSHA,
 * EVAL on NOSCRIPT): the admission and its batch form, the settle, the
 * lease renewal, the outage replay and llm_usage's read, and the chunks
 * they share; and the reading of the batch script's compact answer.
 * Each runs atomically in Redis and touches only keys of one account
 * (one Cluster hash tag).  t/092-redis-scripts.t runs them in
 * redis-server straight from this file.
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_limits.h"
#include "ngx_http_llm_store.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_rstore.h"
#include "ngx_http_llm_rstore_lua.h"
#include "ngx_http_llm_rstore_int.h"


/*
 * Shared by the scripts: the clock, slots and months.  "mo" counts
 * months from January 1970; mstart() is a month's first millisecond
 * (after Howard Hinnant's civil date algorithms).
 *
 * A sliding window's hash also keeps its running total: "t", the sum
 * of the slots in the window as of slot "c", and "o", the oldest slot
 * holding a count (0: none).  While the current slot is "c", load()
 * reads those three and the current slot (one HMGET) instead of the
 * whole ring; once the clock has moved into a new slot, or when a total
 * is held with no oldest slot (another writer's doing), full() counts
 * the ring again (HGETALL, stale slots deleted; plus what a batch has
 * admitted and not written yet, w.added), so a total that some other
 * writer left wrong is right again within a tenth of the period, and a
 * window's oldest slot is known whenever it holds something.
 * save(w, v, fresh, ss) writes count v to slot ss (default: the
 * current one) with the new total, and the total alone only if it
 * changed (a refusal writes nothing); "c" and "o" are not written again
 * when they already hold the value (w.c: "c" is this slot's name, w.o0:
 * the number "o" holds); an empty window drops them, so they never keep
 * a key alive without its expiry; "fresh" (a new slot) sets the key's
 * expiry.  A month is one field and is always read whole.
 *
 * Every EVALSHA runs this text again, so it is written for Redis's CPU
 * (one Redis serves the fleet; tools/lua-bench measures it): globals read
 * once into locals; no closure that a call does not need (months() makes
 * the calendar helpers the first time a month window is seen); a window
 * table built by one constructor (no rehash as fields are added); and
 * numbers handed to redis.call as strings made by str() where Redis's
 * own conversion is slow: before 7.4 (REDIS_VERSION_NUM is nil before
 * 7.0) it is "%.17g", about three times string.format's "%d" (7.2 has
 * fpconv_dtoa, which writes some round integers as 1e8, redis#13113);
 * the same digits for an integer below 1e15, and anything else is left
 * to Redis.  7.4 writes an integer as such, and str() passes it on.
 * ARGV and TIME are numbers by construction and are converted by
 * arithmetic ("+ 0": one strtod; tonumber() parses twice).  Answers are
 * not floored here: Redis turns a Lua number into an integer reply by
 * truncation, the same for the non-negative waits and resets.
 */

#define NGX_HTTP_LLM_LUA_COMMON                                               \
"local call, tonumber, floor = redis.call, tonumber, math.floor\n"            \
"local fmt, KEYS, ARGV, unpack = string.format, KEYS, ARGV, unpack\n"         \
"if redis.replicate_commands then redis.replicate_commands() end\n"           \
"local t = call('TIME')\n"                                                    \
"local now = t[1] * 1000 + floor(t[2] / 1000)\n"                              \
"local slow = (redis.REDIS_VERSION_NUM or 0) < 0x070400\n"                    \
"local function str(x)\n"                                                     \
"  if slow and x % 1 == 0 and x > 0 and x < 1e15 then\n"                      \
"    return fmt('%d', x)\n"                                                   \
"  end\n"                                                                     \
"  return x\n"                                                                \
"end\n"                                                                       \
"local mo, mstart\n"                                                          \
"local function months()\n"                                                   \
"  mo = function(ms)\n"                                                       \
"    local z = floor(ms / 86400000) + 719468\n"                               \
"    local era = floor(z / 146097)\n"                                         \
"    local doe = z - era * 146097\n"                                          \
"    local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524)\n"       \
"                       - floor(doe / 146096)) / 365)\n"                      \
"    local y = yoe + era * 400\n"                                             \
"    local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))\n"     \
"    local mp = floor((5 * doy + 2) / 153)\n"                                 \
"    local m = mp < 10 and mp + 3 or mp - 9\n"                                \
"    if m <= 2 then y = y + 1 end\n"                                          \
"    return (y - 1970) * 12 + m - 1\n"                                        \
"  end\n"                                                                     \
"  mstart = function(n)\n"                                                    \
"    local y = 1970 + floor(n / 12)\n"                                        \
"    local m = n % 12 + 1\n"                                                  \
"    if m <= 2 then y = y - 1 end\n"                                          \
"    local era = floor(y / 400)\n"                                            \
"    local yoe = y - era * 400\n"                                             \
"    local mp = m > 2 and m - 3 or m + 9\n"                                   \
"    local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100)\n"             \
"                + floor((153 * mp + 2) / 5)\n"                               \
"    return (era * 146097 + doe - 719468) * 86400000\n"                       \
"  end\n"                                                                     \
"  return mo\n"                                                               \
"end\n"                                                                       \
"local function full(w)\n"                                                    \
"  local key, lo = w.key, w.lo\n"                                             \
"  local flat = call('HGETALL', key)\n"                                       \
"  local counts, sum, o, stale, ns = {}, 0, nil, nil, 0\n"                    \
"  for j = 1, #flat, 2 do\n"                                                  \
"    local s = tonumber(flat[j])\n"                                           \
"    if s == nil then\n"                                                      \
"    elseif s < lo then\n"                                                    \
"      if ns == 0 then stale = {} end\n"                                      \
"      ns = ns + 1\n"                                                         \
"      stale[ns] = flat[j]\n"                                                 \
"    else\n"                                                                  \
"      local v = tonumber(flat[j + 1]) or 0\n"                                \
"      counts[s] = (counts[s] or 0) + v\n"                                    \
"      sum = sum + v\n"                                                       \
"      if v > 0 and (not o or s < o) then o = s end\n"                        \
"    end\n"                                                                   \
"  end\n"                                                                     \
"  if ns > 0 then call('HDEL', key, unpack(stale)) end\n"                     \
"  local cur, added = w.cur, w.added\n"                                       \
"  if added > 0 then\n"                                                       \
"    counts[cur], sum = (counts[cur] or 0) + added, sum + added\n"            \
"    if not o or o > cur then o = cur end\n"                                  \
"  end\n"                                                                     \
"  w.counts, w.sum, w.o = counts, sum, o\n"                                   \
"  w.here, w.dirty, w.c, w.o0 = counts[cur], w.period > 0, false, nil\n"      \
"end\n"                                                                       \
"local function load(key, period, limit, need)\n"                             \
"  local cur = period == 0 and (mo or months())(now)\n"                       \
"              or floor(now / (period / 10))\n"                               \
"  local cs = fmt('%d', cur)\n"                                               \
"  if period ~= 0 then\n"                                                     \
"    local v = call('HMGET', key, 't', 'c', 'o', cs)\n"                       \
"    local c = v[2] == cs\n"                                                  \
"    local o = v[3] == cs and cur or tonumber(v[3])\n"                        \
"    local sum = tonumber(v[1]) or 0\n"                                       \
"    if (c or tonumber(v[2]) == cur) and (sum <= 0 or (o or 0) ~= 0)\n"       \
"    then\n"                                                                  \
"      return { key = key, period = period, limit = limit, need = need,\n"    \
"               cur = cur, cs = cs, lo = cur - 10, c = c, o0 = o,\n"          \
"               o = o ~= 0 and o or nil, sum = sum,\n"                        \
"               here = tonumber(v[4]), dirty = false, added = 0 }\n"          \
"    end\n"                                                                   \
"  end\n"                                                                     \
"  local w = { key = key, period = period, limit = limit, need = need,\n"     \
"              cur = cur, cs = cs, lo = period == 0 and cur or cur - 10,\n"   \
"              sum = 0, dirty = false, added = 0 }\n"                         \
"  full(w)\n"                                                                 \
"  return w\n"                                                                \
"end\n"                                                                       \
"local function save(w, v, fresh, ss)\n"                                      \
"  local key, cur, sum, o = w.key, w.cur, w.sum, w.o\n"                       \
"  if w.period == 0 then\n"                                                   \
"    if v then call('HSET', key, ss or w.cs, str(v)) end\n"                   \
"  elseif sum > 0 then\n"                                                     \
"    if v and w.c and (o or 0) == w.o0 then\n"                                \
"      call('HSET', key, ss or w.cs, str(v), 't', str(sum))\n"                \
"    elseif v or w.dirty then\n"                                              \
"      local os = o == cur and w.cs or str(o or 0)\n"                         \
"      if v then\n"                                                           \
"        call('HSET', key, ss or w.cs, str(v), 't', str(sum), 'c', w.cs,\n"   \
"             'o', os)\n"                                                     \
"      else\n"                                                                \
"        call('HSET', key, 't', str(sum), 'c', w.cs, 'o', os)\n"              \
"      end\n"                                                                 \
"    end\n"                                                                   \
"  elseif w.dirty then\n"                                                     \
"    call('HDEL', key, 't', 'c', 'o')\n"                                      \
"  end\n"                                                                     \
"  w.dirty = false\n"                                                         \
"  if fresh then\n"                                                           \
"    local ttl = w.period + w.period / 10 + 1000\n"                           \
"    if w.period == 0 then ttl = mstart(cur + 1) - now + 86400000 end\n"      \
"    call('PEXPIRE', key, str(floor(ttl)))\n"                                 \
"  end\n"                                                                     \
"end\n"


/*
 * Shared by the admission and batch scripts: free_in(w, drop) is when
 * "drop" units will have left window w (full(w) fills w.counts first
 * if needed); over(win, status, wait) refuses on the
 * first window the needs do not fit, setting w.over, and returns the
 * status, the wait and whether only windows smaller than their need
 * refused (a request that can never fit starts no cooldown, unless a
 * window it fits refuses it too: then the client goes too fast).
 */

#define NGX_HTTP_LLM_LUA_DECIDE                                               \
"local function free_in(w, drop)\n"                                           \
"  if w.sum <= 0 then return 0 end\n"                                         \
"  if w.period == 0 then return mstart(w.cur + 1) - now end\n"                \
"  local width = w.period / 10\n"                                             \
"  if drop == 1 and w.o then\n"                                               \
"    local at = (w.o + 11) * width\n"                                         \
"    return at > now and at - now or 0\n"                                     \
"  end\n"                                                                     \
"  if not w.counts then full(w) end\n"                                        \
"  local counts, freed = w.counts, 0\n"                                       \
"  for s = w.lo, w.cur do\n"                                                  \
"    freed = freed + (counts[s] or 0)\n"                                      \
"    if freed >= drop then\n"                                                 \
"      local at = (s + 11) * width\n"                                         \
"      if at > now then return at - now end\n"                                \
"      return 0\n"                                                            \
"    end\n"                                                                   \
"  end\n"                                                                     \
"  return w.period + width\n"                                                 \
"end\n"                                                                       \
"local function over(win, status, wait)\n"                                    \
"  local never, fits = false, false\n"                                        \
"  for i = 1, #win do\n"                                                      \
"    local w = win[i]\n"                                                      \
"    local need = w.need\n"                                                   \
"    if need > 0 and w.sum + need > w.limit then\n"                           \
"      if need > w.limit then\n"                                              \
"        w.over = w.period > 0 and w.period or 86400000\n"                    \
"        never = true\n"                                                      \
"      else\n"                                                                \
"        w.over = free_in(w, w.sum + need - w.limit)\n"                       \
"        fits = true\n"                                                       \
"      end\n"                                                                 \
"      status = 1\n"                                                          \
"      if w.over > wait then wait = w.over end\n"                             \
"    end\n"                                                                   \
"  end\n"                                                                     \
"  return status, wait, never and not fits\n"                                 \
"end\n"

/*
 * KEYS: conc, cool, one key per window.  ARGV: concurrency limit (0:
 * none), lease, lease ttl, cooldown (ms; 0: the tier has none, and the
 * cool key is not looked at), deadline (Redis ms; 0: none), then per
 * window: period (ms, 0: calendar month), limit, need.
 *
 * Returns {status, now, wait, nwin, then per window: sum, reset, over}.
 * status 0 admitted (charged, leased), 1 a window refused, 2 the
 * concurrency limit, 3 cooling down, 4 too late: the node has stopped
 * waiting (a stalled Redis runs what queued up meanwhile; the node
 * decided those requests itself, so they must not count twice), and
 * nothing changed; wait: ms until it makes sense to
 * retry; sum: what the window holds (after the charge), reset: ms until
 * one unit leaves it, over: ms until the need would fit (-1: it fits).
 */

static char  ngx_http_llm_lua_admit[] =
NGX_HTTP_LLM_LUA_COMMON
NGX_HTTP_LLM_LUA_DECIDE
"local climit = ARGV[1] + 0\n"
"local nwin = #KEYS - 2\n"
"local deadline = ARGV[5] + 0\n"
"if deadline > 0 and now > deadline then\n"
"  local out, n = { 4, now, 0, nwin }, 4\n"
"  for i = 1, nwin do\n"
"    out[n + 1], out[n + 2], out[n + 3] = 0, 0, -1\n"
"    n = n + 3\n"
"  end\n"
"  return out\n"
"end\n"
"local win = {}\n"
"for i = 1, nwin do\n"
"  win[i] = load(KEYS[i + 2], ARGV[3 * i + 3] + 0,\n"
"                ARGV[3 * i + 4] + 0, ARGV[3 * i + 5] + 0)\n"
"end\n"
"local status, wait = 0, 0\n"
"local cooldown = ARGV[4] + 0\n"
"local cool = cooldown > 0 and call('PTTL', KEYS[2]) or 0\n"
"if cool > 0 then\n"
"  status, wait = 3, cool\n"
"elseif climit > 0 then\n"
"  call('ZREMRANGEBYSCORE', KEYS[1], '-inf', str(now))\n"
"  if call('ZCARD', KEYS[1]) >= climit then status, wait = 2, 1000 end\n"
"end\n"
"if status == 0 then\n"
"  local never\n"
"  status, wait, never = over(win, status, wait)\n"
"  if status == 1 and cooldown > 0 and not never then\n"
"    call('SET', KEYS[2], '1', 'PX', str(cooldown))\n"
"    if cooldown > wait then wait = cooldown end\n"
"  end\n"
"end\n"
"for i = 1, nwin do\n"
"  local w = win[i]\n"
"  local need = w.need\n"
"  if status == 0 and need > 0 then\n"
"    local v = (w.here or 0) + need\n"
"    w.sum = w.sum + need\n"
"    if not w.o or w.o > w.cur then w.o = w.cur end\n"
"    save(w, v, v == need)\n"
"  else\n"
"    save(w, nil)\n"
"  end\n"
"end\n"
"if status == 0 and climit > 0 then\n"
"  local lttl = ARGV[3] + 0\n"
"  call('ZADD', KEYS[1], str(now + lttl), ARGV[2])\n"
"  call('PEXPIRE', KEYS[1], str(lttl))\n"
"end\n"
"local out, n = { status, now, wait, nwin, nil, nil, nil }, 4\n"
"for i = 1, nwin do\n"
"  local w = win[i]\n"
"  out[n + 1], out[n + 2], out[n + 3] =\n"
"    w.sum, free_in(w, 1), w.over or -1\n"
"  n = n + 3\n"
"end\n"
"return out\n";

/*
 * The admissions of one account and tier queued in one event-loop
 * iteration of a worker, in one call: decided in order, each exactly as
 * the admission script would decide it alone at the same instant (a
 * refusal's cooldown turns the later ones away, a lease taken counts
 * against the later ones, one past its deadline changes nothing).  Each
 * window is read once and written once.
 *
 * KEYS: as the admission's.  ARGV: concurrency limit, lease ttl,
 * cooldown, per window: period, limit; then per request: lease,
 * deadline, per window: need.
 *
 * Returns what the admission script would answer each request, in few
 * numbers (Redis makes one reply object per number, hiredis one more,
 * and a worker one allocation each): {now, nwin, per window: sum,
 * reset (before the first request)}, then per request "code", status
 * (0-4) + 8 when the resets changed, and:
 *   0, 2, 3  the wait unless 0; the new resets if code >= 8; the sums
 *            are the last ones, plus the request's needs if admitted;
 *   1        the wait, then per window: sum, reset, over (all of them);
 *   4        nothing (sums, resets 0, as the admission script's).
 * The sums change only by admissions and refusals (see load()).
 */

static char  ngx_http_llm_lua_batch[] =
NGX_HTTP_LLM_LUA_COMMON
NGX_HTTP_LLM_LUA_DECIDE
"local climit = ARGV[1] + 0\n"
"local lttl = ARGV[2] + 0\n"
"local cooldown = ARGV[3] + 0\n"
"local nwin = #KEYS - 2\n"
"local base = 3 + 2 * nwin\n"
"local nreq = (#ARGV - base) / (2 + nwin)\n"
"local win, cool, held, leases, nl = {}, nil, 0, {}, 0\n"
"local lscore = climit > 0 and str(now + lttl)\n"
"local out = { now, nwin, 0, 0, nil, nil, nil, nil, nil, nil, nil, nil,\n"
"  nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil }\n"
"local n, last = 2 + 2 * nwin, {}\n"
"for i = 1, nwin do\n"
"  out[2 * i + 1], out[2 * i + 2], last[i] = 0, 0, 0\n"
"end\n"
"for r = 0, nreq - 1 do\n"
"  local a = base + r * (2 + nwin)\n"
"  local deadline = ARGV[a + 2] + 0\n"
"  if deadline > 0 and now > deadline then\n"
"    n = n + 1\n"
"    out[n] = 4\n"
"  else\n"
"    if cool == nil then\n"
"      for i = 1, nwin do\n"
"        local w = load(KEYS[i + 2], ARGV[2 * i + 2] + 0,\n"
"                       ARGV[2 * i + 3] + 0, 0)\n"
"        win[i] = w\n"
"        last[i] = free_in(w, 1)\n"
"        out[2 * i + 1], out[2 * i + 2] = w.sum, last[i]\n"
"      end\n"
"      cool = cooldown > 0 and call('PTTL', KEYS[2]) or 0\n"
"      if cool <= 0 and climit > 0 then\n"
"        call('ZREMRANGEBYSCORE', KEYS[1], '-inf', str(now))\n"
"        held = call('ZCARD', KEYS[1])\n"
"      end\n"
"    end\n"
"    local status, wait = 0, 0\n"
"    for i = 1, nwin do\n"
"      local w = win[i]\n"
"      w.need, w.over = ARGV[a + 2 + i] + 0, false\n"
"    end\n"
"    if cool > 0 then\n"
"      status, wait = 3, cool\n"
"    elseif climit > 0 and held >= climit then\n"
"      status, wait = 2, 1000\n"
"    end\n"
"    if status == 0 then\n"
"      local never\n"
"      status, wait, never = over(win, status, wait)\n"
"      if status == 1 and cooldown > 0 and not never then\n"
"        call('SET', KEYS[2], '1', 'PX', str(cooldown))\n"
"        cool = cooldown\n"
"        if cooldown > wait then wait = cooldown end\n"
"      end\n"
"    end\n"
"    if status == 0 then\n"
"      for i = 1, nwin do\n"
"        local w = win[i]\n"
"        local need = w.need\n"
"        if need > 0 then\n"
"          w.here = (w.here or 0) + need\n"
"          w.sum = w.sum + need\n"
"          w.added = w.added + need\n"
"          if w.counts then\n"
"            w.counts[w.cur] = (w.counts[w.cur] or 0) + need\n"
"          end\n"
"          if not w.o or w.o > w.cur then w.o = w.cur end\n"
"        end\n"
"      end\n"
"      if climit > 0 then\n"
"        held = held + 1\n"
"        leases[nl + 1], leases[nl + 2] = lscore, ARGV[a + 1]\n"
"        nl = nl + 2\n"
"      end\n"
"    end\n"
"    if status == 1 then\n"
"      out[n + 1], out[n + 2] = 1, wait\n"
"      n = n + 2\n"
"      for i = 1, nwin do\n"
"        local w = win[i]\n"
"        last[i] = free_in(w, 1)\n"
"        out[n + 1], out[n + 2], out[n + 3] = w.sum, last[i], w.over or -1\n"
"        n = n + 3\n"
"      end\n"
"    else\n"
"      local code, at = status, n + 1\n"
"      n = n + 1\n"
"      if status ~= 0 then\n"
"        n = n + 1\n"
"        out[n] = wait\n"
"      end\n"
"      for i = 1, nwin do\n"
"        local reset = free_in(win[i], 1)\n"
"        if reset ~= last[i] then code = status + 8 end\n"
"        last[i] = reset\n"
"      end\n"
"      out[at] = code\n"
"      if code >= 8 then\n"
"        for i = 1, nwin do\n"
"          out[n + i] = last[i]\n"
"        end\n"
"        n = n + nwin\n"
"      end\n"
"    end\n"
"  end\n"
"end\n"
"for i = 1, #win do\n"
"  local w = win[i]\n"
"  if w.added > 0 then\n"
"    save(w, w.here, w.here == w.added)\n"
"  else\n"
"    save(w, nil)\n"
"  end\n"
"end\n"
"if nl > 0 then\n"
"  call('ZADD', KEYS[1], unpack(leases))\n"
"  call('PEXPIRE', KEYS[1], str(lttl))\n"
"end\n"
"return out\n";



/*
 * Shared by the settle and replay scripts: put(w, s0, delta) changes
 * slot s0 of window w (loaded, s0 in the window) by "delta", never
 * below zero, and keeps the running total "t" and the oldest slot "o"
 * right (save() writes them); returns the slot's new count, and the
 * slot's name when it has left writing the slot to save() (one HSET
 * with the total).
 */

#define NGX_HTTP_LLM_LUA_PUT                                                  \
"local function put(w, s0, delta)\n"                                          \
"  local key, cur = w.key, w.cur\n"                                           \
"  local ss = s0 == cur and w.cs or fmt('%d', s0)\n"                          \
"  local old = s0 == cur and (w.here or 0)\n"                                 \
"              or tonumber(call('HGET', key, ss)) or 0\n"                     \
"  local v = old + delta\n"                                                   \
"  if v < 0 then v = 0 end\n"                                                 \
"  local sum = w.sum + v - old\n"                                             \
"  w.sum, w.dirty = sum, true\n"                                              \
"  if s0 == cur then w.here = v end\n"                                        \
"  if v > 0 then\n"                                                           \
"    if not w.o or s0 < w.o then w.o = s0 end\n"                              \
"    if w.period ~= 0 and sum > 0 then return v, ss end\n"                    \
"    call('HSET', key, ss, str(v))\n"                                         \
"  else\n"                                                                    \
"    call('HDEL', key, ss)\n"                                                 \
"    if s0 == cur then w.hot = nil end\n"                                     \
"    if w.o == s0 then\n"                                                     \
"      if w.hot then call('HSET', key, w.cs, str(w.here)) w.hot = nil end\n"  \
"      full(w)\n"                                                             \
"    end\n"                                                                   \
"    w.dirty = true\n"                                                        \
"  end\n"                                                                     \
"  return v\n"                                                                \
"end\n"


/*
 * Shared by the settle scripts: settle(w, t0, delta) puts "delta" into
 * the slot of the reservation's time t0 while that slot is in window w,
 * else, when positive, into the current slot; returns put()'s answer
 * and whether the key's expiry is to be set: only when the current
 * slot held nothing before (as for an admission: the first write into
 * the current slot sets it, and it outlives every older slot).
 */

#define NGX_HTTP_LLM_LUA_SETTLE                                               \
"local function settle(w, t0, delta)\n"                                       \
"  local period, cur = w.period, w.cur\n"                                     \
"  local s0 = period == 0 and mo(t0) or floor(t0 / (period / 10))\n"          \
"  if s0 < w.lo or s0 > cur then\n"                                           \
"    if delta <= 0 then\n"                                                    \
"      w.dirty = true\n"                                                      \
"      return\n"                                                              \
"    end\n"                                                                   \
"    s0 = cur\n"                                                              \
"  end\n"                                                                     \
"  local had = (w.here or 0) > 0\n"                                           \
"  local v, ss = put(w, s0, delta)\n"                                         \
"  return v, ss, v > 0 and not had\n"                                         \
"end\n"


/*
 * KEYS: window keys.  ARGV: the reservation's time (Redis ms), then
 * per window: period, actual - reserved.  The difference goes to the
 * reservation's slot while that slot is in the window (never below
 * zero), else, when positive, to the current slot.
 */

static char  ngx_http_llm_lua_settle[] =
NGX_HTTP_LLM_LUA_COMMON
NGX_HTTP_LLM_LUA_PUT
NGX_HTTP_LLM_LUA_SETTLE
"local t0 = ARGV[1] + 0\n"
"for i = 1, #KEYS do\n"
"  local w = load(KEYS[i], ARGV[2 * i] + 0, 0, 0)\n"
"  local v, ss, fresh = settle(w, t0, ARGV[2 * i + 1] + 0)\n"
"  save(w, ss and v, fresh, ss)\n"
"end\n"
"return 1\n";


/*
 * The settles of one account and tier queued in one event-loop
 * iteration of a worker, in one call: each changes Redis exactly as
 * the settle script would, one after the other (each window is read
 * once).  KEYS: window keys.  ARGV: per window, its period; then per
 * settle: the reservation's time (Redis ms), per window: actual -
 * reserved (0: unchanged).  put() leaves a slot's count for save() to
 * write with the totals: the current slot's waits for the end (w.hot;
 * put() writes it before a recount reads the ring), another slot's is
 * written at once (a later settle may put into yet another slot).
 */

static char  ngx_http_llm_lua_settles[] =
NGX_HTTP_LLM_LUA_COMMON
NGX_HTTP_LLM_LUA_PUT
NGX_HTTP_LLM_LUA_SETTLE
"local nwin = #KEYS\n"
"local win, grew = {}, {}\n"
"for a = nwin, #ARGV - 1, nwin + 1 do\n"
"  local t0 = ARGV[a + 1] + 0\n"
"  for i = 1, nwin do\n"
"    local delta = ARGV[a + 1 + i] + 0\n"
"    if delta ~= 0 then\n"
"      local w = win[i]\n"
"      if not w then\n"
"        w = load(KEYS[i], ARGV[i] + 0, 0, 0)\n"
"        win[i] = w\n"
"      end\n"
"      local v, ss, fresh = settle(w, t0, delta)\n"
"      if ss == w.cs then\n"
"        w.hot = true\n"
"      elseif ss then\n"
"        call('HSET', w.key, ss, str(v))\n"
"      end\n"
"      if fresh then grew[i] = true end\n"
"    end\n"
"  end\n"
"end\n"
"for i = 1, nwin do\n"
"  local w = win[i]\n"
"  if w then save(w, w.hot and w.here, grew[i], w.hot and w.cs) end\n"
"end\n"
"return 1\n";


/* KEYS: conc.  ARGV: lease, ttl.  Extends a lease that still exists. */

static char  ngx_http_llm_lua_renew[] =
"local t = redis.call('TIME')\n"
"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
"local n = redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]),"
" ARGV[1])\n"
"if n > 0 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2])) end\n"
"return n\n";


/*
 * KEYS: a marker, then window keys.  ARGV: marker ttl, the time (Redis
 * ms) the batch was counted at, then per window: period, amount.  Adds
 * what the zone counted during an outage to the slot it was counted
 * in, while that slot is in the window (usage that has left it no
 * longer counts); a negative amount (refunds: settlements below their
 * reservations) is taken back there as the settle script does, never
 * below zero.  A time ahead of Redis's clock (a node's guess of it)
 * is the current slot.  Once only: a batch whose marker exists changes
 * nothing.
 */

static char  ngx_http_llm_lua_replay[] =
NGX_HTTP_LLM_LUA_COMMON
NGX_HTTP_LLM_LUA_PUT
"if not call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then\n"
"  return 0\n"
"end\n"
"local t0 = ARGV[2] + 0\n"
"for i = 2, #KEYS do\n"
"  local period, n = ARGV[2 * i - 1] + 0, ARGV[2 * i] + 0\n"
"  local w = load(KEYS[i], period, 0, 0)\n"
"  local s0 = period == 0 and mo(t0) or floor(t0 / (period / 10))\n"
"  if s0 > w.cur then s0 = w.cur end\n"
"  if n ~= 0 and s0 >= w.lo then\n"
"    local v, ss = put(w, s0, n)\n"
"    save(w, ss and v, v > 0, ss)\n"
"  else\n"
"    save(w, nil)\n"
"  end\n"
"end\n"
"return 1\n";


/*
 * KEYS: window keys.  ARGV: per window, its period.  Reads, changes
 * nothing.  Returns {now, then per window: sum, reset}, reset as in
 * the admission script.
 */

static char  ngx_http_llm_lua_usage[] =
NGX_HTTP_LLM_LUA_COMMON
"local out = { now }\n"
"for i = 1, #KEYS do\n"
"  local period = tonumber(ARGV[i])\n"
"  local cur = period == 0 and (mo or months())(now)\n"
"              or floor(now / (period / 10))\n"
"  local lo = period == 0 and cur or cur - 10\n"
"  local flat = redis.call('HGETALL', KEYS[i])\n"
"  local sum, o, reset = 0, nil, 0\n"
"  for j = 1, #flat, 2 do\n"
"    local s = tonumber(flat[j])\n"
"    local v = tonumber(flat[j + 1]) or 0\n"
"    if s and s >= lo and v > 0 then\n"
"      sum = sum + v\n"
"      if o == nil or s < o then o = s end\n"
"    end\n"
"  end\n"
"  if sum > 0 and period == 0 then\n"
"    reset = mstart(cur + 1) - now\n"
"  elseif sum > 0 then\n"
"    reset = math.max((o + 11) * (period / 10) - now, 0)\n"
"  end\n"
"  out[#out + 1] = sum\n"
"  out[#out + 1] = floor(reset)\n"
"end\n"
"return out\n";


ngx_http_llm_redis_script_t  ngx_http_llm_rstore_scripts[] = {
    { ngx_http_llm_lua_admit, sizeof(ngx_http_llm_lua_admit) - 1, "" },
    { ngx_http_llm_lua_settle, sizeof(ngx_http_llm_lua_settle) - 1, "" },
    { ngx_http_llm_lua_renew, sizeof(ngx_http_llm_lua_renew) - 1, "" },
    { ngx_http_llm_lua_replay, sizeof(ngx_http_llm_lua_replay) - 1, "" },
    { ngx_http_llm_lua_usage, sizeof(ngx_http_llm_lua_usage) - 1, "" },
    { ngx_http_llm_lua_batch, sizeof(ngx_http_llm_lua_batch) - 1, "" },
    { ngx_http_llm_lua_settles, sizeof(ngx_http_llm_lua_settles) - 1, "" },
};


/*
 * The batch script's answer (see its text above): NGX_OK if it is one,
 * its header read; then ngx_http_llm_rstore_unpack() gives each
 * request's answer in u->one, in order.
 */

ngx_int_t
ngx_http_llm_rstore_unpack_init(ngx_http_llm_rstore_unpack_t *u,
    ngx_http_llm_rstore_op_t *op, ngx_http_llm_redis_reply_t *reply)
{
    ngx_uint_t  i;

    u->nwin = op->nkeys - 2;

    if (reply == NULL || reply->type != NGX_HTTP_LLM_REDIS_ARRAY
        || u->nwin > NGX_HTTP_LLM_WINDOWS_MAX
        || reply->nelts < 2 + 2 * u->nwin)
    {
        return NGX_ERROR;
    }

    u->e = reply->elts;
    u->nelts = reply->nelts;

    for (i = 0; i < u->nelts; i++) {
        if (u->e[i].type != NGX_HTTP_LLM_REDIS_INTEGER) {
            return NGX_ERROR;
        }
    }

    if (u->e[1].integer != (int64_t) u->nwin) {
        return NGX_ERROR;
    }

    u->now = u->e[0].integer;

    for (i = 0; i < u->nwin; i++) {
        u->sum[i] = u->e[2 + 2 * i].integer;
        u->reset[i] = u->e[3 + 2 * i].integer;
    }

    u->k = 2 + 2 * u->nwin;

    ngx_memzero(&u->one, sizeof(ngx_http_llm_redis_reply_t));
    u->one.type = NGX_HTTP_LLM_REDIS_ARRAY;
    u->one.nelts = 4 + 3 * u->nwin;
    u->one.elts = u->elts;

    for (i = 0; i < u->one.nelts; i++) {
        ngx_memzero(&u->elts[i], sizeof(ngx_http_llm_redis_reply_t));
        u->elts[i].type = NGX_HTTP_LLM_REDIS_INTEGER;
    }

    return NGX_OK;
}


/* request "r"'s answer; NGX_ERROR: the answer is not the script's */

ngx_int_t
ngx_http_llm_rstore_unpack(ngx_http_llm_rstore_unpack_t *u,
    ngx_http_llm_rstore_op_t *op, ngx_uint_t r)
{
    int64_t                      code, status, wait;
    ngx_int_t                    need;
    ngx_uint_t                   i, a, nwin;
    ngx_http_llm_redis_reply_t  *e, *o;

    e = u->e;
    o = u->elts;
    nwin = u->nwin;

    if (u->k >= u->nelts) {
        return NGX_ERROR;
    }

    code = e[u->k++].integer;
    status = code & 7;
    wait = 0;

    if (code < 0 || code > 11 || status > 4
        || (code >= 8 && (status == 1 || status == 4)))
    {
        return NGX_ERROR;
    }

    if (status == 1) {
        if (u->k + 1 + 3 * nwin > u->nelts) {
            return NGX_ERROR;
        }

        wait = e[u->k++].integer;

        for (i = 0; i < nwin; i++) {
            u->sum[i] = e[u->k].integer;
            u->reset[i] = e[u->k + 1].integer;

            o[4 + 3 * i].integer = u->sum[i];
            o[5 + 3 * i].integer = u->reset[i];
            o[6 + 3 * i].integer = e[u->k + 2].integer;

            u->k += 3;
        }

    } else if (status != 4) {

        if (status != 0) {
            if (u->k >= u->nelts) {
                return NGX_ERROR;
            }

            wait = e[u->k++].integer;

        } else {
            /* argv of ARGV[k]: 2 + nkeys + k; the request's needs */

            a = 2 + op->nkeys + 3 + 2 * nwin + r * (2 + nwin) + 3;

            for (i = 0; i < nwin; i++) {
                need = ngx_atoi((u_char *) op->cmd.argv[a + i],
                                op->cmd.argvlen[a + i]);
                if (need > 0) {
                    u->sum[i] += need;
                }
            }
        }

        if (code >= 8) {
            if (u->k + nwin > u->nelts) {
                return NGX_ERROR;
            }

            for (i = 0; i < nwin; i++) {
                u->reset[i] = e[u->k++].integer;
            }
        }
    }

    o[0].integer = status;
    o[1].integer = u->now;
    o[2].integer = wait;
    o[3].integer = nwin;

    if (status == 1) {
        return NGX_OK;
    }

    for (i = 0; i < nwin; i++) {
        /* too late: nothing changed, as the admission script answers */
        o[4 + 3 * i].integer = (status == 4) ? 0 : u->sum[i];
        o[5 + 3 * i].integer = (status == 4) ? 0 : u->reset[i];
        o[6 + 3 * i].integer = -1;
    }

    return NGX_OK;
}
