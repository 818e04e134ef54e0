
/*
 * ngx_llm_gateway: tiers and their sliding windows.
 *
 * Owns the "llm_tier" directive and the arithmetic of windows: a ring
 * of slot counters per window (see ngx_http_llm_limits.h), the
 * all-or-nothing admission of one request against every window of its
 * tier, and what the response headers report.  It knows nothing of
 * shared memory or locks: the store calls it with the zone locked.
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_limits.h"


static ngx_int_t ngx_http_llm_tier_window(ngx_conf_t *cf,
    ngx_http_llm_tier_t *tier, ngx_str_t *value, ngx_uint_t dim,
    size_t skip);
static u_char ngx_http_llm_period_code(ngx_msec_t period);
static uint32_t ngx_http_llm_slot(ngx_http_llm_window_conf_t *wc,
    ngx_http_llm_decision_t *d);
static uint64_t ngx_http_llm_month_start(uint32_t month);
static void ngx_http_llm_ring_advance(ngx_http_llm_window_conf_t *wc,
    ngx_http_llm_ring_t *ring, uint32_t cur);
static uint64_t ngx_http_llm_ring_sum(ngx_http_llm_window_conf_t *wc,
    ngx_http_llm_ring_t *ring);
static void ngx_http_llm_ring_add(ngx_http_llm_ring_t *ring, uint32_t s,
    uint64_t n);
static uint64_t ngx_http_llm_ring_free_in(ngx_http_llm_window_conf_t *wc,
    ngx_http_llm_ring_t *ring, ngx_http_llm_decision_t *d, uint64_t drop);


static ngx_str_t  ngx_http_llm_dims[] = {
    ngx_string("requests="),
    ngx_string("tokens="),
    ngx_string("input_tokens="),
    ngx_string("output_tokens="),
    ngx_string("cost="),
};


/*
 * llm_tier NAME [requests=N/PERIOD]... [tokens=N/PERIOD]...
 *               [input_tokens=N/PERIOD]... [output_tokens=N/PERIOD]...
 *               [cost=USD/PERIOD]... [concurrency=N] [priority=0..9]
 *               [cooldown=TIME];
 */

char *
ngx_http_llm_tier(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    ngx_int_t                    n;
    ngx_str_t                   *value, s;
    ngx_uint_t                   i, d, seen;
    ngx_http_llm_tier_t         *tier;
    ngx_http_llm_window_conf_t  *wc;

    value = cf->args->elts;

    if (ngx_http_llm_tier_find(lmcf, &value[1]) != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate llm_tier \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    tier = ngx_array_push(&lmcf->tiers);
    if (tier == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(tier, sizeof(ngx_http_llm_tier_t));

    tier->name = value[1];

    if (ngx_array_init(&tier->windows, cf->pool, 4,
                       sizeof(ngx_http_llm_window_conf_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    seen = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        for (d = 0; d < sizeof(ngx_http_llm_dims) / sizeof(ngx_str_t); d++) {
            if (value[i].len > ngx_http_llm_dims[d].len
                && ngx_strncmp(value[i].data, ngx_http_llm_dims[d].data,
                               ngx_http_llm_dims[d].len)
                   == 0)
            {
                break;
            }
        }

        if (d < sizeof(ngx_http_llm_dims) / sizeof(ngx_str_t)) {
            if (ngx_http_llm_tier_window(cf, tier, &value[i], d,
                                         ngx_http_llm_dims[d].len)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "concurrency=", 12) == 0) {
            if (seen & 1) {
                goto duplicate;
            }

            seen |= 1;

            n = ngx_atoi(value[i].data + 12, value[i].len - 12);
            if (n <= 0 || n > 1000000) {
                goto invalid;
            }

            tier->concurrency = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "priority=", 9) == 0) {
            if (seen & 2) {
                goto duplicate;
            }

            seen |= 2;

            n = ngx_atoi(value[i].data + 9, value[i].len - 9);
            if (n < 0 || n > 9 || value[i].len != 10) {
                goto invalid;
            }

            tier->priority = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "cooldown=", 9) == 0) {
            if (seen & 4) {
                goto duplicate;
            }

            seen |= 4;

            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            n = ngx_parse_time(&s, 0);
            if (n == NGX_ERROR || n == 0) {
                goto invalid;
            }

            tier->cooldown = n;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (tier->windows.nelts > NGX_HTTP_LLM_WINDOWS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many windows in llm_tier \"%V\", "
                           "the maximum is %d", &value[1],
                           NGX_HTTP_LLM_WINDOWS_MAX);
        return NGX_CONF_ERROR;
    }

    /*
     * A window's tag names its dimension and period: counts follow the
     * tag when a reload or a change of tier gives an account another
     * set of windows.
     */

    tier->tags = ngx_pnalloc(cf->pool, tier->windows.nelts + 1);
    if (tier->tags == NULL) {
        return NGX_CONF_ERROR;
    }

    wc = tier->windows.elts;

    for (i = 0; i < tier->windows.nelts; i++) {
        tier->tags[i] = (u_char) (wc[i].dim << 4
                                  | ngx_http_llm_period_code(wc[i].period));
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid value \"%V\"", &value[i]);
    return NGX_CONF_ERROR;

duplicate:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "duplicate parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


/* "N/PERIOD" after "dimension=" */

static ngx_int_t
ngx_http_llm_tier_window(ngx_conf_t *cf, ngx_http_llm_tier_t *tier,
    ngx_str_t *value, ngx_uint_t dim, size_t skip)
{
    u_char                      *p, *last, *slash;
    int64_t                      max;
    ngx_int_t                    n, frac, scale;
    ngx_str_t                    period;
    ngx_http_llm_window_conf_t  *wc, *w;

    p = value->data + skip;
    last = value->data + value->len;

    slash = ngx_strlchr(p, last, '/');
    if (slash == NULL || slash == p) {
        goto invalid;
    }

    if (dim == NGX_HTTP_LLM_DIM_COST) {

        /* USD with up to six decimals, kept in micro-dollars */

        n = 0;
        frac = 0;
        scale = 1000000;

        for ( /* void */ ; p < slash && *p != '.'; p++) {
            if (*p < '0' || *p > '9' || n > 1000000000) {
                goto invalid;
            }

            n = n * 10 + (*p - '0');
        }

        if (p < slash) {
            for (p++; p < slash; p++) {
                if (*p < '0' || *p > '9' || scale == 1) {
                    goto invalid;
                }

                scale /= 10;
                frac += (*p - '0') * scale;
            }
        }

        n = n * 1000000 + frac;

    } else {
        n = ngx_atoi(p, slash - p);
    }

    if (n <= 0) {
        goto invalid;
    }

    period.data = slash + 1;
    period.len = last - period.data;

    if (dim == NGX_HTTP_LLM_DIM_COST) {
        max = (period.len == 2) ? NGX_HTTP_LLM_COST_MONTH_MAX
                                : NGX_HTTP_LLM_COST_MAX;

    } else {
        max = NGX_HTTP_LLM_LIMIT_MAX;
    }

    if (n > max) {
        if (dim == NGX_HTTP_LLM_DIM_COST) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "budget in \"%V\" is too large, the maximum "
                               "is %L USD", value, max / 1000000);

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "limit in \"%V\" is too large, the maximum "
                               "is %L", value, max);
        }

        return NGX_ERROR;
    }

    wc = ngx_array_push(&tier->windows);
    if (wc == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(wc, sizeof(ngx_http_llm_window_conf_t));

    wc->dim = dim;
    wc->limit = n;

    tier->dims |= 1 << dim;

    if (period.len == 1) {
        switch (period.data[0]) {
        case 's':
            wc->period = 1000;
            break;
        case 'm':
            wc->period = 60 * 1000;
            break;
        case 'h':
            wc->period = 3600 * 1000;
            break;
        case 'd':
            wc->period = 86400 * 1000;
            break;
        default:
            goto invalid;
        }

        wc->width = wc->period / (NGX_HTTP_LLM_SLOTS - 1);

    } else if (period.len == 2 && period.data[0] == 'm'
               && period.data[1] == 'o')
    {
        wc->period = 0;

    } else {
        goto invalid;
    }

    /* a dimension and period once: "requests=10/m requests=20/m"? */

    for (w = tier->windows.elts; w != wc; w++) {
        if (w->dim == dim && w->period == wc->period) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate window \"%V\"", value);
            return NGX_ERROR;
        }
    }

    wc->text.len = period.len + 1;
    wc->text.data = ngx_pnalloc(cf->pool, wc->text.len);
    if (wc->text.data == NULL) {
        return NGX_ERROR;
    }

    wc->text.data[0] = '1';
    ngx_memcpy(wc->text.data + 1, period.data, period.len);

    if (wc->period > tier->longest) {
        tier->longest = wc->period;
    }

    if (wc->period == 0) {
        /* a calendar month entry lives until its month is over */
        tier->longest = (ngx_msec_t) 32 * 86400 * 1000;
    }

    return NGX_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid window \"%V\", expected "
                       "N/s, N/m, N/h, N/d or N/mo", value);
    return NGX_ERROR;
}


ngx_http_llm_tier_t *
ngx_http_llm_tier_find(ngx_http_llm_main_conf_t *lmcf, ngx_str_t *name)
{
    ngx_uint_t            i;
    ngx_http_llm_tier_t  *tier;

    tier = lmcf->tiers.elts;

    for (i = 0; i < lmcf->tiers.nelts; i++) {
        if (tier[i].name.len == name->len
            && ngx_strncmp(tier[i].name.data, name->data, name->len) == 0)
        {
            return &tier[i];
        }
    }

    return NULL;
}


/* day and month windows are quotas: waiting a moment does not help */

ngx_uint_t
ngx_http_llm_window_is_quota(ngx_http_llm_window_conf_t *wc)
{
    return wc->period == 0 || wc->period >= (ngx_msec_t) 86400 * 1000;
}


/*
 * Window "wc" refuses the request of "d" until "at" (wall clock, ms):
 * it names the refusal if it outranks the one named so far.  A window
 * the request can never fit outranks the others (no wait helps: the
 * client must ask for less), then a quota outranks a rate window, then
 * the later one wins.  d->retry_at is the latest of them.
 */

void
ngx_http_llm_refusal(ngx_http_llm_decision_t *d,
    ngx_http_llm_window_conf_t *wc, uint64_t at)
{
    ngx_uint_t  rank, named;

    rank = (d->need[wc->dim] > wc->limit) * 2
           + ngx_http_llm_window_is_quota(wc);

    if (d->refused == NULL) {
        d->refused = wc;

    } else {
        named = (d->need[d->refused->dim] > d->refused->limit) * 2
                + ngx_http_llm_window_is_quota(d->refused);

        if (rank > named || (rank == named && at > d->retry_at)) {
            d->refused = wc;
        }
    }

    if (at > d->retry_at) {
        d->retry_at = at;
    }
}


static u_char
ngx_http_llm_period_code(ngx_msec_t period)
{
    switch (period) {
    case 1000:
        return 1;
    case 60 * 1000:
        return 2;
    case 3600 * 1000:
        return 3;
    case 86400 * 1000:
        return 4;
    default: /* a calendar month */
        return 5;
    }
}


/* fills new rings from old ones with the same tag; the rest start empty */

void
ngx_http_llm_rings_carry(ngx_http_llm_ring_t *to, u_char *to_tags,
    ngx_uint_t to_n, ngx_http_llm_ring_t *from, u_char *from_tags,
    ngx_uint_t from_n)
{
    ngx_uint_t  i, j;

    for (i = 0; i < to_n; i++) {
        for (j = 0; j < from_n; j++) {
            if (to_tags[i] == from_tags[j]) {
                to[i] = from[j];
                break;
            }
        }
    }
}


/*
 * Checks every window of the tier against d->need; when all of them
 * have room, adds the need to each and returns NGX_OK; otherwise
 * changes nothing, sets d->refused and d->retry_at and returns
 * NGX_DECLINED.  Fills the reports in both cases.
 */

ngx_int_t
ngx_http_llm_decide(ngx_http_llm_tier_t *tier, ngx_http_llm_ring_t *rings,
    ngx_http_llm_decision_t *d)
{
    uint32_t                     cur;
    uint64_t                     sum, need, at;
    ngx_uint_t                   i, fits;
    ngx_http_llm_window_conf_t  *wc;

    wc = tier->windows.elts;

    d->refused = NULL;
    d->retry_at = 0;
    d->never = 0;
    fits = 0;

    for (i = 0; i < tier->windows.nelts; i++) {
        cur = ngx_http_llm_slot(&wc[i], d);
        ngx_http_llm_ring_advance(&wc[i], &rings[i], cur);

        need = d->need[wc[i].dim];
        if (need == 0) {
            continue;
        }

        sum = ngx_http_llm_ring_sum(&wc[i], &rings[i]);

        if (sum + need <= wc[i].limit) {
            continue;
        }

        /* when enough of what is counted leaves the window */

        if (need > wc[i].limit) {
            at = wc[i].period ? wc[i].period : 86400000;
            d->never = 1;

        } else {
            at = ngx_http_llm_ring_free_in(&wc[i], &rings[i], d,
                                           sum + need - wc[i].limit);
            fits = 1;
        }

        ngx_http_llm_refusal(d, &wc[i], d->wall + at);
    }

    /* refused also by a window it fits: the client goes too fast */

    if (fits) {
        d->never = 0;
    }

    for (i = 0; i < tier->windows.nelts; i++) {
        need = d->refused ? 0 : d->need[wc[i].dim];

        if (need) {
            cur = rings[i].slot;

            if (wc[i].period == 0) {
                sum = ((uint64_t) rings[i].count[1] << 32) + rings[i].count[0]
                      + need;
                rings[i].count[0] = (uint32_t) sum;
                rings[i].count[1] = (uint32_t) (sum >> 32);

            } else {
                ngx_http_llm_ring_add(&rings[i], cur, need);
            }
        }

        if (wc[i].dim == NGX_HTTP_LLM_DIM_COST) {
            continue;
        }

        /* every token window, input and output ones too (SPEC 4) */

        sum = ngx_http_llm_ring_sum(&wc[i], &rings[i]);

        ngx_http_llm_report(wc[i].dim == NGX_HTTP_LLM_DIM_REQUESTS
                            ? &d->requests : &d->tokens,
                            &wc[i],
                            sum < wc[i].limit ? wc[i].limit - sum : 0,
                            d->wall + ngx_http_llm_ring_free_in(&wc[i],
                                                      &rings[i], d, 1));
    }

    return d->refused ? NGX_DECLINED : NGX_OK;
}


/*
 * Each ring holds sums[i] (what Redis's window holds) in its current
 * slot: no less than Redis counts, for no longer than the window's
 * period from now.  What a slot cannot hold (a cost window past 2^32
 * micro-dollars) goes to the slots before it.
 */

void
ngx_http_llm_seed(ngx_http_llm_tier_t *tier, ngx_http_llm_ring_t *rings,
    ngx_http_llm_decision_t *d, uint64_t *sums)
{
    uint32_t                     cur;
    ngx_uint_t                   i;
    ngx_http_llm_window_conf_t  *wc;

    wc = tier->windows.elts;

    for (i = 0; i < tier->windows.nelts; i++) {
        cur = ngx_http_llm_slot(&wc[i], d);

        ngx_memzero(rings[i].count, sizeof(rings[i].count));
        rings[i].slot = cur;

        if (wc[i].period == 0) {
            rings[i].count[0] = (uint32_t) sums[i];
            rings[i].count[1] = (uint32_t) (sums[i] >> 32);
            continue;
        }

        ngx_http_llm_ring_add(&rings[i], cur, sums[i]);
    }
}


/* the window with the least remaining wins; ties go to the shorter one */

void
ngx_http_llm_report(ngx_http_llm_report_t *rep, ngx_http_llm_window_conf_t *wc,
    uint64_t remaining, uint64_t reset)
{
    ngx_msec_t  period;

    period = wc->period ? wc->period : (ngx_msec_t) 31 * 86400 * 1000;

    if (rep->set
        && (remaining > rep->remaining
            || (remaining == rep->remaining && period >= rep->period)))
    {
        return;
    }

    rep->set = 1;
    rep->limit = wc->limit;
    rep->remaining = remaining;
    rep->period = period;
    rep->reset = reset;
}


static uint32_t
ngx_http_llm_slot(ngx_http_llm_window_conf_t *wc, ngx_http_llm_decision_t *d)
{
    ngx_tm_t  tm;

    if (wc->period == 0) {
        ngx_gmtime((time_t) (d->wall / 1000), &tm);
        return (uint32_t) ((tm.ngx_tm_year - 1970) * 12 + tm.ngx_tm_mon - 1);
    }

    /*
     * Slots count from two days before the zone was made, so that every
     * ring starts with a whole window of history behind it.
     */

    return (uint32_t) ((d->now + (uint64_t) 2 * 86400 * 1000 - d->base)
                       / wc->width);
}


/* the first millisecond of month number "month" (0 is January 1970) */

static uint64_t
ngx_http_llm_month_start(uint32_t month)
{
    return (uint64_t) ngx_http_llm_civil_days(1970 + month / 12,
                                              month % 12 + 1, 1)
           * 86400 * 1000;
}


/* days since 1970-01-01 of a proleptic Gregorian date (y >= 1970) */

time_t
ngx_http_llm_civil_days(ngx_uint_t y, ngx_uint_t m, ngx_uint_t d)
{
    ngx_uint_t  era, yoe, doy, doe;

    /* after Howard Hinnant's days_from_civil() */

    if (m <= 2) {
        y--;
    }

    era = y / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return (time_t) (era * 146097 + doe) - 719468;
}


static void
ngx_http_llm_ring_advance(ngx_http_llm_window_conf_t *wc,
    ngx_http_llm_ring_t *ring, uint32_t cur)
{
    uint32_t  s;

    if (cur == ring->slot) {
        return;
    }

    if (wc->period != 0 && cur < ring->slot && ring->slot - cur < 1000) {
        /* another worker counted in a later slot a moment ago */
        return;
    }

    if (wc->period == 0
        || cur - ring->slot >= NGX_HTTP_LLM_SLOTS
        || cur < ring->slot)
    {
        ngx_memzero(ring->count, sizeof(ring->count));
        ring->slot = cur;
        return;
    }

    for (s = ring->slot + 1; s != cur + 1; s++) {
        ring->count[s % NGX_HTTP_LLM_SLOTS] = 0;
    }

    ring->slot = cur;
}


static uint64_t
ngx_http_llm_ring_sum(ngx_http_llm_window_conf_t *wc,
    ngx_http_llm_ring_t *ring)
{
    uint64_t    sum;
    ngx_uint_t  i;

    if (wc->period == 0) {
        return ((uint64_t) ring->count[1] << 32) + ring->count[0];
    }

    sum = 0;

    for (i = 0; i < NGX_HTTP_LLM_SLOTS; i++) {
        sum += ring->count[i];
    }

    return sum;
}


/*
 * Adds "n" to slot "s" of a sliding window's ring (s in the window).
 * What the slot cannot hold (a cost window past 2^32 micro-dollars, about
 * $4,295, in one slot) goes to the slots before it, the newest first: it
 * is counted, if for less long, rather than dropped, which would leave
 * the window admitting without bound until the slot ends.
 */

static void
ngx_http_llm_ring_add(ngx_http_llm_ring_t *ring, uint32_t s, uint64_t n)
{
    uint32_t  *c, oldest;
    uint64_t   room;

    oldest = ring->slot - (NGX_HTTP_LLM_SLOTS - 1);

    for ( ;; ) {
        c = &ring->count[s % NGX_HTTP_LLM_SLOTS];
        room = 0xffffffff - *c;

        if (n <= room) {
            *c += (uint32_t) n;
            return;
        }

        *c = 0xffffffff;
        n -= room;

        if (s == oldest) {
            /* the whole ring is full: more than any budget allows */
            return;
        }

        s--;
    }
}


/*
 * How long until at least "drop" units have left the window, walking
 * from its oldest slot; 0 when nothing is counted.
 */

static uint64_t
ngx_http_llm_ring_free_in(ngx_http_llm_window_conf_t *wc,
    ngx_http_llm_ring_t *ring, ngx_http_llm_decision_t *d, uint64_t drop)
{
    uint32_t  s;
    uint64_t  freed, at, now;

    if (wc->period == 0) {
        if (ring->count[0] == 0 && ring->count[1] == 0) {
            return 0;
        }

        at = ngx_http_llm_month_start(ring->slot + 1);

        return at > d->wall ? at - d->wall : 0;
    }

    freed = 0;
    now = d->now + (uint64_t) 2 * 86400 * 1000 - d->base;

    for (s = ring->slot - (NGX_HTTP_LLM_SLOTS - 1); s != ring->slot + 1; s++)
    {
        freed += ring->count[s % NGX_HTTP_LLM_SLOTS];

        if (freed >= drop) {
            at = (uint64_t) (s + NGX_HTTP_LLM_SLOTS) * wc->width;
            return at > now ? at - now : 0;
        }
    }

    return 0;
}


/*
 * Replaces what was reserved by what was used.  The difference goes to
 * the slot the reservation went to while that slot is in the window;
 * once it has left, a reservation is not given back, and use beyond it
 * counts now.  A calendar month's counter takes it while the month
 * lasts.  Rings are found by tag, for a node made for another version
 * of the tier.
 */

void
ngx_http_llm_settle(ngx_http_llm_tier_t *tier, ngx_http_llm_ring_t *rings,
    u_char *tags, ngx_uint_t n, ngx_http_llm_settle_t *s)
{
    int64_t                      delta;
    uint32_t                     at, cur, *c;
    uint64_t                     v;
    ngx_uint_t                   i, j, same;
    ngx_http_llm_ring_t         *ring;
    ngx_http_llm_window_conf_t  *wc;

    wc = tier->windows.elts;

    same = (n == tier->windows.nelts
            && ngx_memcmp(tags, tier->tags, n) == 0);

    for (i = 0; i < tier->windows.nelts; i++) {
        delta = s->delta[wc[i].dim];

        if (delta == 0) {
            continue;
        }

        if (same) {
            ring = &rings[i];

        } else {
            for (j = 0; j < n; j++) {
                if (tags[j] == tier->tags[i]) {
                    break;
                }
            }

            if (j == n) {
                continue;
            }

            ring = &rings[j];
        }

        cur = ngx_http_llm_slot(&wc[i], &s->now);
        ngx_http_llm_ring_advance(&wc[i], ring, cur);

        at = ngx_http_llm_slot(&wc[i], &s->at);

        if (wc[i].period == 0) {
            if (at != ring->slot && delta < 0) {
                continue;
            }

            v = ((uint64_t) ring->count[1] << 32) + ring->count[0];

            if (delta < 0) {
                v = v > (uint64_t) -delta ? v + delta : 0;

            } else {
                v += delta;
            }

            ring->count[0] = (uint32_t) v;
            ring->count[1] = (uint32_t) (v >> 32);
            continue;
        }

        if (!(at <= ring->slot && ring->slot - at < NGX_HTTP_LLM_SLOTS)) {

            if (delta < 0) {
                continue;
            }

            at = ring->slot;
        }

        if (delta < 0) {
            c = &ring->count[at % NGX_HTTP_LLM_SLOTS];
            *c = *c > (uint64_t) -delta ? (uint32_t) (*c + delta) : 0;

        } else {
            ngx_http_llm_ring_add(ring, at, (uint64_t) delta);
        }
    }
}


/* what one window holds now, and when it next frees capacity */

uint64_t
ngx_http_llm_window_used(ngx_http_llm_window_conf_t *wc,
    ngx_http_llm_ring_t *ring, ngx_http_llm_decision_t *d, uint64_t *reset)
{
    ngx_http_llm_ring_t  r;

    r = *ring;

    ngx_http_llm_ring_advance(wc, &r, ngx_http_llm_slot(wc, d));

    *reset = d->wall + ngx_http_llm_ring_free_in(wc, &r, d, 1);

    return ngx_http_llm_ring_sum(wc, &r);
}
