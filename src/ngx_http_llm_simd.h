
/*
 * ngx_llm_gateway: the vector instructions the text scanners use.
 */


#ifndef _NGX_HTTP_LLM_SIMD_H_INCLUDED_
#define _NGX_HTTP_LLM_SIMD_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* levels of ngx_http_llm_simd, each a superset of the one before */
#define NGX_HTTP_LLM_SIMD_NONE     0     /* portable C */
#define NGX_HTTP_LLM_SIMD_SSE2     1     /* 16 bytes per compare */
#define NGX_HTTP_LLM_SIMD_AVX512   2     /* AVX-512BW: 64 bytes, bit masks */

/*
 * x86-64 has SSE2 always; the AVX-512 functions are compiled for it
 * (a function attribute, so the rest of the module runs on any CPU)
 * and used only where the CPU has it.
 */

#if (__SSE2__ && !NGX_HTTP_LLM_NO_SIMD)
#define NGX_HTTP_LLM_HAVE_SSE2     1
#endif

#if (__x86_64__ && !NGX_HTTP_LLM_NO_SIMD                                     \
     && (__clang_major__ >= 8 || (!__clang__ && __GNUC__ >= 7)))
#define NGX_HTTP_LLM_HAVE_AVX512   1
#define NGX_HTTP_LLM_AVX512                                                   \
    __attribute__((target("avx512f,avx512bw,popcnt,bmi,bmi2")))
#endif


/* a body each vector level compiles into its own function, popcounts too */
#if (__GNUC__ || __clang__)
#define ngx_http_llm_always_inline  ngx_inline __attribute__((always_inline))
#else
#define ngx_http_llm_always_inline  ngx_inline
#endif


extern ngx_uint_t  ngx_http_llm_simd;


void ngx_http_llm_simd_init(void);
ngx_uint_t ngx_http_llm_simd_best(void);

u_char *ngx_http_llm_simd_string(u_char *p, u_char *last);
u_char *ngx_http_llm_simd_quote(u_char *p, u_char *last, ngx_uint_t *chars);


#endif /* _NGX_HTTP_LLM_SIMD_H_INCLUDED_ */
