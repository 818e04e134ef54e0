
/*
 * ngx_llm_gateway: the request body, read in the access phase.
 */


#ifndef _NGX_HTTP_LLM_BODY_H_INCLUDED_
#define _NGX_HTTP_LLM_BODY_H_INCLUDED_


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_json.h"


ngx_uint_t ngx_http_llm_body_wanted(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_loc_conf_t *llcf);
ngx_int_t ngx_http_llm_body_read(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
ngx_int_t ngx_http_llm_body_bytes(ngx_http_request_t *r, ngx_str_t *body);
ngx_int_t ngx_http_llm_body_parse(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_loc_conf_t *llcf);
ngx_uint_t ngx_http_llm_body_prompt(ngx_http_request_t *r,
    ngx_http_llm_request_info_t *info);
ngx_int_t ngx_http_llm_body_unread_cache_key(ngx_http_request_t *r,
    ngx_http_llm_tally_t *t);


#endif /* _NGX_HTTP_LLM_BODY_H_INCLUDED_ */
