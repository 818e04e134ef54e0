
/*
 * ngx_llm_gateway: a JSON text (a request body, a usage object) as a
 * flat tape of tokens.
 */


#ifndef _NGX_HTTP_LLM_JTAPE_H_INCLUDED_
#define _NGX_HTTP_LLM_JTAPE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* token types; 0 is "absent" (index 0 is never a value) */
#define NGX_HTTP_LLM_JT_NONE        0
#define NGX_HTTP_LLM_JT_OBJECT      1
#define NGX_HTTP_LLM_JT_ARRAY       2
#define NGX_HTTP_LLM_JT_STRING      3
#define NGX_HTTP_LLM_JT_INTEGER     4
#define NGX_HTTP_LLM_JT_REAL        5
#define NGX_HTTP_LLM_JT_TRUE        6
#define NGX_HTTP_LLM_JT_FALSE       7
#define NGX_HTTP_LLM_JT_NULL        8

/* flags: a string with escapes (ngx_http_llm_jtape_str() unescapes it) */
#define NGX_HTTP_LLM_JT_ESCAPED     0x01
/* flags: a string with \u0000 in it */
#define NGX_HTTP_LLM_JT_NUL         0x02

/* the deepest nesting ngx_http_llm_jtape_parse() can be asked to allow */
#define NGX_HTTP_LLM_JT_DEPTH_MAX   256


/*
 * One value, or one object key (a string).  The tape lists them in
 * document order; a container is followed by its members (key, value,
 * key, value...) or elements, and "next" is the index just past the
 * value and everything in it.  Index 1 is the document.
 */

typedef struct {
    uint32_t                    start;  /* offset; strings: past '"' */
    uint32_t                    len;    /* its text; a string's without
                                           its quotes */
    uint32_t                    next;
    uint8_t                     type;
    uint8_t                     flags;
} ngx_http_llm_jtok_t;


/*
 * A tape to be parsed is zeroed; its user may give it an array of its own
 * ("tok", "nalloc") to start with, which a larger text outgrows into the
 * pool.
 */

typedef struct {
    ngx_http_llm_jtok_t        *tok;
    ngx_uint_t                  ntok;
    ngx_uint_t                  nalloc;
    u_char                     *base;   /* the body */
    size_t                      len;
    u_char                     *scratch;   /* an unescaped string */
    size_t                      scratch_size;
    ngx_pool_t                 *pool;
} ngx_http_llm_jtape_t;


/*
 * Names to pick from an object (ngx_http_llm_jtape_pick()): a static
 * list ending with a null string, and what the first pick learns of it.
 */

typedef struct {
    ngx_str_t                  *names;
    ngx_uint_t                  n;
    uint64_t                    lens;   /* a bit per length; 0: not yet */
} ngx_http_llm_jtape_keys_t;

#define ngx_http_llm_jtape_keys(names)  { names, 0, 0 }


#define ngx_http_llm_jt_type(t, i)   ((t)->tok[i].type)
#define ngx_http_llm_jt_is(t, i, ty) ((i) && (t)->tok[i].type == (ty))

/* for (i = jt_first(t, a); i; i = jt_next(t, a, i)): an array's elements */
#define ngx_http_llm_jt_first(t, a)                                           \
    (((a) && (t)->tok[a].type == NGX_HTTP_LLM_JT_ARRAY                        \
      && (a) + 1 < (t)->tok[a].next) ? (a) + 1 : 0)
#define ngx_http_llm_jt_next(t, a, i)                                         \
    ((t)->tok[i].next < (t)->tok[a].next ? (t)->tok[i].next : 0)


ngx_int_t ngx_http_llm_jtape_parse(ngx_http_llm_jtape_t *t, ngx_pool_t *pool,
    u_char *p, size_t len, ngx_uint_t max_depth, ngx_str_t *error);
ngx_uint_t ngx_http_llm_jtape_get(ngx_http_llm_jtape_t *t, ngx_uint_t obj,
    char *name, size_t len);
void ngx_http_llm_jtape_pick(ngx_http_llm_jtape_t *t, ngx_uint_t obj,
    ngx_http_llm_jtape_keys_t *keys, ngx_uint_t *found);
ngx_int_t ngx_http_llm_jtape_str(ngx_http_llm_jtape_t *t, ngx_uint_t i,
    ngx_str_t *s);
void ngx_http_llm_jtape_free(ngx_http_llm_jtape_t *t);
int64_t ngx_http_llm_jtape_int(ngx_http_llm_jtape_t *t, ngx_uint_t i);
ngx_int_t ngx_http_llm_jtape_real(ngx_http_llm_jtape_t *t, ngx_uint_t i,
    double *d);


#endif /* _NGX_HTTP_LLM_JTAPE_H_INCLUDED_ */
