
/*
 * ngx_llm_gateway: tiers and their sliding windows.
 */


#ifndef _NGX_HTTP_LLM_LIMITS_H_INCLUDED_
#define _NGX_HTTP_LLM_LIMITS_H_INCLUDED_


#include "ngx_http_llm_module.h"


/*
 * A sliding window is a ring of NGX_HTTP_LLM_SLOTS counters, each one
 * period / (NGX_HTTP_LLM_SLOTS - 1) wide: the current slot plus enough
 * whole slots to cover the period.  A unit counts until its slot has
 * fully left the period, so no period-long interval ever holds more
 * than the limit; capacity frees at slot boundaries (a tenth of the
 * period).  A calendar month window keeps one 64-bit counter in
 * count[0..1] and its month number in "slot".
 */

#define NGX_HTTP_LLM_SLOTS  11

#define NGX_HTTP_LLM_LIMIT_MAX  4000000000

/*
 * cost= is counted in micro-dollars; a slot holds up to $4294, so a
 * sliding window's budget may reach ten slots' worth, a month's any
 */
#define NGX_HTTP_LLM_COST_MAX        40000000000LL
#define NGX_HTTP_LLM_COST_MONTH_MAX  1000000000000000LL

/* windows in one tier */
#define NGX_HTTP_LLM_WINDOWS_MAX  32


typedef struct {
    uint32_t                    slot;
    uint32_t                    count[NGX_HTTP_LLM_SLOTS];
} ngx_http_llm_ring_t;


/*
 * Sliding windows count on the monotonic clock (ngx_current_msec), so a
 * step of the wall clock neither empties nor stretches them; calendar
 * months, and every time reported to clients, are wall clock.
 */

typedef struct {
    uint64_t                    need[5];   /* by NGX_HTTP_LLM_DIM_* */
    uint64_t                    now;       /* monotonic, ms */
    uint64_t                    wall;      /* wall clock, ms */
    uint64_t                    base;      /* the zone's slot origin */

    /* out */
    ngx_http_llm_window_conf_t *refused;   /* NULL: admitted */
    ngx_uint_t                  never;     /* refused only by windows
                                              smaller than the need: no
                                              cooldown */
    uint64_t                    retry_at;  /* wall clock, ms */
    ngx_http_llm_report_t       requests;
    ngx_http_llm_report_t       tokens;
} ngx_http_llm_decision_t;


/*
 * What a request used, against what was reserved for it "at" (the
 * monotonic and wall clocks of the admission), given at "now".
 */

typedef struct {
    int64_t                     delta[5];  /* used - reserved, by dim */
    ngx_http_llm_decision_t     at;
    ngx_http_llm_decision_t     now;
} ngx_http_llm_settle_t;


char *ngx_http_llm_tier(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_http_llm_tier_t *ngx_http_llm_tier_find(ngx_http_llm_main_conf_t *lmcf,
    ngx_str_t *name);
ngx_uint_t ngx_http_llm_window_is_quota(ngx_http_llm_window_conf_t *wc);
void ngx_http_llm_refusal(ngx_http_llm_decision_t *d,
    ngx_http_llm_window_conf_t *wc, uint64_t at);
time_t ngx_http_llm_civil_days(ngx_uint_t y, ngx_uint_t m, ngx_uint_t d);

void ngx_http_llm_rings_carry(ngx_http_llm_ring_t *to, u_char *to_tags,
    ngx_uint_t to_n, ngx_http_llm_ring_t *from, u_char *from_tags,
    ngx_uint_t from_n);
ngx_int_t ngx_http_llm_decide(ngx_http_llm_tier_t *tier,
    ngx_http_llm_ring_t *rings, ngx_http_llm_decision_t *d);
void ngx_http_llm_seed(ngx_http_llm_tier_t *tier,
    ngx_http_llm_ring_t *rings, ngx_http_llm_decision_t *d, uint64_t *sums);
void ngx_http_llm_report(ngx_http_llm_report_t *rep,
    ngx_http_llm_window_conf_t *wc, uint64_t remaining, uint64_t reset);
void ngx_http_llm_settle(ngx_http_llm_tier_t *tier,
    ngx_http_llm_ring_t *rings, u_char *tags, ngx_uint_t n,
    ngx_http_llm_settle_t *s);
uint64_t ngx_http_llm_window_used(ngx_http_llm_window_conf_t *wc,
    ngx_http_llm_ring_t *ring, ngx_http_llm_decision_t *d,
    uint64_t *reset);


#endif /* _NGX_HTTP_LLM_LIMITS_H_INCLUDED_ */
