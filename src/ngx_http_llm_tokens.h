
/*
 * ngx_llm_gateway: the prompt token estimator.
 */


#ifndef _NGX_HTTP_LLM_TOKENS_H_INCLUDED_
#define _NGX_HTTP_LLM_TOKENS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * What a chat API adds around the text: OpenAI counts about 3 tokens of
 * framing per message and 3 more that prime the reply.  The caller adds
 * these; the estimator counts text only.
 */

#define NGX_HTTP_LLM_TOKENS_PER_MESSAGE  4
#define NGX_HTTP_LLM_TOKENS_PER_REQUEST  3

/* an image, audio or file part of a prompt, whatever its size */
#define NGX_HTTP_LLM_TOKENS_PER_IMAGE    1600


/* a vocabulary for exact counts (ngx_http_llm_bpe.c) */
typedef struct ngx_http_llm_bpe_s  ngx_http_llm_bpe_t;


/*
 * Counters of what the text is made of, in the units of a BPE
 * tokenizer's pre-tokenizer (words, digit groups, punctuation runs,
 * whitespace); ngx_http_llm_estimate_tokens() weighs them.  See
 * docs/tokens.md for the weights and how they were measured.
 */

typedef struct {
    ngx_uint_t                  chars;      /* code points; bad bytes: 1 */
    ngx_uint_t                  words;      /* letter runs of Latin script */
    ngx_uint_t                  long_letters;  /* Latin past a short word */
    ngx_uint_t                  humps;      /* camelCase: lower to upper */
    ngx_uint_t                  mixed;      /* case changes after a digit */
    ngx_uint_t                  accented;   /* non-ASCII Latin letters */
    ngx_uint_t                  marks;      /* combining marks */
    ngx_uint_t                  runs;       /* letter runs of other scripts */
    ngx_uint_t                  alphabetic; /* Cyrillic, Greek, Armenian */
    ngx_uint_t                  abjad;      /* Hebrew, Arabic, Syriac */
    ngx_uint_t                  complex;    /* Indic, Thai, ..., unlisted */
    ngx_uint_t                  han;        /* CJK ideographs */
    ngx_uint_t                  kana;
    ngx_uint_t                  hangul;
    ngx_uint_t                  wide;       /* fullwidth Latin, halfwidth */
    ngx_uint_t                  rare;       /* UTF-8 bytes of rare letters */
    ngx_uint_t                  digits;     /* groups of up to 3 digits */
    ngx_uint_t                  puncts;     /* punctuation/symbol runs */
    ngx_uint_t                  long_puncts;   /* ASCII past a short run */
    ngx_uint_t                  symbols;    /* UTF-8 bytes of other symbols */
    ngx_uint_t                  emoji;
    ngx_uint_t                  joiners;    /* ZWJ, selectors, skin tones */
    ngx_uint_t                  spaces;     /* whitespace tokens */
    ngx_uint_t                  invalid;    /* bytes that are not UTF-8 */
    ngx_uint_t                  tokens;     /* known exactly: token ids */
    ngx_http_llm_bpe_t         *bpe;        /* if set, text is counted
                                               exactly into "tokens" */
} ngx_http_llm_estimate_t;


void ngx_http_llm_estimate_prepare(void);
void ngx_http_llm_estimate_init(ngx_http_llm_estimate_t *e);
void ngx_http_llm_estimate_add(ngx_http_llm_estimate_t *e, u_char *p,
    size_t len);

/* the two ways estimate_add() counts, exported for the tests */
void ngx_http_llm_estimate_add_bytes(ngx_http_llm_estimate_t *e, u_char *p,
    size_t len);
ngx_int_t ngx_http_llm_estimate_ascii(ngx_http_llm_estimate_t *e, u_char *p,
    size_t len);
void ngx_http_llm_estimate_add_tokens(ngx_http_llm_estimate_t *e,
    ngx_uint_t n);
ngx_uint_t ngx_http_llm_estimate_tokens(ngx_http_llm_estimate_t *e);
ngx_uint_t ngx_http_llm_estimate_chars(ngx_http_llm_estimate_t *e);

/* a class of the code points first..last, in tables sorted by "first" */
typedef struct {
    uint32_t                    first;
    uint32_t                    last;
    ngx_uint_t                  cls;
} ngx_http_llm_range_t;

ngx_uint_t ngx_http_llm_range_find(ngx_http_llm_range_t *ranges,
    ngx_uint_t n, uint32_t c, ngx_uint_t none);

ngx_int_t ngx_http_llm_utf8_valid(u_char *p, size_t len);
size_t ngx_http_llm_utf8_char(u_char *p, u_char *last);


#endif /* _NGX_HTTP_LLM_TOKENS_H_INCLUDED_ */
