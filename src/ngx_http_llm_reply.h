
/*
 * ngx_llm_gateway: what clients see of the gateway.
 */


#ifndef _NGX_HTTP_LLM_REPLY_H_INCLUDED_
#define _NGX_HTTP_LLM_REPLY_H_INCLUDED_


#include "ngx_http_llm_module.h"


/* errors of SPEC section 4, by OpenAI "code" */
typedef enum {
    NGX_HTTP_LLM_ERR_INVALID_REQUEST = 0,
    NGX_HTTP_LLM_ERR_INVALID_KEY,
    NGX_HTTP_LLM_ERR_SUSPENDED,
    NGX_HTTP_LLM_ERR_TOO_LARGE,
    NGX_HTTP_LLM_ERR_RATE_LIMIT,
    NGX_HTTP_LLM_ERR_QUOTA,
    NGX_HTTP_LLM_ERR_PROVIDER,
    NGX_HTTP_LLM_ERR_QUEUE_FULL,
    NGX_HTTP_LLM_ERR_QUEUE_TIMEOUT,
    NGX_HTTP_LLM_ERR_STORE
} ngx_http_llm_err_e;


ngx_uint_t ngx_http_llm_api(ngx_http_request_t *r, ngx_uint_t api);
ngx_int_t ngx_http_llm_send_error(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_err_e err, ngx_str_t *message);
ngx_uint_t ngx_http_llm_error_page(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_err_e err);
ngx_int_t ngx_http_llm_reply_init(ngx_conf_t *cf);
ngx_int_t ngx_http_llm_add_header(ngx_http_request_t *r, char *name,
    u_char *value, size_t len);
ngx_int_t ngx_http_llm_retry_after(ngx_http_request_t *r, uint64_t wait);
ngx_int_t ngx_http_llm_too_large_text(ngx_http_request_t *r,
    ngx_str_t *msg);


extern ngx_str_t  ngx_http_llm_unreadable_text;


#endif /* _NGX_HTTP_LLM_REPLY_H_INCLUDED_ */
