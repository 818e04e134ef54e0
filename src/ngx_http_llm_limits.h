
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
    uint64_t                    retry_at;  /* wall clock, ms */
    ngx_http_llm_report_t       requests;
    ngx_http_llm_report_t       tokens;
} ngx_http_llm_decision_t;


char *ngx_http_llm_tier(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_http_llm_tier_t *ngx_http_llm_tier_find(ngx_http_llm_main_conf_t *lmcf,
    ngx_str_t *name);
ngx_uint_t ngx_http_llm_window_is_quota(ngx_http_llm_window_conf_t *wc);
time_t ngx_http_llm_civil_days(ngx_uint_t y, ngx_uint_t m, ngx_uint_t d);

void ngx_http_llm_rings_carry(ngx_http_llm_ring_t *to, u_char *to_tags,
    ngx_uint_t to_n, ngx_http_llm_ring_t *from, u_char *from_tags,
    ngx_uint_t from_n);
ngx_int_t ngx_http_llm_decide(ngx_http_llm_tier_t *tier,
    ngx_http_llm_ring_t *rings, ngx_http_llm_decision_t *d);


#endif /* _NGX_HTTP_LLM_LIMITS_H_INCLUDED_ */
