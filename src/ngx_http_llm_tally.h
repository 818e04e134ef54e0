
/*
 * ngx_llm_gateway: token accounting of one request.
 */


#ifndef _NGX_HTTP_LLM_TALLY_H_INCLUDED_
#define _NGX_HTTP_LLM_TALLY_H_INCLUDED_


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_limits.h"
#include "ngx_http_llm_json.h"


/* a count above this is not priced as such: the budget is spent anyway */
#define NGX_HTTP_LLM_PRICED_MAX     1000000000


struct ngx_http_llm_tally_s {
    ngx_http_llm_usage_t        usage;      /* the response observer */

    ngx_str_t                   model;      /* as the request names it */
    ngx_uint_t                  prompt;     /* estimated prompt tokens */
    uint64_t                    output;     /* reserved for the answer */

    uint64_t                    reserved[5];  /* by NGX_HTTP_LLM_DIM_* */
    uint64_t                    used[5];
    uint64_t                    at_now;     /* admission: monotonic, ms */
    uint64_t                    at_wall;

    ngx_http_llm_price_t       *price;      /* of the priced model */
    u_char                      cache_key[32];

    unsigned                    parsed:1;   /* the request body was read */
    unsigned                    posted:1;   /* POST, PUT or PATCH, as the
                                               client sent it */
    unsigned                    stream:1;
    unsigned                    reserving:1;  /* reserved[] is counted */
    unsigned                    answered:1; /* a response header went */
    unsigned                    observing:1;
    unsigned                    encoded:1;  /* an answer not read */
    unsigned                    complete:1; /* its last byte went */
    unsigned                    cached:1;   /* served by proxy_cache */
    unsigned                    count:1;    /* a token count: free */
    unsigned                    finished:1;
    unsigned                    found:1;    /* the backend told its usage */
    unsigned                    estimated:1;
    unsigned                    has_cache_key:1;
};


char *ngx_http_llm_price(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_http_llm_price_t *ngx_http_llm_price_find(ngx_http_llm_main_conf_t *lmcf,
    ngx_str_t *model);
uint64_t ngx_http_llm_cost(ngx_http_llm_price_t *price, uint64_t input,
    uint64_t output, uint64_t *cache);

ngx_uint_t ngx_http_llm_tally_wanted(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_tally_reserve(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_decision_t *d);
void ngx_http_llm_tally_start(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_tally_body(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_chain_t *in);
void ngx_http_llm_tally_finish(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_tally_settle(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
ngx_int_t ngx_http_llm_tally_log_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_llm_tally_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


/* ngx_http_llm_tally_variable() "data" */
#define NGX_HTTP_LLM_VAR_MODEL          0
#define NGX_HTTP_LLM_VAR_STREAM         1
#define NGX_HTTP_LLM_VAR_PROMPT         2
#define NGX_HTTP_LLM_VAR_COMPLETION     3
#define NGX_HTTP_LLM_VAR_TOTAL          4
#define NGX_HTTP_LLM_VAR_ESTIMATED      5
#define NGX_HTTP_LLM_VAR_COST           6
#define NGX_HTTP_LLM_VAR_CACHE_KEY      7


#endif /* _NGX_HTTP_LLM_TALLY_H_INCLUDED_ */
