
/*
 * ngx_llm_gateway: counters in Redis, shared by a fleet of nodes.
 */


#ifndef _NGX_HTTP_LLM_RSTORE_H_INCLUDED_
#define _NGX_HTTP_LLM_RSTORE_H_INCLUDED_


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_limits.h"


/* on_error=allow while Redis is unavailable: admitted, not counted */
#define NGX_HTTP_LLM_UNCOUNTED    NGX_DONE


ngx_int_t ngx_http_llm_rstore_preload(void);
ngx_int_t ngx_http_llm_rstore_admit(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_tier_t *tier,
    ngx_http_llm_decision_t *d);
ngx_int_t ngx_http_llm_rstore_result(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_decision_t *d);
void ngx_http_llm_rstore_give_back(ngx_http_llm_ctx_t *ctx);
ngx_int_t ngx_http_llm_rstore_settle(ngx_http_llm_ctx_t *ctx,
    uint64_t *used);
ngx_int_t ngx_http_llm_rstore_usage(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_tier_t *tier, uint64_t *used,
    uint64_t *reset);
ngx_int_t ngx_http_llm_rstore_replay(ngx_str_t *account,
    ngx_http_llm_tier_t *tier, uint64_t at, int64_t *amount, u_char *tag,
    uint64_t id, void *batch);


#endif /* _NGX_HTTP_LLM_RSTORE_H_INCLUDED_ */
