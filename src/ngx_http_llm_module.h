
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

/* the dimensions a request's body and answer are counted in */
#define NGX_HTTP_LLM_TOKEN_DIMS                                               \
    (0x1f & ~(1 << NGX_HTTP_LLM_DIM_REQUESTS))

/* $llm_limit_result */
#define NGX_HTTP_LLM_RESULT_NONE        0
#define NGX_HTTP_LLM_RESULT_PASSED      1
#define NGX_HTTP_LLM_RESULT_LIMITED     2
#define NGX_HTTP_LLM_RESULT_REJECTED    3
#define NGX_HTTP_LLM_RESULT_UNAUTH      4
#define NGX_HTTP_LLM_RESULT_STORE       5

/* where the access handler is with a request */
#define NGX_HTTP_LLM_STEP_AUTH          0
#define NGX_HTTP_LLM_STEP_BODY          1     /* reading the body */
#define NGX_HTTP_LLM_STEP_READ          2     /* the body is complete */
#define NGX_HTTP_LLM_STEP_REFUSED       3     /* nginx refused the body */

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
    ngx_uint_t                  dims;      /* 1 << dimension, if any */
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


/* llm_price: USD per million tokens, kept in micro-dollars */
typedef struct {
    ngx_str_t                   model;     /* without a trailing '*' */
    uint64_t                    input;
    uint64_t                    output;
    uint64_t                    cache_read;   /* default: input */
    uint64_t                    cache_write;  /* default: input */
    uint64_t                    cache_write_1h;  /* default: cache_write */
    unsigned                    wildcard:1;
} ngx_http_llm_price_t;


typedef struct {
    ngx_shm_zone_t             *shm_zone;
    ngx_array_t                 tiers;     /* ngx_http_llm_tier_t */
    ngx_array_t                 keys;      /* ngx_http_llm_key_t, sorted */
    ngx_array_t                 prices;    /* ngx_http_llm_price_t */
    ngx_str_t                   key_file;
    ngx_uint_t                  gateways;  /* locations with llm_gateway on */
    ngx_uint_t                  handlers;  /* llm_usage locations */
    char                       *first;     /* the first of those two */
    ngx_str_t                   first_file;
    ngx_uint_t                  first_line;
    ngx_uint_t                  pools;     /* upstreams with llm_pool */
    ngx_flag_t                  want_body; /* $llm_model and kin used */
    ngx_flag_t                  want_usage; /* token figures are used */
    ngx_flag_t                  cache_key; /* $llm_cache_key is used */
    void                       *redis;     /* ngx_http_llm_redis_conf_t */
    void                       *bpe;       /* ngx_http_llm_bpe_t:
                                              llm_tokenizer */
} ngx_http_llm_main_conf_t;


typedef struct {
    ngx_flag_t                  enable;
    ngx_flag_t                  headers;
    ngx_flag_t                  stream_usage;
    ngx_uint_t                  api;
    ngx_uint_t                  max_tokens_default;
    ngx_http_llm_tier_t        *default_tier;
    ngx_http_llm_tier_t        *anonymous_tier;
    ngx_uint_t                  handler;   /* llm_usage, llm_token_info */
} ngx_http_llm_loc_conf_t;


typedef struct ngx_http_llm_tally_s  ngx_http_llm_tally_t;


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

    ngx_http_llm_tally_t       *tally;         /* token accounting */
    ngx_buf_t                  *error_body;    /* in place of nginx's */

    uint64_t                    retry_after;   /* ms; 0: none */
    ngx_uint_t                  result;        /* NGX_HTTP_LLM_RESULT_* */
    ngx_uint_t                  api;           /* resolved llm_api */
    ngx_uint_t                  step;          /* of the access handler */
    void                       *redis;         /* llm_redis: rstore state */
    void                       *rusage;        /* llm_usage's Redis read */
    void                       *rkey;          /* a key read from Redis */
    ngx_msec_t                  redis_waited;  /* ms, of llm_redis timeout */

    ngx_uint_t                  refusal;       /* a refused body's error
                                                  (NGX_HTTP_LLM_ERR_*) */
    ngx_str_t                   refusal_text;  /* and its message */

    unsigned                    has_key_id:1;
    unsigned                    conc_held:1;
    unsigned                    uncounted:1;   /* let through, Redis down */
    unsigned                    no_retry:1;    /* x-should-retry: false */
    unsigned                    done:1;
    unsigned                    own_error:1;   /* our error response */
    unsigned                    refused:1;     /* the body is refused */
    unsigned                    unread:1;      /* and not read to its end */
} ngx_http_llm_ctx_t;


extern ngx_module_t  ngx_http_llm_gateway_module;


uint64_t ngx_http_llm_now(void);
void ngx_http_llm_needs_zone(ngx_conf_t *cf, ngx_http_llm_main_conf_t *lmcf,
    char *directive);
ngx_int_t ngx_http_llm_access_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_llm_access_any_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_llm_post_read_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_llm_subrequest_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_llm_log_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_llm_authenticate(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_loc_conf_t *llcf, ngx_str_t *msg);
ngx_http_llm_ctx_t *ngx_http_llm_find_ctx(ngx_http_request_t *r);
ngx_http_llm_ctx_t *ngx_http_llm_get_ctx(ngx_http_request_t *r);


#endif /* _NGX_HTTP_LLM_MODULE_H_INCLUDED_ */
