
/*
 * ngx_llm_gateway: exact token counts from a BPE vocabulary
 * ("llm_tokenizer").
 */


#ifndef _NGX_HTTP_LLM_BPE_H_INCLUDED_
#define _NGX_HTTP_LLM_BPE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_llm_tokens.h"


/*
 * A piece of text longer than this (in bytes) is counted in chunks of
 * this size, cut at character boundaries: the work and the memory per
 * piece are bounded, and the count of such a piece may differ from
 * tiktoken's by about a token per chunk.  See docs/tokens.md.
 */
#define NGX_HTTP_LLM_BPE_PIECE_MAX  4096


/* the pre-tokenizer: cl100k_base's (the default) or o200k_base's */
#define NGX_HTTP_LLM_BPE_CL100K     0
#define NGX_HTTP_LLM_BPE_O200K      1


ngx_http_llm_bpe_t *ngx_http_llm_bpe_load(ngx_pool_t *pool, u_char *path,
    ngx_uint_t pattern, ngx_str_t *error);
void ngx_http_llm_bpe_add(ngx_http_llm_bpe_t *bpe, ngx_http_llm_estimate_t *e,
    u_char *p, size_t len);
ngx_uint_t ngx_http_llm_bpe_count(ngx_http_llm_bpe_t *bpe, u_char *p,
    size_t len);
ngx_uint_t ngx_http_llm_bpe_tokens(ngx_http_llm_bpe_t *bpe);
void ngx_http_llm_bpe_pattern(ngx_http_llm_bpe_t *bpe, ngx_uint_t pattern);


#endif /* _NGX_HTTP_LLM_BPE_H_INCLUDED_ */
