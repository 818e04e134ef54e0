
/*
 * ngx_llm_gateway: the only door to libsodium.
 */


#ifndef _NGX_HTTP_LLM_CRYPTO_H_INCLUDED_
#define _NGX_HTTP_LLM_CRYPTO_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_HTTP_LLM_DIGEST_LEN  32


ngx_int_t ngx_http_llm_crypto_init(ngx_log_t *log);
void ngx_http_llm_digest(u_char *out, u_char *data, size_t len);
ngx_int_t ngx_http_llm_digest_equal(u_char *a, u_char *b);
ngx_int_t ngx_http_llm_hex_decode(u_char *out, u_char *hex, size_t len);


#endif /* _NGX_HTTP_LLM_CRYPTO_H_INCLUDED_ */
