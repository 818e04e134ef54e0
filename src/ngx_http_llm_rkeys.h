
/*
 * ngx_llm_gateway: client keys and accounts read from Redis.
 */


#ifndef _NGX_HTTP_LLM_RKEYS_H_INCLUDED_
#define _NGX_HTTP_LLM_RKEYS_H_INCLUDED_


#include "ngx_http_llm_module.h"


/*
 * Results of ngx_http_llm_rkeys_find() and _result() besides NGX_OK,
 * NGX_DECLINED (401, "msg" says why), NGX_AGAIN (the phases resume
 * when Redis has answered) and NGX_ERROR.
 */
#define NGX_HTTP_LLM_KEY_SUSPENDED    NGX_ABORT   /* 403 */
#define NGX_HTTP_LLM_KEY_NO_STORE     NGX_BUSY    /* 503, on_error=deny */


ngx_int_t ngx_http_llm_rkeys_find(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_str_t *key, u_char *digest, ngx_str_t *msg);
ngx_int_t ngx_http_llm_rkeys_result(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_str_t *msg);


#endif /* _NGX_HTTP_LLM_RKEYS_H_INCLUDED_ */
