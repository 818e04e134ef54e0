
/*
 * ngx_llm_gateway: client keys and how they arrive.
 */


#ifndef _NGX_HTTP_LLM_KEYS_H_INCLUDED_
#define _NGX_HTTP_LLM_KEYS_H_INCLUDED_


#include "ngx_http_llm_module.h"


/* longer credentials are refused without being hashed */
#define NGX_HTTP_LLM_CREDENTIAL_MAX  256


char *ngx_http_llm_key_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_llm_keys_init(ngx_conf_t *cf,
    ngx_http_llm_main_conf_t *lmcf);

ngx_int_t ngx_http_llm_credential(ngx_http_request_t *r, ngx_str_t *key);
ngx_int_t ngx_http_llm_identity(ngx_http_request_t *r);
ngx_http_llm_key_t *ngx_http_llm_key_find(ngx_http_llm_main_conf_t *lmcf,
    ngx_str_t *key, u_char *digest);
ngx_int_t ngx_http_llm_account_valid(ngx_str_t *account);
ngx_int_t ngx_http_llm_mask_request_line(ngx_http_request_t *r);


#endif /* _NGX_HTTP_LLM_KEYS_H_INCLUDED_ */
