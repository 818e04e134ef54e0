
/*
 * ngx_llm_gateway: types shared by every file of the module.
 *
 * Configuration (main and location), tiers and their windows, the
 * per-request context, and the few constants that several files need.
 */


#ifndef _NGX_HTTP_LLM_MODULE_H_INCLUDED_
#define _NGX_HTTP_LLM_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* window dimensions */
#define NGX_HTTP_LLM_DIM_REQUESTS       0
#define NGX_HTTP_LLM_DIM_TOKENS         1
#define NGX_HTTP_LLM_DIM_INPUT          2
#define NGX_HTTP_LLM_DIM_OUTPUT         3
#define NGX_HTTP_LLM_DIM_COST           4

/* $llm_limit_result */
#define NGX_HTTP_LLM_RESULT_NONE        0
#define NGX_HTTP_LLM_RESULT_PASSED      1
#define NGX_HTTP_LLM_RESULT_LIMITED     2
#define NGX_HTTP_LLM_RESULT_REJECTED    3
#define NGX_HTTP_LLM_RESULT_UNAUTH      4
#define NGX_HTTP_LLM_RESULT_STORE       5

/* llm_api */
#define NGX_HTTP_LLM_API_AUTO           0
#define NGX_HTTP_LLM_API_OPENAI         1
#define NGX_HTTP_LLM_API_ANTHROPIC      2
#define NGX_HTTP_LLM_API_GEMINI         3

/* the longest account name we track: key files, admin API, addresses */
#define NGX_HTTP_LLM_ACCOUNT_MAX        64

/* hex digits of the key digest shown as $llm_key_id */
#define NGX_HTTP_LLM_KEY_ID_LEN         12


typedef struct {
    ngx_uint_t                  dim;       /* NGX_HTTP_LLM_DIM_* */
    ngx_uint_t                  limit;
    ngx_msec_t                  period;    /* 0: calendar month */
    ngx_msec_t                  width;     /* one slot of the ring */
    ngx_str_t                   text;      /* "1m", "1d", "1mo" */
} ngx_http_llm_window_conf_t;


typedef struct {
    ngx_str_t                   name;
    ngx_array_t                 windows;   /* ngx_http_llm_window_conf_t */
    ngx_uint_t                  concurrency;
    ngx_uint_t                  priority;
    ngx_msec_t                  cooldown;
    ngx_msec_t                  longest;   /* longest window, ms */
    u_char                     *tags;      /* a window's dimension, period */
} ngx_http_llm_tier_t;


typedef struct {
    u_char                      digest[32];
    ngx_str_t                   account;
    ngx_str_t                   tier_name;
    ngx_http_llm_tier_t        *tier;      /* NULL: the location's default */
    time_t                      expires;   /* 0: never */
    ngx_uint_t                  line;      /* in the key file */
} ngx_http_llm_key_t;


typedef struct {
    ngx_shm_zone_t             *shm_zone;
    ngx_array_t                 tiers;     /* ngx_http_llm_tier_t */
    ngx_array_t                 keys;      /* ngx_http_llm_key_t, sorted */
    ngx_str_t                   key_file;
    ngx_uint_t                  gateways;  /* locations with llm_gateway on */
    void                       *redis;     /* ngx_http_llm_redis_conf_t */
} ngx_http_llm_main_conf_t;


typedef struct {
    ngx_flag_t                  enable;
    ngx_flag_t                  headers;
    ngx_uint_t                  api;
    ngx_http_llm_tier_t        *default_tier;
    ngx_http_llm_tier_t        *anonymous_tier;
} ngx_http_llm_loc_conf_t;


/* what the response headers report about one window */
typedef struct {
    ngx_uint_t                  limit;
    ngx_uint_t                  remaining;
    ngx_msec_t                  period;
    uint64_t                    reset;     /* wall clock, ms */
    unsigned                    set:1;
} ngx_http_llm_report_t;


typedef struct {
    ngx_str_t                   account;
    u_char                      key_id[NGX_HTTP_LLM_KEY_ID_LEN];
    ngx_http_llm_tier_t        *tier;

    ngx_http_llm_report_t       requests;
    ngx_http_llm_report_t       tokens;

    uint64_t                    retry_after;   /* ms; 0: none */
    ngx_uint_t                  result;        /* NGX_HTTP_LLM_RESULT_* */
    ngx_uint_t                  api;           /* resolved llm_api */
    void                       *redis;         /* llm_redis: rstore state */

    unsigned                    has_key_id:1;
    unsigned                    conc_held:1;
    unsigned                    no_retry:1;    /* x-should-retry: false */
    unsigned                    done:1;
} ngx_http_llm_ctx_t;


extern ngx_module_t  ngx_http_llm_gateway_module;


uint64_t ngx_http_llm_now(void);
ngx_int_t ngx_http_llm_access_handler(ngx_http_request_t *r);
ngx_http_llm_ctx_t *ngx_http_llm_find_ctx(ngx_http_request_t *r);


#endif /* _NGX_HTTP_LLM_MODULE_H_INCLUDED_ */
