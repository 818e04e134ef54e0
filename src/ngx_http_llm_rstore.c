
/*
 * ngx_llm_gateway: counters in Redis, shared by a fleet of nodes.
 *
 * Owns what "llm_redis" changes in an admission: one Lua script
 * (EVALSHA, EVAL when Redis answers NOSCRIPT) checks and reserves all
 * of a request's windows, its concurrency slot and cooldown in one
 * round trip, atomically; the reply fills the same decision the zone
 * store fills.  Later, off the request's path: the concurrency slot is
 * given back (ZREM) when the request's pool goes, a settle script
 * replaces a reservation by the actual usage, and a worker timer keeps
 * the leases of long requests alive.
 *
 * Keys (one Cluster hash tag per account, so one slot per decision):
 *
 *   PREFIX{acct:ACCOUNT}:w:DIMENSION:PERIOD   hash: slot number -> count,
 *                                             and t, c, o (see below)
 *   PREFIX{acct:ACCOUNT}:conc                 zset: lease -> expiry (ms)
 *   PREFIX{acct:ACCOUNT}:cool                 cooldown, PX its length
 *
 * DIMENSION is requests, tokens, input_tokens, output_tokens or cost;
 * PERIOD is 1s, 1m, 1h, 1d or 1mo, so counts follow the (dimension,
 * period) tag across reloads and tier changes, as in the zone.  The
 * ring is the zone's: a slot is period/10 wide and the window sums the
 * current slot and the ten before it; a month is one field, the month
 * number since January 1970 (UTC).  The clock is Redis's own TIME, the
 * one clock every node shares; slot numbers count from the epoch.
 * Each window key expires 1.1 periods and a second (a month key: a
 * day after its month) after the first write into its current slot,
 * which is after every slot it counts has left the window.  A lease
 * expires 60 s after it was taken or renewed (every 20 s while its
 * request runs), so a crashed worker's slots come back within 60 s.
 *
 * Admissions are coalesced (llm_redis batch=N): those of one account
 * and tier made in one event-loop iteration of a worker wait in a
 * pending batch, and a posted event sends each batch at the end of the
 * iteration as one call of the batch script, which decides them in
 * order exactly as the admission script would one by one; each request
 * gets its own answer.  batch=1 sends each admission alone.
 *
 * While Redis fails, on_error decides: "local" asks the zone with the
 * same limits, "deny" answers 503, "allow" lets the request through
 * uncounted.  A request waits for Redis at most llm_redis timeout in
 * all (ctx->redis_waited: a key lookup before the admission takes its
 * share), each request of a batch until its own deadline; an admission
 * the request stopped waiting for goes on alone, and what Redis grants
 * it then goes back (the script refuses to run after the deadline it
 * is given, the request's own, on Redis's clock).
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_limits.h"
#include "ngx_http_llm_store.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_rstore.h"
#include "ngx_http_llm_replay.h"


#define NGX_HTTP_LLM_LEASE_TTL      60000
#define NGX_HTTP_LLM_LEASE_RENEW    20000

#define NGX_HTTP_LLM_SCRIPT_ADMIT   0
#define NGX_HTTP_LLM_SCRIPT_SETTLE  1
#define NGX_HTTP_LLM_SCRIPT_RENEW   2
#define NGX_HTTP_LLM_SCRIPT_REPLAY  3
#define NGX_HTTP_LLM_SCRIPT_USAGE   4
#define NGX_HTTP_LLM_SCRIPT_BATCH   5
#define NGX_HTTP_LLM_SCRIPTS        6

/* pending batches, by their account's hash */
#define NGX_HTTP_LLM_BATCH_BUCKETS  64

/* a replayed batch is not added twice for this long (its marker) */
#define NGX_HTTP_LLM_REPLAY_MARK    600000


typedef struct ngx_http_llm_rstore_op_s  ngx_http_llm_rstore_op_t;


/* per request, in its pool: ctx->redis */
typedef struct {
    ngx_http_request_t         *request;
    ngx_http_llm_ctx_t         *ctx;
    ngx_http_llm_tier_t        *tier;
    ngx_http_llm_rstore_op_t   *op;        /* the admission on its way */
    ngx_http_llm_decision_t     d;
    ngx_int_t                   rc;
    uint64_t                    t0;        /* Redis ms of the reservation */
    ngx_queue_t                 queue;     /* leases to renew */
    ngx_msec_t                  start;     /* waits for Redis since */
    ngx_msec_t                  deadline;  /* stops waiting then */
    ngx_str_t                   conc_key;
    ngx_str_t                   lease;
    ngx_str_t                  *wkeys;     /* the windows' keys */
    uint64_t                   *usage;     /* llm_usage: used, reset */
    ngx_uint_t                  slot;      /* in its batch */

    unsigned                    pending:1;
    unsigned                    counted:1; /* in Redis */
    unsigned                    leased:1;  /* a Redis lease is held */
    unsigned                    local:1;   /* the zone counted it */
} ngx_http_llm_rstore_req_t;


struct ngx_http_llm_rstore_op_s {
    ngx_http_llm_redis_cmd_t    cmd;       /* first */
    ngx_http_llm_rstore_req_t  *req;       /* NULL: nobody waits */
    ngx_uint_t                  nkeys;
    void                       *replay;    /* replay.c's batch */

    /* a batch of admissions (the batch script): its requests, in order */
    ngx_queue_t                 queue;     /* pending batches */
    ngx_http_llm_tier_t        *tier;
    ngx_http_llm_rstore_req_t **reqs;      /* NULL: not a batch */
    ngx_uint_t                  nreq;
    ngx_uint_t                  maxreq;

    unsigned                    queued:1;  /* not sent yet */
};


/*
 * A settle: what it changes, replayed (ngx_http_llm_replay.c) when Redis
 * cannot have run it; the account's name follows.
 */
typedef struct {
    ngx_http_llm_rstore_op_t    op;        /* first */
    ngx_http_llm_tier_t        *tier;
    uint64_t                    t0;        /* its reservation, Redis ms */
    int64_t                     diff[5];   /* used - reserved */
    ngx_str_t                   account;
} ngx_http_llm_rstore_settle_t;


static ngx_http_llm_rstore_req_t *ngx_http_llm_rstore_req(
    ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_tier_t *tier);
static ngx_int_t ngx_http_llm_rstore_enqueue(ngx_http_llm_rstore_req_t *st,
    ngx_http_llm_decision_t *d, int64_t deadline);
static void ngx_http_llm_rstore_flush(ngx_event_t *ev);
static void ngx_http_llm_rstore_single(ngx_http_llm_rstore_op_t *op);
static void ngx_http_llm_rstore_batched(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply);
static void ngx_http_llm_rstore_answer(ngx_http_llm_rstore_req_t *st,
    ngx_http_llm_redis_reply_t *reply, const char *error);
static void ngx_http_llm_rstore_expire(ngx_http_llm_redis_op_t *rop);
static void ngx_http_llm_rstore_usage_expire(ngx_http_llm_redis_op_t *rop);
static void ngx_http_llm_rstore_usage_wake(ngx_http_llm_rstore_req_t *st);
/* an op's command (ngx_http_llm_redis.c builds and sends it) */
#define ngx_http_llm_rstore_arg(o, data, len)                                 \
    ngx_http_llm_redis_cmd_arg(&(o)->cmd, data, len)
#define ngx_http_llm_rstore_num(o, n)                                         \
    ngx_http_llm_redis_cmd_num(&(o)->cmd, n)
#define ngx_http_llm_rstore_send(o)                                           \
    ngx_http_llm_redis_cmd_send(&(o)->cmd)
#define ngx_http_llm_rstore_noscript(o, reply)                                \
    ngx_http_llm_redis_cmd_noscript(&(o)->cmd, reply)


static ngx_http_llm_rstore_op_t *ngx_http_llm_rstore_op(ngx_uint_t script,
    int argc, size_t strings, ngx_str_t *conc_key);
static ngx_http_llm_rstore_op_t *ngx_http_llm_rstore_op_alloc(
    ngx_uint_t script, int argc, size_t strings, ngx_str_t *conc_key,
    ngx_uint_t nreq);
static void ngx_http_llm_rstore_admitted(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply);
static ngx_int_t ngx_http_llm_rstore_parse(ngx_http_llm_rstore_req_t *st,
    ngx_http_llm_redis_reply_t *reply);
static ngx_int_t ngx_http_llm_rstore_fallback(ngx_http_request_t *r,
    ngx_http_llm_rstore_req_t *st, ngx_http_llm_decision_t *d);
static void ngx_http_llm_rstore_done(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply);
static void ngx_http_llm_rstore_settled(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply);
static void ngx_http_llm_rstore_unsettled(ngx_http_llm_rstore_settle_t *op,
    const char *why);
static void ngx_http_llm_rstore_replayed(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply);
static void ngx_http_llm_rstore_usage_read(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply);
static void ngx_http_llm_rstore_release(ngx_str_t *key, ngx_str_t *lease);
static void ngx_http_llm_rstore_refund(ngx_http_llm_rstore_op_t *adm,
    int64_t t0, ngx_uint_t period, ngx_uint_t pstride, ngx_uint_t need,
    ngx_uint_t nstride);
static void ngx_http_llm_rstore_cleanup(void *data);
static void ngx_http_llm_rstore_renew(ngx_event_t *ev);
static void ngx_http_llm_rstore_scripts_init(void);


/*
 * Shared by the scripts: the clock, slots and months.  "mo" counts
 * months from January 1970; mstart() is a month's first millisecond
 * (after Howard Hinnant's civil date algorithms).
 *
 * A sliding window's hash also keeps its running total: "t", the sum
 * of the slots in the window as of slot "c", and "o", the oldest slot
 * holding a count (0: none).  While the current slot is "c", load()
 * reads those three and the current slot (one HMGET) instead of the
 * whole ring; once the clock has moved into a new slot, full() counts
 * the ring again (HGETALL, stale slots deleted), so a total that some
 * other writer left wrong is right again within a tenth of the period.
 * save() writes the current slot with the new total, and the total
 * alone only if it changed (a refusal writes nothing); an empty window
 * drops them, so they never keep a key alive without its expiry.  A
 * month is one field and is always read whole.
 */

#define NGX_HTTP_LLM_LUA_COMMON                                               \
"if redis.replicate_commands then redis.replicate_commands() end\n"           \
"local t = redis.call('TIME')\n"                                              \
"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"     \
"local floor = math.floor\n"                                                  \
"local function mo(ms)\n"                                                     \
"  local z = floor(ms / 86400000) + 719468\n"                                 \
"  local era = floor(z / 146097)\n"                                           \
"  local doe = z - era * 146097\n"                                            \
"  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524)\n"         \
"                     - floor(doe / 146096)) / 365)\n"                        \
"  local y = yoe + era * 400\n"                                               \
"  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))\n"       \
"  local mp = floor((5 * doy + 2) / 153)\n"                                   \
"  local m = mp < 10 and mp + 3 or mp - 9\n"                                  \
"  if m <= 2 then y = y + 1 end\n"                                            \
"  return (y - 1970) * 12 + m - 1\n"                                          \
"end\n"                                                                       \
"local function mstart(n)\n"                                                  \
"  local y = 1970 + floor(n / 12)\n"                                          \
"  local m = n % 12 + 1\n"                                                    \
"  if m <= 2 then y = y - 1 end\n"                                            \
"  local era = floor(y / 400)\n"                                              \
"  local yoe = y - era * 400\n"                                               \
"  local mp = m > 2 and m - 3 or m + 9\n"                                     \
"  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100)\n"               \
"              + floor((153 * mp + 2) / 5)\n"                                 \
"  return (era * 146097 + doe - 719468) * 86400000\n"                         \
"end\n"                                                                       \
"local function slot(period, ms)\n"                                           \
"  if period == 0 then return mo(ms) end\n"                                   \
"  return floor(ms / (period / 10))\n"                                        \
"end\n"                                                                       \
"local function ttl(period, cur)\n"                                           \
"  if period == 0 then return mstart(cur + 1) - now + 86400000 end\n"         \
"  return period + period / 10 + 1000\n"                                      \
"end\n"                                                                       \
"local function full(w)\n"                                                    \
"  local flat = redis.call('HGETALL', w.key)\n"                               \
"  local stale = {}\n"                                                        \
"  w.counts, w.sum, w.o = {}, 0, nil\n"                                       \
"  for j = 1, #flat, 2 do\n"                                                  \
"    local s = tonumber(flat[j])\n"                                           \
"    if s == nil then\n"                                                      \
"    elseif s < w.lo then\n"                                                  \
"      stale[#stale + 1] = flat[j]\n"                                         \
"    else\n"                                                                  \
"      local v = tonumber(flat[j + 1]) or 0\n"                                \
"      w.counts[s] = (w.counts[s] or 0) + v\n"                                \
"      w.sum = w.sum + v\n"                                                   \
"      if v > 0 and (w.o == nil or s < w.o) then w.o = s end\n"               \
"    end\n"                                                                   \
"  end\n"                                                                     \
"  if #stale > 0 then redis.call('HDEL', w.key, unpack(stale)) end\n"         \
"  w.here = w.counts[w.cur]\n"                                                \
"  w.dirty = w.period > 0\n"                                                  \
"end\n"                                                                       \
"local function load(w)\n"                                                    \
"  w.cur = slot(w.period, now)\n"                                             \
"  w.lo = w.period == 0 and w.cur or w.cur - 10\n"                            \
"  if w.period == 0 then return full(w) end\n"                                \
"  local v = redis.call('HMGET', w.key, 't', 'c', 'o', w.cur)\n"              \
"  if tonumber(v[2]) ~= w.cur then return full(w) end\n"                      \
"  w.sum = tonumber(v[1]) or 0\n"                                             \
"  w.o = tonumber(v[3])\n"                                                    \
"  if w.o == 0 then w.o = nil end\n"                                          \
"  w.here = tonumber(v[4])\n"                                                 \
"end\n"                                                                       \
"local function save(w, v)\n"                                                 \
"  if w.period == 0 then\n"                                                   \
"    if v then redis.call('HSET', w.key, w.cur, v) end\n"                     \
"  elseif w.sum > 0 then\n"                                                   \
"    if v then\n"                                                             \
"      redis.call('HSET', w.key, w.cur, v, 't', w.sum, 'c', w.cur,\n"         \
"                 'o', w.o or 0)\n"                                           \
"    elseif w.dirty then\n"                                                   \
"      redis.call('HSET', w.key, 't', w.sum, 'c', w.cur, 'o', w.o or 0)\n"    \
"    end\n"                                                                   \
"  elseif w.dirty then\n"                                                     \
"    redis.call('HDEL', w.key, 't', 'c', 'o')\n"                              \
"  end\n"                                                                     \
"  w.dirty = false\n"                                                         \
"end\n"


/*
 * Shared by the admission and batch scripts: free_in(w, drop, recount)
 * is when "drop" units will have left window w (recount(w) fills
 * w.counts first if needed); over(win, status, wait) refuses on the
 * first window the needs do not fit, setting w.over, and returns the
 * status and wait.
 */

#define NGX_HTTP_LLM_LUA_DECIDE                                               \
"local function free_in(w, drop, recount)\n"                                  \
"  if w.sum <= 0 then return 0 end\n"                                         \
"  if w.period == 0 then return mstart(w.cur + 1) - now end\n"                \
"  local width = w.period / 10\n"                                             \
"  if drop == 1 and w.o then\n"                                               \
"    local at = (w.o + 11) * width\n"                                         \
"    return at > now and at - now or 0\n"                                     \
"  end\n"                                                                     \
"  if not w.counts then recount(w) end\n"                                     \
"  local freed = 0\n"                                                         \
"  for s = w.lo, w.cur do\n"                                                  \
"    freed = freed + (w.counts[s] or 0)\n"                                    \
"    if freed >= drop then\n"                                                 \
"      local at = (s + 11) * width\n"                                         \
"      if at > now then return at - now end\n"                                \
"      return 0\n"                                                            \
"    end\n"                                                                   \
"  end\n"                                                                     \
"  return w.period + width\n"                                                 \
"end\n"                                                                       \
"local function over(win, recount, status, wait)\n"                           \
"  for i = 1, #win do\n"                                                      \
"    local w = win[i]\n"                                                      \
"    if w.need > 0 and w.sum + w.need > w.limit then\n"                       \
"      if w.need > w.limit then\n"                                            \
"        w.over = w.period > 0 and w.period or 86400000\n"                    \
"      else\n"                                                                \
"        w.over = free_in(w, w.sum + w.need - w.limit, recount)\n"            \
"      end\n"                                                                 \
"      status = 1\n"                                                          \
"      if w.over > wait then wait = w.over end\n"                             \
"    end\n"                                                                   \
"  end\n"                                                                     \
"  return status, wait\n"                                                     \
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
"local climit = tonumber(ARGV[1])\n"
"local nwin = #KEYS - 2\n"
"local deadline = tonumber(ARGV[5])\n"
"if deadline > 0 and now > deadline then\n"
"  local out = { 4, now, 0, nwin }\n"
"  for i = 1, nwin do\n"
"    out[#out + 1] = 0; out[#out + 1] = 0; out[#out + 1] = -1\n"
"  end\n"
"  return out\n"
"end\n"
"local win = {}\n"
"for i = 1, nwin do\n"
"  local w = { key = KEYS[i + 2], period = tonumber(ARGV[3 * i + 3]),\n"
"              limit = tonumber(ARGV[3 * i + 4]),\n"
"              need = tonumber(ARGV[3 * i + 5]) }\n"
"  load(w)\n"
"  win[i] = w\n"
"end\n"
"local status, wait = 0, 0\n"
"local cooldown = tonumber(ARGV[4])\n"
"local cool = cooldown > 0 and redis.call('PTTL', KEYS[2]) or 0\n"
"if cool > 0 then\n"
"  status, wait = 3, cool\n"
"elseif climit > 0 then\n"
"  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
"  if redis.call('ZCARD', KEYS[1]) >= climit then status, wait = 2, 1000 end\n"
"end\n"
"if status == 0 then\n"
"  status, wait = over(win, full, status, wait)\n"
"  if status == 1 and cooldown > 0 then\n"
"    redis.call('SET', KEYS[2], '1', 'PX', cooldown)\n"
"    if cooldown > wait then wait = cooldown end\n"
"  end\n"
"end\n"
"for i = 1, nwin do\n"
"  local w = win[i]\n"
"  if status == 0 and w.need > 0 then\n"
"    local v = (w.here or 0) + w.need\n"
"    w.sum = w.sum + w.need\n"
"    if w.o == nil or w.o > w.cur then w.o = w.cur end\n"
"    save(w, v)\n"
"    if v == w.need then\n"
"      redis.call('PEXPIRE', w.key, floor(ttl(w.period, w.cur)))\n"
"    end\n"
"  else\n"
"    save(w, nil)\n"
"  end\n"
"end\n"
"if status == 0 and climit > 0 then\n"
"  local lttl = tonumber(ARGV[3])\n"
"  redis.call('ZADD', KEYS[1], now + lttl, ARGV[2])\n"
"  redis.call('PEXPIRE', KEYS[1], lttl)\n"
"end\n"
"local out = { status, now, floor(wait), nwin }\n"
"for i = 1, nwin do\n"
"  local w = win[i]\n"
"  out[#out + 1] = w.sum\n"
"  out[#out + 1] = floor(free_in(w, 1, full))\n"
"  out[#out + 1] = w.over and floor(w.over) or -1\n"
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
 * deadline, per window: need.  Returns the admission script's answer
 * of each request, one after the other (4 + 3 * nwin numbers each).
 */

static char  ngx_http_llm_lua_batch[] =
NGX_HTTP_LLM_LUA_COMMON
NGX_HTTP_LLM_LUA_DECIDE
"local climit = tonumber(ARGV[1])\n"
"local lttl = tonumber(ARGV[2])\n"
"local cooldown = tonumber(ARGV[3])\n"
"local nwin = #KEYS - 2\n"
"local base = 3 + 2 * nwin\n"
"local nreq = (#ARGV - base) / (2 + nwin)\n"
"local win, cool, held, leases = {}, nil, 0, {}\n"
"local function counted(w)\n"
"  full(w)\n"
"  if w.added > 0 then\n"
"    w.counts[w.cur] = (w.counts[w.cur] or 0) + w.added\n"
"    w.sum = w.sum + w.added\n"
"    w.here = (w.here or 0) + w.added\n"
"    if w.o == nil or w.o > w.cur then w.o = w.cur end\n"
"  end\n"
"end\n"
"local function prepare()\n"
"  for i = 1, nwin do\n"
"    local w = { key = KEYS[i + 2], period = tonumber(ARGV[2 * i + 2]),\n"
"                limit = tonumber(ARGV[2 * i + 3]), added = 0 }\n"
"    load(w)\n"
"    win[i] = w\n"
"  end\n"
"  cool = cooldown > 0 and redis.call('PTTL', KEYS[2]) or 0\n"
"  if cool <= 0 and climit > 0 then\n"
"    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
"    held = redis.call('ZCARD', KEYS[1])\n"
"  end\n"
"end\n"
"local out, n = {}, 0\n"
"for r = 0, nreq - 1 do\n"
"  local a = base + r * (2 + nwin)\n"
"  local deadline = tonumber(ARGV[a + 2])\n"
"  if deadline > 0 and now > deadline then\n"
"    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 4, now, 0, nwin\n"
"    n = n + 4\n"
"    for i = 1, nwin do\n"
"      out[n + 1], out[n + 2], out[n + 3] = 0, 0, -1\n"
"      n = n + 3\n"
"    end\n"
"  else\n"
"    if cool == nil then prepare() end\n"
"    local status, wait = 0, 0\n"
"    for i = 1, nwin do\n"
"      win[i].need = tonumber(ARGV[a + 2 + i])\n"
"      win[i].over = nil\n"
"    end\n"
"    if cool > 0 then\n"
"      status, wait = 3, cool\n"
"    elseif climit > 0 and held >= climit then\n"
"      status, wait = 2, 1000\n"
"    end\n"
"    if status == 0 then\n"
"      status, wait = over(win, counted, status, wait)\n"
"      if status == 1 and cooldown > 0 then\n"
"        redis.call('SET', KEYS[2], '1', 'PX', cooldown)\n"
"        cool = cooldown\n"
"        if cooldown > wait then wait = cooldown end\n"
"      end\n"
"    end\n"
"    if status == 0 then\n"
"      for i = 1, nwin do\n"
"        local w = win[i]\n"
"        if w.need > 0 then\n"
"          w.here = (w.here or 0) + w.need\n"
"          w.sum = w.sum + w.need\n"
"          w.added = w.added + w.need\n"
"          if w.counts then\n"
"            w.counts[w.cur] = (w.counts[w.cur] or 0) + w.need\n"
"          end\n"
"          if w.o == nil or w.o > w.cur then w.o = w.cur end\n"
"        end\n"
"      end\n"
"      if climit > 0 then\n"
"        held = held + 1\n"
"        leases[#leases + 1] = now + lttl\n"
"        leases[#leases + 1] = ARGV[a + 1]\n"
"      end\n"
"    end\n"
"    out[n + 1], out[n + 2], out[n + 3], out[n + 4] =\n"
"      status, now, floor(wait), nwin\n"
"    n = n + 4\n"
"    for i = 1, nwin do\n"
"      local w = win[i]\n"
"      out[n + 1], out[n + 2] = w.sum, floor(free_in(w, 1, counted))\n"
"      out[n + 3] = w.over and floor(w.over) or -1\n"
"      n = n + 3\n"
"    end\n"
"  end\n"
"end\n"
"for i = 1, #win do\n"
"  local w = win[i]\n"
"  if w.added > 0 then\n"
"    save(w, w.here)\n"
"    if w.here == w.added then\n"
"      redis.call('PEXPIRE', w.key, floor(ttl(w.period, w.cur)))\n"
"    end\n"
"  else\n"
"    save(w, nil)\n"
"  end\n"
"end\n"
"if #leases > 0 then\n"
"  redis.call('ZADD', KEYS[1], unpack(leases))\n"
"  redis.call('PEXPIRE', KEYS[1], lttl)\n"
"end\n"
"return out\n";



/*
 * Shared by the settle and replay scripts: put(w, s0, delta) changes
 * slot s0 of window w (loaded, s0 in the window) by "delta", never
 * below zero, and keeps the running total "t" and the oldest slot "o"
 * right (save() writes them); returns the slot's new count.
 */

#define NGX_HTTP_LLM_LUA_PUT                                                  \
"local function put(w, s0, delta)\n"                                          \
"  local old = s0 == w.cur and (w.here or 0)\n"                               \
"              or tonumber(redis.call('HGET', w.key, s0)) or 0\n"             \
"  local v = old + delta\n"                                                   \
"  if v < 0 then v = 0 end\n"                                                 \
"  w.sum = w.sum + v - old\n"                                                 \
"  if s0 == w.cur then w.here = v end\n"                                      \
"  if v > 0 then\n"                                                           \
"    redis.call('HSET', w.key, s0, v)\n"                                      \
"    if w.o == nil or s0 < w.o then w.o = s0 end\n"                           \
"  else\n"                                                                    \
"    redis.call('HDEL', w.key, s0)\n"                                         \
"    if w.o == s0 then full(w) end\n"                                         \
"  end\n"                                                                     \
"  w.dirty = true\n"                                                          \
"  return v\n"                                                                \
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
"local t0 = tonumber(ARGV[1])\n"
"for i = 1, #KEYS do\n"
"  local w = { key = KEYS[i], period = tonumber(ARGV[2 * i]) }\n"
"  local delta = tonumber(ARGV[2 * i + 1])\n"
"  load(w)\n"
"  local s0 = slot(w.period, t0)\n"
"  local v\n"
"  if s0 >= w.lo and s0 <= w.cur then\n"
"    v = put(w, s0, delta)\n"
"  elseif delta > 0 then\n"
"    v = put(w, w.cur, delta)\n"
"  end\n"
"  w.dirty = true\n"
"  save(w, nil)\n"
"  if v and v > 0 then\n"
"    redis.call('PEXPIRE', w.key, floor(ttl(w.period, w.cur)))\n"
"  end\n"
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
 * below zero.  Once only: a batch whose marker exists changes nothing.
 */

static char  ngx_http_llm_lua_replay[] =
NGX_HTTP_LLM_LUA_COMMON
NGX_HTTP_LLM_LUA_PUT
"if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then\n"
"  return 0\n"
"end\n"
"local t0 = tonumber(ARGV[2])\n"
"for i = 2, #KEYS do\n"
"  local w = { key = KEYS[i], period = tonumber(ARGV[2 * i - 1]) }\n"
"  local n = tonumber(ARGV[2 * i])\n"
"  load(w)\n"
"  local s0 = slot(w.period, t0)\n"
"  if n ~= 0 and s0 >= w.lo and s0 <= w.cur then\n"
"    local v = put(w, s0, n)\n"
"    save(w, nil)\n"
"    if v > 0 then\n"
"      redis.call('PEXPIRE', w.key, floor(ttl(w.period, w.cur)))\n"
"    end\n"
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
"  local cur = slot(period, now)\n"
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


static ngx_http_llm_redis_script_t  ngx_http_llm_scripts[] = {
    { ngx_http_llm_lua_admit, sizeof(ngx_http_llm_lua_admit) - 1, "" },
    { ngx_http_llm_lua_settle, sizeof(ngx_http_llm_lua_settle) - 1, "" },
    { ngx_http_llm_lua_renew, sizeof(ngx_http_llm_lua_renew) - 1, "" },
    { ngx_http_llm_lua_replay, sizeof(ngx_http_llm_lua_replay) - 1, "" },
    { ngx_http_llm_lua_usage, sizeof(ngx_http_llm_lua_usage) - 1, "" },
    { ngx_http_llm_lua_batch, sizeof(ngx_http_llm_lua_batch) - 1, "" },
};


static char  *ngx_http_llm_dim_names[] = {
    "requests", "tokens", "input_tokens", "output_tokens", "cost"
};


static ngx_uint_t   ngx_http_llm_rstore_inited;
static u_char       ngx_http_llm_lease_prefix[32];
static uint64_t     ngx_http_llm_lease_seq;
static ngx_queue_t  ngx_http_llm_leases;
static ngx_event_t  ngx_http_llm_renew_ev;

/* admissions waiting for the end of this loop iteration, in batches */
static ngx_queue_t  ngx_http_llm_batches[NGX_HTTP_LLM_BATCH_BUCKETS];
static ngx_event_t  ngx_http_llm_batch_ev;

/* Redis's clock minus this node's, as of the last admission's reply */
static int64_t      ngx_http_llm_rstore_skew;
static ngx_uint_t   ngx_http_llm_rstore_skew_known;


/*
 * Sends the admission of "ctx" to Redis.  NGX_AGAIN: the access
 * handler runs again when the answer (or the timeout) is in, and takes
 * it from ngx_http_llm_rstore_result().  Otherwise Redis is known to be
 * unavailable and on_error has decided already: the result is the
 * zone store's (plus NGX_HTTP_LLM_UNCOUNTED), "d" is filled.
 */

ngx_int_t
ngx_http_llm_rstore_admit(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_tier_t *tier, ngx_http_llm_decision_t *d)
{
    u_char                      *p;
    size_t                       klen, strings;
    int64_t                      deadline;
    ngx_msec_t                   left;
    ngx_uint_t                   i, nwin;
    ngx_http_llm_rstore_op_t    *op;
    ngx_http_llm_redis_conf_t   *rc;
    ngx_http_llm_rstore_req_t   *st;
    ngx_http_llm_window_conf_t  *wc;

    rc = ngx_http_llm_redis_conf();

    st = ngx_http_llm_rstore_req(r, ctx, tier);
    if (st == NULL) {
        return NGX_ERROR;
    }

    st->d = *d;

    if (rc == NULL) {
        goto fallback;
    }

    /* what is left of the request's time for Redis (a key lookup's) */

    left = ngx_http_llm_redis_left(ctx->redis_waited);

    if (left == 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "llm_redis: no decision for \"%V\" (no time left), "
                      "on_error applies", &ctx->account);
        goto fallback;
    }

    st->start = ngx_current_msec;
    st->deadline = ngx_current_msec + left;

    /* when this node stops waiting, on Redis's clock (0: unknown yet) */

    deadline = ngx_http_llm_rstore_skew_known
               ? (int64_t) ngx_http_llm_now() + left
                 + ngx_http_llm_rstore_skew
               : 0;

    nwin = tier->windows.nelts;
    wc = tier->windows.elts;

    klen = st->conc_key.len + sizeof(":w:output_tokens:1mo") - 1;

    if (tier->concurrency) {
        p = ngx_pnalloc(r->pool, 64);
        if (p == NULL) {
            return NGX_ERROR;
        }

        st->lease.data = p;
        p = ngx_sprintf(p, "%s:%uL", ngx_http_llm_lease_prefix,
                        ++ngx_http_llm_lease_seq);
        st->lease.len = p - st->lease.data;
    }

    if (rc->batch > 1) {
        if (ngx_http_llm_rstore_enqueue(st, d, deadline) != NGX_OK) {
            return NGX_ERROR;
        }

        goto pending;
    }

    /* EVALSHA sha numkeys conc cool windows... 5 + 3 per window */

    strings = (klen + 1) * (nwin + 2) + (NGX_INT64_LEN + 1) * (5 + 3 * nwin)
              + st->lease.len + 64;

    op = ngx_http_llm_rstore_op(NGX_HTTP_LLM_SCRIPT_ADMIT,
                                3 + 2 + nwin + 5 + 3 * nwin, strings,
                                &st->conc_key);
    if (op == NULL) {
        return NGX_ERROR;
    }

    op->nkeys = 2 + nwin;

    ngx_http_llm_rstore_num(op, 2 + nwin);
    ngx_http_llm_rstore_arg(op, st->conc_key.data, st->conc_key.len);

    /* the cooldown key: the conc key with "cool" for "conc" */

    ngx_http_llm_rstore_arg(op, st->conc_key.data, st->conc_key.len);
    ngx_memcpy(op->cmd.last - 4, "cool", 4);

    for (i = 0; i < nwin; i++) {
        ngx_http_llm_rstore_arg(op, st->wkeys[i].data, st->wkeys[i].len);
    }

    ngx_http_llm_rstore_num(op, tier->concurrency);
    ngx_http_llm_rstore_arg(op, st->lease.data, st->lease.len);
    ngx_http_llm_rstore_num(op, NGX_HTTP_LLM_LEASE_TTL);
    ngx_http_llm_rstore_num(op, tier->cooldown);
    ngx_http_llm_rstore_num(op, deadline);

    for (i = 0; i < nwin; i++) {
        ngx_http_llm_rstore_num(op, wc[i].period);
        ngx_http_llm_rstore_num(op, wc[i].limit);
        ngx_http_llm_rstore_num(op, d->need[wc[i].dim]);
    }

    op->cmd.op.handler = ngx_http_llm_rstore_admitted;
    op->cmd.op.expire = ngx_http_llm_rstore_expire;
    op->cmd.op.deadline = st->deadline;
    op->req = st;

    if (ngx_http_llm_rstore_send(op) != NGX_OK) {
        ngx_http_llm_redis_fail(op->cmd.op.error);
        ngx_free(op);
        goto fallback;
    }

    st->op = op;
    st->pending = 1;

pending:

    /* a client that goes away meanwhile ends the request at once */

    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;

fallback:

    return ngx_http_llm_rstore_fallback(r, st, d);
}


/*
 * The request's Redis state (ctx->redis) and, with llm_redis, the keys
 * of its account's windows, kept for release and settle.
 */

static ngx_http_llm_rstore_req_t *
ngx_http_llm_rstore_req(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_tier_t *tier)
{
    u_char                      *p;
    size_t                       klen;
    ngx_uint_t                   i, nwin;
    ngx_pool_cleanup_t          *cln;
    ngx_http_llm_redis_conf_t   *rc;
    ngx_http_llm_rstore_req_t   *st;
    ngx_http_llm_window_conf_t  *wc;

    ngx_http_llm_rstore_scripts_init();

    rc = ngx_http_llm_redis_conf();

    st = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_rstore_req_t));
    if (st == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_llm_rstore_cleanup;
    cln->data = st;

    st->request = r;
    st->ctx = ctx;
    st->tier = tier;
    ngx_queue_init(&st->queue);

    ctx->redis = st;

    if (rc == NULL) {
        return st;
    }

    nwin = tier->windows.nelts;
    wc = tier->windows.elts;

    klen = rc->prefix.len + sizeof("{acct:}:w:output_tokens:1mo") - 1
           + ctx->account.len;

    p = ngx_pnalloc(r->pool, klen * (nwin + 1));
    st->wkeys = ngx_palloc(r->pool, (nwin + 1) * sizeof(ngx_str_t));

    if (p == NULL || st->wkeys == NULL) {
        return NULL;
    }

    st->conc_key.data = p;
    p = ngx_sprintf(p, "%V{acct:%V}:conc", &rc->prefix, &ctx->account);
    st->conc_key.len = p - st->conc_key.data;

    for (i = 0; i < nwin; i++) {
        st->wkeys[i].data = p;
        p = ngx_sprintf(p, "%V{acct:%V}:w:%s:%V", &rc->prefix, &ctx->account,
                        ngx_http_llm_dim_names[wc[i].dim], &wc[i].text);
        st->wkeys[i].len = p - st->wkeys[i].data;
    }

    return st;
}


/*
 * Queues the admission of "st" in its account's pending batch (one per
 * conc key and tier, at most "batch" requests and what one reply can
 * carry), started here when there is none; the batches go to Redis at
 * the end of this loop iteration, each as one call of the batch script.
 */

static ngx_int_t
ngx_http_llm_rstore_enqueue(ngx_http_llm_rstore_req_t *st,
    ngx_http_llm_decision_t *d, int64_t deadline)
{
    size_t                       strings;
    ngx_uint_t                   i, nwin, affinity, max;
    ngx_queue_t                 *bucket, *q;
    ngx_http_llm_tier_t         *tier;
    ngx_http_llm_rstore_op_t    *op;
    ngx_http_llm_redis_conf_t   *rc;
    ngx_http_llm_window_conf_t  *wc;

    rc = ngx_http_llm_redis_conf();

    tier = st->tier;
    nwin = tier->windows.nelts;
    wc = tier->windows.elts;

    affinity = (ngx_uint_t) ngx_crc32_short(st->conc_key.data,
                                            st->conc_key.len) + 1;

    bucket = &ngx_http_llm_batches[affinity % NGX_HTTP_LLM_BATCH_BUCKETS];

    /* a new batch goes first: the full ones stay behind it */

    for (q = ngx_queue_head(bucket);
         q != ngx_queue_sentinel(bucket);
         q = ngx_queue_next(q))
    {
        op = ngx_queue_data(q, ngx_http_llm_rstore_op_t, queue);

        if (op->cmd.op.affinity == affinity
            && op->tier == tier
            && op->nreq < op->maxreq
            && op->cmd.argvlen[3] == st->conc_key.len
            && ngx_memcmp(op->cmd.argv[3], st->conc_key.data, st->conc_key.len)
               == 0)
        {
            goto found;
        }
    }

    max = ngx_min(rc->batch, NGX_HTTP_LLM_REDIS_ELTS_MAX / (4 + 3 * nwin));

    /*
     * EVALSHA sha numkeys conc cool windows..., 3 + 2 per window, then
     * 2 + 1 per window per request
     */

    strings = (st->conc_key.len + sizeof(":w:output_tokens:1mo"))
              * (nwin + 2)
              + (NGX_INT64_LEN + 1) * (4 + 2 * nwin)
              + max * (64 + (NGX_INT64_LEN + 1) * (1 + nwin));

    op = ngx_http_llm_rstore_op_alloc(NGX_HTTP_LLM_SCRIPT_BATCH,
                                      3 + 2 + nwin + 3 + 2 * nwin
                                      + max * (2 + nwin),
                                      strings, &st->conc_key, max);
    if (op == NULL) {
        return NGX_ERROR;
    }

    op->nkeys = 2 + nwin;
    op->tier = tier;
    op->maxreq = max;
    op->queued = 1;
    op->cmd.op.handler = ngx_http_llm_rstore_batched;
    op->cmd.op.expire = ngx_http_llm_rstore_expire;
    op->cmd.op.deadline = st->deadline;

    ngx_http_llm_rstore_num(op, 2 + nwin);
    ngx_http_llm_rstore_arg(op, st->conc_key.data, st->conc_key.len);
    ngx_http_llm_rstore_arg(op, st->conc_key.data, st->conc_key.len);
    ngx_memcpy(op->cmd.last - 4, "cool", 4);

    for (i = 0; i < nwin; i++) {
        ngx_http_llm_rstore_arg(op, st->wkeys[i].data, st->wkeys[i].len);
    }

    ngx_http_llm_rstore_num(op, tier->concurrency);
    ngx_http_llm_rstore_num(op, NGX_HTTP_LLM_LEASE_TTL);
    ngx_http_llm_rstore_num(op, tier->cooldown);

    for (i = 0; i < nwin; i++) {
        ngx_http_llm_rstore_num(op, wc[i].period);
        ngx_http_llm_rstore_num(op, wc[i].limit);
    }

    ngx_queue_insert_head(bucket, &op->queue);

    if (!ngx_http_llm_batch_ev.posted) {
        ngx_post_event(&ngx_http_llm_batch_ev, &ngx_posted_events);
    }

found:

    /* the batch waits for its most pressed request */

    if ((ngx_msec_int_t) (st->deadline - op->cmd.op.deadline) < 0) {
        op->cmd.op.deadline = st->deadline;
    }

    ngx_http_llm_rstore_arg(op, st->lease.data, st->lease.len);
    ngx_http_llm_rstore_num(op, deadline);

    for (i = 0; i < nwin; i++) {
        ngx_http_llm_rstore_num(op, d->need[wc[i].dim]);
    }

    st->slot = op->nreq;
    op->reqs[op->nreq++] = st;

    st->op = op;
    st->pending = 1;

    return NGX_OK;
}


/* the end of the loop iteration: every pending batch goes to Redis */

static void
ngx_http_llm_rstore_flush(ngx_event_t *ev)
{
    ngx_uint_t                 i;
    ngx_queue_t               *q;
    ngx_http_llm_rstore_op_t  *op;

    for (i = 0; i < NGX_HTTP_LLM_BATCH_BUCKETS; i++) {

        while (!ngx_queue_empty(&ngx_http_llm_batches[i])) {
            q = ngx_queue_head(&ngx_http_llm_batches[i]);
            op = ngx_queue_data(q, ngx_http_llm_rstore_op_t, queue);

            ngx_queue_remove(q);
            op->queued = 0;

            if (op->nreq == 1) {
                if (op->reqs[0] == NULL) {
                    /* its client has gone */
                    ngx_free(op);
                    continue;
                }

                ngx_http_llm_rstore_single(op);
            }

            if (ngx_http_llm_rstore_send(op) != NGX_OK) {
                ngx_http_llm_redis_fail(op->cmd.op.error);
                op->cmd.op.handler(&op->cmd.op, NULL);
            }
        }
    }
}


/*
 * A batch of one goes as the admission script: its arguments are the
 * same, in another order (KEYS as they are; ARGV climit, lease, lease
 * ttl, cooldown, deadline, per window: period, limit, need).
 */

static void
ngx_http_llm_rstore_single(ngx_http_llm_rstore_op_t *op)
{
    size_t       l[5 + 3 * NGX_HTTP_LLM_WINDOWS_MAX];
    ngx_uint_t   i, nwin, k;
    const char  *v[5 + 3 * NGX_HTTP_LLM_WINDOWS_MAX];

    nwin = op->nkeys - 2;
    k = 3 + op->nkeys;          /* ARGV[1] */

    ngx_memcpy(v, &op->cmd.argv[k], (5 + 3 * nwin) * sizeof(char *));
    ngx_memcpy(l, &op->cmd.argvlen[k], (5 + 3 * nwin) * sizeof(size_t));

    /*
     * from climit, ttl, cooldown, per window: period, limit; lease,
     * deadline, per window: need
     */

#define ngx_http_llm_mv(to, from)                                             \
    op->cmd.argv[k + (to)] = v[from];                                         \
    op->cmd.argvlen[k + (to)] = l[from]

    ngx_http_llm_mv(0, 0);
    ngx_http_llm_mv(1, 3 + 2 * nwin);
    ngx_http_llm_mv(2, 1);
    ngx_http_llm_mv(3, 2);
    ngx_http_llm_mv(4, 4 + 2 * nwin);

    for (i = 0; i < nwin; i++) {
        ngx_http_llm_mv(5 + 3 * i, 3 + 2 * i);
        ngx_http_llm_mv(6 + 3 * i, 4 + 2 * i);
        ngx_http_llm_mv(7 + 3 * i, 5 + 2 * nwin + i);
    }

#undef ngx_http_llm_mv

    op->cmd.script = &ngx_http_llm_scripts[NGX_HTTP_LLM_SCRIPT_ADMIT];
    op->cmd.argv[1] = (const char *) op->cmd.script->sha;
    op->cmd.op.handler = ngx_http_llm_rstore_admitted;

    op->req = op->reqs[0];
    op->reqs = NULL;
    op->nreq = 0;
}


/*
 * The batch's answer, one request after the other; a request that is
 * gone gives back what it was granted.  NULL or an error reply: each
 * request takes the on_error path.
 */

static void
ngx_http_llm_rstore_batched(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply)
{
    ngx_http_llm_rstore_op_t *op = (ngx_http_llm_rstore_op_t *) rop;

    ngx_str_t                    key, lease;
    ngx_uint_t                   i, nwin, per, a;
    ngx_http_llm_rstore_req_t   *st;
    ngx_http_llm_redis_reply_t   one, *e;

    if (ngx_http_llm_rstore_noscript(op, reply) == NGX_OK) {
        return;
    }

    nwin = op->nkeys - 2;
    per = 4 + 3 * nwin;

    e = NULL;

    if (reply && reply->type == NGX_HTTP_LLM_REDIS_ARRAY
        && reply->nelts == op->nreq * per)
    {
        e = reply->elts;
    }

    for (i = 0; i < op->nreq; i++) {

        if (e) {
            ngx_memzero(&one, sizeof(ngx_http_llm_redis_reply_t));
            one.type = NGX_HTTP_LLM_REDIS_ARRAY;
            one.nelts = per;
            one.elts = &e[i * per];
        }

        st = op->reqs[i];

        if (st) {
            st->op = NULL;
            ngx_http_llm_rstore_answer(st, e ? &one : reply, op->cmd.op.error);
            continue;
        }

        /* gone: its lease and its charge go back */

        if (e == NULL || e[i * per].type != NGX_HTTP_LLM_REDIS_INTEGER
            || e[i * per].integer != 0
            || e[i * per + 1].type != NGX_HTTP_LLM_REDIS_INTEGER)
        {
            continue;
        }

        /* argv of ARGV[k]: 2 + nkeys + k; the request's block */

        a = 2 + op->nkeys + 3 + 2 * nwin + i * (2 + nwin);

        if (op->cmd.argvlen[a + 1] > 0) {
            key.data = (u_char *) op->cmd.argv[3];
            key.len = op->cmd.argvlen[3];
            lease.data = (u_char *) op->cmd.argv[a + 1];
            lease.len = op->cmd.argvlen[a + 1];

            ngx_http_llm_rstore_release(&key, &lease);
        }

        ngx_http_llm_rstore_refund(op, e[i * per + 1].integer,
                                   2 + op->nkeys + 4, 2, a + 3, 1);
    }

    ngx_free(op);
}


/* the answer the access handler waited for; NGX_AGAIN: not yet */

ngx_int_t
ngx_http_llm_rstore_result(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_decision_t *d)
{
    ngx_http_llm_rstore_req_t  *st = ctx->redis;

    if (st->pending) {
        return NGX_AGAIN;
    }

    *d = st->d;

    return st->rc;
}


/*
 * llm_usage: what each window of the account holds in Redis, used[i]
 * and reset[i] (wall clock, ms).  NGX_AGAIN: the content handler runs
 * again when Redis has answered; NGX_DECLINED: Redis is unavailable
 * (the caller asks the zone).
 */

ngx_int_t
ngx_http_llm_rstore_usage(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_tier_t *tier, uint64_t *used, uint64_t *reset)
{
    void                        *admission;
    size_t                       strings;
    ngx_msec_t                   left;
    ngx_uint_t                   i, nwin;
    ngx_http_llm_rstore_op_t    *op;
    ngx_http_llm_rstore_req_t   *st;
    ngx_http_llm_window_conf_t  *wc;

    nwin = tier->windows.nelts;
    wc = tier->windows.elts;

    /*
     * a slot of its own: after an internal redirect ctx->redis is the
     * request's admission, which the settle still needs
     */

    st = ctx->rusage;

    if (st) {
        /* back from Redis */

        if (st->pending) {
            return NGX_AGAIN;
        }

        if (st->rc == NGX_OK) {
            ngx_memcpy(used, st->usage, nwin * sizeof(uint64_t));
            ngx_memcpy(reset, st->usage + nwin, nwin * sizeof(uint64_t));
        }

        return st->rc;
    }

    if (ngx_http_llm_redis_conf() == NULL) {
        return NGX_DECLINED;
    }

    /* what is left of the request's time for Redis (a key lookup's) */

    left = ngx_http_llm_redis_left(ctx->redis_waited);

    if (left == 0) {
        return NGX_DECLINED;
    }

    admission = ctx->redis;

    st = ngx_http_llm_rstore_req(r, ctx, tier);

    ctx->redis = admission;

    if (st == NULL) {
        return NGX_ERROR;
    }

    st->usage = ngx_palloc(r->pool, 2 * nwin * sizeof(uint64_t));
    if (st->usage == NULL) {
        return NGX_ERROR;
    }

    st->rc = NGX_DECLINED;      /* until Redis answers: the zone */
    ctx->rusage = st;

    strings = NGX_INT64_LEN + 64;

    for (i = 0; i < nwin; i++) {
        strings += st->wkeys[i].len + NGX_INT64_LEN + 2;
    }

    op = ngx_http_llm_rstore_op(NGX_HTTP_LLM_SCRIPT_USAGE, 3 + 2 * nwin,
                                strings, &st->conc_key);
    if (op == NULL) {
        return NGX_ERROR;
    }

    ngx_http_llm_rstore_num(op, nwin);

    for (i = 0; i < nwin; i++) {
        ngx_http_llm_rstore_arg(op, st->wkeys[i].data, st->wkeys[i].len);
    }

    for (i = 0; i < nwin; i++) {
        ngx_http_llm_rstore_num(op, wc[i].period);
    }

    op->cmd.op.handler = ngx_http_llm_rstore_usage_read;
    op->cmd.op.expire = ngx_http_llm_rstore_usage_expire;
    op->cmd.op.deadline = ngx_current_msec + left;
    op->req = st;

    st->start = ngx_current_msec;

    if (ngx_http_llm_rstore_send(op) != NGX_OK) {
        ngx_http_llm_redis_fail(op->cmd.op.error);
        ngx_free(op);
        return NGX_DECLINED;
    }

    st->op = op;
    st->pending = 1;

    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;
}


static void
ngx_http_llm_rstore_usage_read(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply)
{
    ngx_http_llm_rstore_op_t *op = (ngx_http_llm_rstore_op_t *) rop;

    uint64_t                     wall;
    ngx_uint_t                   i, nwin;
    ngx_http_llm_rstore_req_t   *st;
    ngx_http_llm_redis_reply_t  *e;

    if (ngx_http_llm_rstore_noscript(op, reply) == NGX_OK) {
        return;
    }

    st = op->req;
    ngx_free(op);

    if (st == NULL) {
        return;
    }

    st->op = NULL;
    st->pending = 0;
    st->rc = NGX_DECLINED;

    nwin = st->tier->windows.nelts;

    if (reply && reply->type == NGX_HTTP_LLM_REDIS_ARRAY
        && reply->nelts == 1 + 2 * nwin)
    {
        e = reply->elts;
        wall = ngx_http_llm_now();
        st->rc = NGX_OK;

        for (i = 0; i < reply->nelts; i++) {
            if (e[i].type != NGX_HTTP_LLM_REDIS_INTEGER || e[i].integer < 0) {
                st->rc = NGX_DECLINED;
            }
        }

        for (i = 0; st->rc == NGX_OK && i < nwin; i++) {
            st->usage[i] = e[1 + 2 * i].integer;
            st->usage[nwin + i] = wall + e[2 + 2 * i].integer;
        }
    }

    if (st->rc != NGX_OK && reply && reply->type != NGX_HTTP_LLM_REDIS_ERROR)
    {
        ngx_http_llm_redis_fail("unexpected reply to the usage script");
    }

    ngx_http_llm_rstore_usage_wake(st);
}


/* no answer within the request's time for Redis: the zone's figures */

static void
ngx_http_llm_rstore_usage_expire(ngx_http_llm_redis_op_t *rop)
{
    ngx_http_llm_rstore_op_t *op = (ngx_http_llm_rstore_op_t *) rop;

    ngx_http_llm_rstore_req_t  *st;

    st = op->req;

    if (st == NULL) {
        return;
    }

    op->req = NULL;
    st->op = NULL;
    st->pending = 0;
    st->rc = NGX_DECLINED;

    ngx_http_llm_rstore_usage_wake(st);
}


static void
ngx_http_llm_rstore_usage_wake(ngx_http_llm_rstore_req_t *st)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    st->ctx->redis_waited += ngx_current_msec - st->start;

    if (ngx_terminate) {
        return;
    }

    r = st->request;
    c = r->connection;

    r->read_event_handler = ngx_http_block_reading;

    ngx_http_set_log_request(c->log, r);

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);

    ngx_http_run_posted_requests(c);
}


/*
 * From the log phase (nothing of the request is kept): replaces the
 * reservation by what was used, per dimension.  NGX_DECLINED: this
 * request was not counted in Redis (the zone counted it, or nobody).
 * A settle that Redis cannot have run (not sent, never written, an
 * error reply) is replayed (ngx_http_llm_replay.c); one that was sent
 * and lost its answer is not: Redis may have run it.  Nothing of this
 * writes to Redis on the way of a settle that goes well.
 */

ngx_int_t
ngx_http_llm_rstore_settle(ngx_http_llm_ctx_t *ctx, uint64_t *used)
{
    int64_t                        delta, diff[5];
    size_t                         strings;
    ngx_uint_t                     i, n, nwin;
    ngx_http_llm_rstore_req_t     *st;
    ngx_http_llm_window_conf_t    *wc;
    ngx_http_llm_redis_script_t   *script;
    ngx_http_llm_rstore_settle_t  *op;

    st = ctx->redis;

    if (st == NULL) {
        return NGX_DECLINED;
    }

    for (i = 0; i < 5; i++) {
        diff[i] = (int64_t) used[i] - (int64_t) st->d.need[i];
    }

    if (st->local) {

        /* the zone counted it: so will Redis, when it is back */

        (void) ngx_http_llm_replay_add(&ctx->account, st->tier, st->t0,
                                       diff);
    }

    if (!st->counted) {
        return NGX_DECLINED;
    }

    nwin = st->tier->windows.nelts;
    wc = st->tier->windows.elts;

    n = 0;
    strings = NGX_INT64_LEN + 64;

    for (i = 0; i < nwin; i++) {
        if (used[wc[i].dim] != st->d.need[wc[i].dim]) {
            n++;
            strings += st->wkeys[i].len + 2 * (NGX_INT64_LEN + 1) + 3;
        }
    }

    if (n == 0) {
        return NGX_OK;
    }

    /* what it changes, for the replay if Redis never sees it */

    script = &ngx_http_llm_scripts[NGX_HTTP_LLM_SCRIPT_SETTLE];

    op = ngx_http_llm_redis_cmd(sizeof(ngx_http_llm_rstore_settle_t)
                                + ctx->account.len, script,
                                3 + n + 1 + 2 * n, strings, &st->conc_key);
    if (op == NULL) {
        return NGX_ERROR;
    }

    op->tier = st->tier;
    op->t0 = st->t0;
    ngx_memcpy(op->diff, diff, sizeof(diff));
    op->account.data = (u_char *) (op + 1);
    op->account.len = ctx->account.len;
    ngx_memcpy(op->account.data, ctx->account.data, ctx->account.len);

    ngx_http_llm_rstore_num(&op->op, n);

    for (i = 0; i < nwin; i++) {
        if (used[wc[i].dim] != st->d.need[wc[i].dim]) {
            ngx_http_llm_rstore_arg(&op->op, st->wkeys[i].data,
                                    st->wkeys[i].len);
        }
    }

    ngx_http_llm_rstore_num(&op->op, st->t0);

    for (i = 0; i < nwin; i++) {
        if (used[wc[i].dim] != st->d.need[wc[i].dim]) {
            delta = (int64_t) used[wc[i].dim]
                    - (int64_t) st->d.need[wc[i].dim];
            ngx_http_llm_rstore_num(&op->op, wc[i].period);
            ngx_http_llm_rstore_num(&op->op, delta);
        }
    }

    op->op.cmd.op.handler = ngx_http_llm_rstore_settled;

    if (ngx_http_llm_rstore_send(&op->op) != NGX_OK) {
        ngx_http_llm_rstore_unsettled(op, op->op.cmd.op.error);
        ngx_free(op);
        return NGX_OK;
    }

    ngx_http_llm_redis_flush(&op->op.cmd.op);

    return NGX_OK;
}


/*
 * The settle's answer.  Redis has not run it when it refused it with an
 * error reply (NOSCRIPT with no second try, OOM at its first write,
 * BUSY, LOADING, READONLY, MOVED...; not "ERR", which a script that
 * failed half-way answers) or when it never left this worker: it is
 * replayed.  One that was written and lost its answer, or failed in
 * the script, may have changed Redis, and is left as it is.
 */

static void
ngx_http_llm_rstore_settled(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply)
{
    ngx_http_llm_rstore_settle_t *op = (ngx_http_llm_rstore_settle_t *) rop;

    const char  *why;

    if (ngx_http_llm_rstore_noscript(&op->op, reply) == NGX_OK) {
        return;
    }

    if (reply == NULL) {
        why = rop->error ? rop->error : "no answer";

        if (rop->unsent) {
            ngx_http_llm_rstore_unsettled(op, why);
            goto done;
        }

    } else if (reply->type == NGX_HTTP_LLM_REDIS_ERROR) {
        why = "script error";

        if (reply->str.len < 3
            || ngx_strncmp(reply->str.data, "ERR", 3) != 0)
        {
            ngx_http_llm_rstore_unsettled(op, "error reply");
            goto done;
        }

    } else {
        goto done;
    }

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "llm_redis: usage of \"%V\" may not be settled: %s "
                  "after it was sent", &op->account, why);

done:

    ngx_free(op);
}


/* a settle Redis has not run: its difference goes to the replay */

static void
ngx_http_llm_rstore_unsettled(ngx_http_llm_rstore_settle_t *op,
    const char *why)
{
    if (ngx_http_llm_replay_add(&op->account, op->tier, op->t0, op->diff)
        == NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "llm_redis: usage of \"%V\" not settled (%s), "
                      "replayed when Redis is back", &op->account, why);
        return;
    }

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "llm_redis: usage of \"%V\" not settled: %s",
                  &op->account, why);
}


/*
 * An account's commands share one connection (the affinity: a hash of
 * its conc key), so a settle reaches Redis before the account's next
 * admission from this worker.
 */

static ngx_http_llm_rstore_op_t *
ngx_http_llm_rstore_op(ngx_uint_t script, int argc, size_t strings,
    ngx_str_t *conc_key)
{
    return ngx_http_llm_rstore_op_alloc(script, argc, strings, conc_key, 0);
}


/* "nreq": room for the requests of a batch */

static ngx_http_llm_rstore_op_t *
ngx_http_llm_rstore_op_alloc(ngx_uint_t script, int argc, size_t strings,
    ngx_str_t *conc_key, ngx_uint_t nreq)
{
    ngx_http_llm_rstore_op_t  *op;

    op = ngx_http_llm_redis_cmd(sizeof(ngx_http_llm_rstore_op_t)
                                + nreq * sizeof(ngx_http_llm_rstore_req_t *),
                                &ngx_http_llm_scripts[script], argc, strings,
                                conc_key);
    if (op == NULL) {
        return NULL;
    }

    if (nreq) {
        op->reqs = (ngx_http_llm_rstore_req_t **) (op + 1);
    }

    return op;
}


static void
ngx_http_llm_rstore_admitted(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply)
{
    ngx_http_llm_rstore_op_t *op = (ngx_http_llm_rstore_op_t *) rop;

    ngx_str_t                   key, lease;
    ngx_http_llm_rstore_req_t  *st;

    if (ngx_http_llm_rstore_noscript(op, reply) == NGX_OK) {
        return;
    }

    st = op->req;

    if (st == NULL) {

        /*
         * the request is gone (its client went away): what it was
         * given goes back at once, its lease and its charge
         */

        if (reply && reply->type == NGX_HTTP_LLM_REDIS_ARRAY
            && reply->nelts > 1 && reply->elts[0].integer == 0)
        {
            if (op->cmd.argvlen[3 + op->nkeys + 1] > 0) {
                key.data = (u_char *) op->cmd.argv[3];
                key.len = op->cmd.argvlen[3];
                lease.data = (u_char *) op->cmd.argv[3 + op->nkeys + 1];
                lease.len = op->cmd.argvlen[3 + op->nkeys + 1];

                ngx_http_llm_rstore_release(&key, &lease);
            }

            ngx_http_llm_rstore_refund(op, reply->elts[1].integer,
                                       3 + op->nkeys + 5, 3,
                                       3 + op->nkeys + 7, 3);
        }

        ngx_free(op);
        return;
    }

    st->op = NULL;

    ngx_http_llm_rstore_answer(st, reply, op->cmd.op.error);

    ngx_free(op);
}


/*
 * Redis's answer to the admission of "st" (NULL: none, "error" says
 * why), or the on_error path; the request runs on.
 */

static void
ngx_http_llm_rstore_answer(ngx_http_llm_rstore_req_t *st,
    ngx_http_llm_redis_reply_t *reply, const char *error)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    st->pending = 0;
    st->ctx->redis_waited += ngx_current_msec - st->start;

    r = st->request;
    r->read_event_handler = ngx_http_block_reading;

    rc = NGX_ERROR;

    if (reply && reply->type != NGX_HTTP_LLM_REDIS_ERROR) {
        rc = ngx_http_llm_rstore_parse(st, reply);

        if (rc == NGX_ERROR) {
            ngx_http_llm_redis_fail("unexpected reply to the admission "
                                    "script");
        }
    }

    if (rc == NGX_ERROR || rc == NGX_AGAIN) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "llm_redis: no decision for \"%V\" (%s), "
                      "on_error applies", &st->ctx->account,
                      rc == NGX_AGAIN ? "past its deadline"
                      : reply ? "error reply"
                      : error ? error : "no reply");

        rc = ngx_http_llm_rstore_fallback(r, st, &st->d);
    }

    st->rc = rc;

    if (ngx_terminate) {
        return;
    }

    c = r->connection;

    ngx_http_set_log_request(c->log, r);

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);

    ngx_http_run_posted_requests(c);
}


/*
 * An admission's requests whose time for Redis is up (of a batch: those
 * past their own deadline; the batch then waits for the next one) take
 * the on_error path; the admission goes on without them, and what Redis
 * grants them later goes back, as for a client that has gone.
 */

static void
ngx_http_llm_rstore_expire(ngx_http_llm_redis_op_t *rop)
{
    ngx_http_llm_rstore_op_t *op = (ngx_http_llm_rstore_op_t *) rop;

    ngx_uint_t                  i, n;
    ngx_msec_t                  next;
    ngx_http_llm_rstore_req_t  *st, *late[NGX_HTTP_LLM_REDIS_BATCH_MAX];

    if (op->reqs == NULL) {
        st = op->req;

        if (st) {
            op->req = NULL;
            st->op = NULL;

            /* "op" may be gone after this */
            ngx_http_llm_rstore_answer(st, NULL, "no answer in time");
        }

        return;
    }

    n = 0;
    next = 0;

    for (i = 0; i < op->nreq; i++) {
        st = op->reqs[i];

        if (st == NULL) {
            continue;
        }

        if ((ngx_msec_int_t) (st->deadline - ngx_current_msec) <= 0) {
            op->reqs[i] = NULL;
            st->op = NULL;
            late[n++] = st;
            continue;
        }

        if (next == 0 || (ngx_msec_int_t) (st->deadline - next) < 0) {
            next = st->deadline;
        }
    }

    op->cmd.op.deadline = next;

    /* "op" may be gone after the first of these */

    for (i = 0; i < n; i++) {
        ngx_http_llm_rstore_answer(late[i], NULL, "no answer in time");
    }
}


static ngx_int_t
ngx_http_llm_rstore_parse(ngx_http_llm_rstore_req_t *st,
    ngx_http_llm_redis_reply_t *reply)
{
    int64_t                      status, sum, reset, over;
    uint64_t                     at, wall;
    ngx_uint_t                   i, nwin, q;
    ngx_http_llm_decision_t     *d;
    ngx_http_llm_redis_reply_t  *e;
    ngx_http_llm_window_conf_t  *wc;

    nwin = st->tier->windows.nelts;
    wc = st->tier->windows.elts;
    e = reply->elts;

    if (reply->type != NGX_HTTP_LLM_REDIS_ARRAY
        || reply->nelts != 4 + 3 * nwin)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < reply->nelts; i++) {
        if (e[i].type != NGX_HTTP_LLM_REDIS_INTEGER) {
            return NGX_ERROR;
        }
    }

    status = e[0].integer;

    if (status < 0 || status > 4 || e[3].integer != (int64_t) nwin) {
        return NGX_ERROR;
    }

    wall = ngx_http_llm_now();

    ngx_http_llm_rstore_skew = e[1].integer - (int64_t) wall;
    ngx_http_llm_rstore_skew_known = 1;

    if (status == 4) {
        /* it ran after its deadline (our clock's guess was off) */
        return NGX_AGAIN;
    }

    d = &st->d;

    d->wall = wall;
    d->refused = NULL;
    d->retry_at = 0;
    ngx_memzero(&d->requests, sizeof(ngx_http_llm_report_t));
    ngx_memzero(&d->tokens, sizeof(ngx_http_llm_report_t));

    for (i = 0; i < nwin; i++) {
        sum = e[4 + 3 * i].integer;
        reset = e[5 + 3 * i].integer;
        over = e[6 + 3 * i].integer;

        if (status == 1 && over >= 0) {
            at = wall + over;

            /* a quota refusal outranks a rate refusal, then the later */

            if (d->refused == NULL) {
                d->refused = &wc[i];

            } else {
                q = ngx_http_llm_window_is_quota(&wc[i]);

                if (q > ngx_http_llm_window_is_quota(d->refused)
                    || (q == ngx_http_llm_window_is_quota(d->refused)
                        && at > d->retry_at))
                {
                    d->refused = &wc[i];
                }
            }

            if (at > d->retry_at) {
                d->retry_at = at;
            }
        }

        if (wc[i].dim != NGX_HTTP_LLM_DIM_REQUESTS
            && wc[i].dim != NGX_HTTP_LLM_DIM_TOKENS)
        {
            continue;
        }

        ngx_http_llm_report(wc[i].dim == NGX_HTTP_LLM_DIM_REQUESTS
                                   ? &d->requests : &d->tokens,
                                   &wc[i],
                                   sum < (int64_t) wc[i].limit
                                   ? wc[i].limit - sum : 0,
                                   wall + (reset > 0 ? reset : 0));
    }

    if (status == 1 && d->refused == NULL) {
        return NGX_ERROR;
    }

    if (status != 0) {
        at = wall + (e[2].integer > 0 ? e[2].integer : 0);

        if (at > d->retry_at) {
            d->retry_at = at;
        }
    }

    switch (status) {

    case 0:
        st->counted = 1;
        st->t0 = e[1].integer;

        if (st->tier->concurrency) {
            st->leased = 1;
            st->ctx->conc_held = 1;

            if (ngx_queue_empty(&ngx_http_llm_leases)) {
                /* first lease: renewal starts */
                if (!ngx_http_llm_renew_ev.timer_set) {
                    ngx_add_timer(&ngx_http_llm_renew_ev,
                                  NGX_HTTP_LLM_LEASE_RENEW);
                }
            }

            ngx_queue_insert_tail(&ngx_http_llm_leases, &st->queue);
        }

        return NGX_OK;

    case 1:
        return NGX_HTTP_LLM_REFUSED;

    case 2:
        return NGX_HTTP_LLM_CONC_FULL;

    default:
        return NGX_HTTP_LLM_COOLING;
    }
}


static ngx_int_t
ngx_http_llm_rstore_fallback(ngx_http_request_t *r,
    ngx_http_llm_rstore_req_t *st, ngx_http_llm_decision_t *d)
{
    ngx_int_t                   rc;
    ngx_http_llm_main_conf_t   *lmcf;
    ngx_http_llm_redis_conf_t  *rcf;

    rcf = ngx_http_llm_redis_conf();

    d->now = ngx_current_msec;
    d->wall = ngx_http_llm_now();

    switch (rcf ? rcf->on_error : NGX_HTTP_LLM_ON_ERROR_DENY) {

    case NGX_HTTP_LLM_ON_ERROR_LOCAL:
        lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);
        rc = ngx_http_llm_store_admit(lmcf->shm_zone, &st->ctx->account,
                                      st->tier, d);

        if (rc == NGX_OK) {

            /* Redis is told when it is back, at Redis's time of it */

            st->t0 = (int64_t) d->wall + ngx_http_llm_rstore_skew;

            if (ngx_http_llm_replay_add(&st->ctx->account, st->tier,
                                        st->t0, (int64_t *) d->need)
                == NGX_OK)
            {
                st->local = 1;
            }
        }

        return rc;

    case NGX_HTTP_LLM_ON_ERROR_ALLOW:
        return NGX_HTTP_LLM_UNCOUNTED;

    default: /* NGX_HTTP_LLM_ON_ERROR_DENY */
        return NGX_ERROR;
    }
}


/* fire and forget: release, settle, renew */

static void
ngx_http_llm_rstore_done(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply)
{
    ngx_http_llm_rstore_op_t *op = (ngx_http_llm_rstore_op_t *) rop;

    if (ngx_http_llm_rstore_noscript(op, reply) == NGX_OK) {
        return;
    }

    if (reply == NULL || reply->type == NGX_HTTP_LLM_REDIS_ERROR) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "llm_redis: %s not done: %*s",
                      op->cmd.argv[0][0] == 'Z' ? "release" : "script",
                      reply ? ngx_min(reply->str.len, 200) : 0,
                      reply ? reply->str.data : (u_char *) "");
    }

    ngx_free(op);
}


static void
ngx_http_llm_rstore_release(ngx_str_t *key, ngx_str_t *lease)
{
    ngx_http_llm_rstore_op_t  *op;

    op = ngx_http_llm_rstore_op(0, 3, key->len + lease->len, key);
    if (op == NULL) {
        return;
    }

    op->cmd.argv[0] = "ZREM";
    op->cmd.argvlen[0] = 4;
    op->cmd.argc = 1;
    op->cmd.retried = 1;

    ngx_http_llm_rstore_arg(op, key->data, key->len);
    ngx_http_llm_rstore_arg(op, lease->data, lease->len);

    op->cmd.op.handler = ngx_http_llm_rstore_done;

    if (ngx_http_llm_rstore_send(op) != NGX_OK) {
        /* the lease expires on its own */
        ngx_free(op);
    }
}


/*
 * An admission whose request was gone when Redis granted it: the
 * settle script takes back what it charged, at its time "t0".  "adm"
 * holds the keys; window i's period is its argument "period" + i *
 * "pstride", its need "need" + i * "nstride".
 */

static void
ngx_http_llm_rstore_refund(ngx_http_llm_rstore_op_t *adm, int64_t t0,
    ngx_uint_t period, ngx_uint_t pstride, ngx_uint_t need,
    ngx_uint_t nstride)
{
    u_char                    *p;
    size_t                     strings;
    ngx_str_t                  conc;
    ngx_uint_t                 i, n, nwin, pi, ni;
    ngx_http_llm_rstore_op_t  *op;

    nwin = adm->nkeys - 2;

    n = 0;
    strings = NGX_INT64_LEN + 64;

    for (i = 0; i < nwin; i++) {
        pi = period + pstride * i;
        ni = need + nstride * i;

        if (adm->cmd.argvlen[ni] == 1 && adm->cmd.argv[ni][0] == '0') {
            continue;
        }

        n++;
        strings += adm->cmd.argvlen[5 + i] + adm->cmd.argvlen[pi]
                   + adm->cmd.argvlen[ni] + 4;
    }

    if (n == 0) {
        return;
    }

    conc.data = (u_char *) adm->cmd.argv[3];
    conc.len = adm->cmd.argvlen[3];

    op = ngx_http_llm_rstore_op(NGX_HTTP_LLM_SCRIPT_SETTLE,
                                3 + n + 1 + 2 * n, strings, &conc);
    if (op == NULL) {
        return;
    }

    ngx_http_llm_rstore_num(op, n);

    for (i = 0; i < nwin; i++) {
        ni = need + nstride * i;

        if (adm->cmd.argvlen[ni] != 1 || adm->cmd.argv[ni][0] != '0') {
            ngx_http_llm_rstore_arg(op, (u_char *) adm->cmd.argv[5 + i],
                                    adm->cmd.argvlen[5 + i]);
        }
    }

    ngx_http_llm_rstore_num(op, t0);

    for (i = 0; i < nwin; i++) {
        pi = period + pstride * i;
        ni = need + nstride * i;

        if (adm->cmd.argvlen[ni] == 1 && adm->cmd.argv[ni][0] == '0') {
            continue;
        }

        ngx_http_llm_rstore_arg(op, (u_char *) adm->cmd.argv[pi],
                                adm->cmd.argvlen[pi]);

        /* minus the need */

        p = op->cmd.last;
        *op->cmd.last++ = '-';
        op->cmd.last = ngx_cpymem(op->cmd.last, adm->cmd.argv[ni],
                                  adm->cmd.argvlen[ni]);
        op->cmd.argv[op->cmd.argc] = (const char *) p;
        op->cmd.argvlen[op->cmd.argc++] = op->cmd.last - p;
    }

    op->cmd.op.handler = ngx_http_llm_rstore_done;

    if (ngx_http_llm_rstore_send(op) != NGX_OK) {
        ngx_free(op);
    }
}


/*
 * One batch of what this worker counted for "account" while Redis
 * failed (amount[] by dimension, at "at", Redis ms), named "id" so
 * that Redis adds it once.  NGX_OK: ngx_http_llm_replay_done(batch,
 * ok) follows.
 */

ngx_int_t
ngx_http_llm_rstore_replay(ngx_str_t *account, ngx_http_llm_tier_t *tier,
    uint64_t at, int64_t *amount, uint64_t id, void *batch)
{
    u_char                      *p;
    size_t                       strings;
    ngx_str_t                    key;
    ngx_uint_t                   i, nwin;
    ngx_http_llm_rstore_op_t    *op;
    ngx_http_llm_redis_conf_t   *rc;
    ngx_http_llm_window_conf_t  *wc;
    u_char                       buf[NGX_HTTP_LLM_ACCOUNT_MAX + 128];

    rc = ngx_http_llm_redis_conf();

    if (rc == NULL) {
        return NGX_DECLINED;
    }

    ngx_http_llm_rstore_scripts_init();

    nwin = tier->windows.nelts;
    wc = tier->windows.elts;

    key.data = buf;
    key.len = ngx_sprintf(buf, "%V{acct:%V}:conc", &rc->prefix, account)
              - buf;

    strings = (rc->prefix.len + account->len + 64) * (nwin + 1)
              + (NGX_INT64_LEN + 1) * (3 + 2 * nwin) + 64;

    op = ngx_http_llm_rstore_op(NGX_HTTP_LLM_SCRIPT_REPLAY,
                                3 + 1 + nwin + 2 + 2 * nwin, strings, &key);
    if (op == NULL) {
        return NGX_ERROR;
    }

    ngx_http_llm_rstore_num(op, 1 + nwin);

    p = op->cmd.last;
    op->cmd.last = ngx_sprintf(p, "%V{acct:%V}:replay:%s:%uL", &rc->prefix,
                           account, ngx_http_llm_lease_prefix, id);
    op->cmd.argv[op->cmd.argc] = (const char *) p;
    op->cmd.argvlen[op->cmd.argc++] = op->cmd.last - p;

    for (i = 0; i < nwin; i++) {
        p = op->cmd.last;
        op->cmd.last = ngx_sprintf(p, "%V{acct:%V}:w:%s:%V", &rc->prefix,
                               account, ngx_http_llm_dim_names[wc[i].dim],
                               &wc[i].text);
        op->cmd.argv[op->cmd.argc] = (const char *) p;
        op->cmd.argvlen[op->cmd.argc++] = op->cmd.last - p;
    }

    ngx_http_llm_rstore_num(op, NGX_HTTP_LLM_REPLAY_MARK);
    ngx_http_llm_rstore_num(op, at);

    for (i = 0; i < nwin; i++) {
        ngx_http_llm_rstore_num(op, wc[i].period);
        ngx_http_llm_rstore_num(op, amount[wc[i].dim]);
    }

    op->cmd.op.handler = ngx_http_llm_rstore_replayed;
    op->replay = batch;

    if (ngx_http_llm_rstore_send(op) != NGX_OK) {
        ngx_free(op);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_http_llm_rstore_replayed(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply)
{
    ngx_http_llm_rstore_op_t *op = (ngx_http_llm_rstore_op_t *) rop;

    void  *batch;

    if (ngx_http_llm_rstore_noscript(op, reply) == NGX_OK) {
        return;
    }

    batch = op->replay;
    ngx_free(op);

    ngx_http_llm_replay_done(batch,
                             reply && reply->type
                                      == NGX_HTTP_LLM_REDIS_INTEGER);
}


/*
 * The request's pool goes: an admission still on its way is left to
 * finish alone, and a Redis lease goes back (the zone's cleanup in the
 * access handler then has nothing to release).
 */

static void
ngx_http_llm_rstore_cleanup(void *data)
{
    ngx_http_llm_rstore_req_t  *st = data;

    ngx_uint_t                 a, nwin;
    ngx_http_llm_rstore_op_t  *op;

    op = st->op;

    if (op && op->reqs) {
        op->reqs[st->slot] = NULL;

        if (op->queued) {
            /* not sent yet: a deadline passed long ago, nothing changes */

            nwin = op->nkeys - 2;
            a = 2 + op->nkeys + 3 + 2 * nwin + st->slot * (2 + nwin);

            op->cmd.argv[a + 2] = "1";
            op->cmd.argvlen[a + 2] = 1;
        }

        st->op = NULL;

    } else if (op) {
        op->req = NULL;
        st->op = NULL;
    }

    if (st->leased) {
        st->leased = 0;
        st->ctx->conc_held = 0;

        ngx_queue_remove(&st->queue);

        ngx_http_llm_rstore_release(&st->conc_key, &st->lease);
    }
}


/* every 20 s: the leases of requests still running live on */

static void
ngx_http_llm_rstore_renew(ngx_event_t *ev)
{
    ngx_queue_t                *q;
    ngx_http_llm_rstore_op_t   *op;
    ngx_http_llm_rstore_req_t  *st;

    for (q = ngx_queue_head(&ngx_http_llm_leases);
         q != ngx_queue_sentinel(&ngx_http_llm_leases);
         q = ngx_queue_next(q))
    {
        st = ngx_queue_data(q, ngx_http_llm_rstore_req_t, queue);

        op = ngx_http_llm_rstore_op(NGX_HTTP_LLM_SCRIPT_RENEW, 6,
                                    st->conc_key.len + st->lease.len
                                    + 2 * NGX_INT64_LEN, &st->conc_key);
        if (op == NULL) {
            break;
        }

        ngx_http_llm_rstore_num(op, 1);
        ngx_http_llm_rstore_arg(op, st->conc_key.data, st->conc_key.len);
        ngx_http_llm_rstore_arg(op, st->lease.data, st->lease.len);
        ngx_http_llm_rstore_num(op, NGX_HTTP_LLM_LEASE_TTL);

        op->cmd.op.handler = ngx_http_llm_rstore_done;

        if (ngx_http_llm_rstore_send(op) != NGX_OK) {
            ngx_free(op);
            break;
        }
    }

    if (!ngx_queue_empty(&ngx_http_llm_leases)) {
        ngx_add_timer(ev, NGX_HTTP_LLM_LEASE_RENEW);
    }
}


static void
ngx_http_llm_rstore_scripts_init(void)
{
    ngx_uint_t  i;

    if (ngx_http_llm_rstore_inited) {
        return;
    }

    ngx_http_llm_rstore_inited = 1;

    for (i = 0; i < NGX_HTTP_LLM_SCRIPTS; i++) {
        ngx_http_llm_redis_sha1(ngx_http_llm_scripts[i].sha,
                                (u_char *) ngx_http_llm_scripts[i].body,
                                ngx_http_llm_scripts[i].len);
    }

    /* leases are named by worker: a random tag, the pid, a sequence */

    ngx_sprintf(ngx_http_llm_lease_prefix, "%08xD:%P%Z",
                (uint32_t) (ngx_random() ^ ngx_time()), ngx_pid);

    ngx_queue_init(&ngx_http_llm_leases);

    /* debug logging reads ev->data as a connection: something readable */
    ngx_http_llm_renew_ev.data = &ngx_http_llm_renew_ev;
    ngx_http_llm_renew_ev.handler = ngx_http_llm_rstore_renew;
    ngx_http_llm_renew_ev.log = ngx_cycle->log;
    ngx_http_llm_renew_ev.cancelable = 1;

    for (i = 0; i < NGX_HTTP_LLM_BATCH_BUCKETS; i++) {
        ngx_queue_init(&ngx_http_llm_batches[i]);
    }

    ngx_http_llm_batch_ev.data = &ngx_http_llm_batch_ev;
    ngx_http_llm_batch_ev.handler = ngx_http_llm_rstore_flush;
    ngx_http_llm_batch_ev.log = ngx_cycle->log;
}
