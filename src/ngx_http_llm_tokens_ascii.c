
/*
 * ngx_llm_gateway: the token estimator's fast path for ASCII text.
 *
 * Owns counting a text that is all ASCII 64 bytes at a time: each block
 * is classified into bit masks (letters, upper case, digits, blanks,
 * other spaces, line breaks, punctuation), and the pieces the byte loop
 * of ngx_http_llm_tokens.c counts one branch at a time are counted with
 * shifts and population counts, the masks of the block before and the
 * block after standing in for the byte loop's state:
 *
 *   words         letters with no letter before them
 *   long_letters  letters with five letters before them (a run's 6th on)
 *   humps         capitals right after a small letter
 *   mixed         changes of case at the 3rd to 5th letter of a word
 *                 that follows a digit: the word's letters are found by
 *                 adding its first letter to the letter mask (the carry
 *                 runs through the word), in blocks with a digit or such
 *                 a word from the block before
 *   puncts        punctuation with none before it, less a single mark
 *                 that a word takes (a letter follows, no ' ' precedes)
 *   long_puncts   punctuation with three before it
 *   spaces        a lone space or tab: one, unless the next piece takes
 *                 it (a word; punctuation if it is ' ')
 *
 * Digit groups and the rarer whitespace runs (two or more, or a line
 * break in them) are walked one by one with the byte loop's rules.  The
 * masks come from AVX-512BW compares where the CPU has them, else SSE2,
 * else a byte loop (ngx_http_llm_simd.c chooses).  The byte loop of
 * ngx_http_llm_tokens.c is the definition: t/unit (300,000 random
 * strings, every sample) and t/fuzz (every input) check that every
 * level counts the same.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_llm_tokens.h"
#include "ngx_http_llm_simd.h"

#if (NGX_HTTP_LLM_HAVE_SSE2)
#include <emmintrin.h>
#endif

#if (NGX_HTTP_LLM_HAVE_AVX512)
#include <immintrin.h>
#endif


typedef struct {
    uint64_t                    letter;
    uint64_t                    upper;
    uint64_t                    digit;
    uint64_t                    blank;      /* ' ' */
    uint64_t                    space;      /* ' ', \t, \v, \f */
    uint64_t                    newline;    /* \n, \r */
    uint64_t                    punct;      /* the rest, controls too */
} ngx_http_llm_masks_t;


static void ngx_http_llm_classify(u_char *p, size_t n,
    ngx_http_llm_masks_t *m);
#if (NGX_HTTP_LLM_HAVE_SSE2)
static void ngx_http_llm_classify_sse2(u_char *p, size_t n,
    ngx_http_llm_masks_t *m);
#endif
#if (NGX_HTTP_LLM_HAVE_AVX512)
static ngx_int_t ngx_http_llm_ascii_avx512(ngx_http_llm_estimate_t *e,
    u_char *p, size_t len);
#endif
static ngx_uint_t ngx_http_llm_space_run(u_char *start, u_char *p,
    u_char *last);


/*
 * Population counts: the instruction where the build targets it; on
 * x86-64 otherwise, a second copy of the counting function built for it,
 * chosen when the module is loaded if the CPU has it (GCC and clang
 * "target_clones"); else a few shifts and a multiply.
 */

#if (__POPCNT__)
#define ngx_http_llm_popcount(x)  ((ngx_uint_t) __builtin_popcountll(x))
#define NGX_HTTP_LLM_POPCNT_CLONES

#elif (__x86_64__ && (__clang_major__ >= 14                                  \
                      || (!__clang__ && __GNUC__ >= 6)))
#define ngx_http_llm_popcount(x)  ((ngx_uint_t) __builtin_popcountll(x))
#define NGX_HTTP_LLM_POPCNT_CLONES                                            \
    __attribute__((target_clones("popcnt", "default")))

#else
#define ngx_http_llm_popcount(x)  ngx_http_llm_popcount64(x)
#define NGX_HTTP_LLM_POPCNT_CLONES
#define NGX_HTTP_LLM_POPCNT_SWAR  1
#endif
#define ngx_http_llm_ctz(x)       ((ngx_uint_t) __builtin_ctzll(x))

/* the mask shifted k places towards the end, the block before feeding in */
#define ngx_http_llm_before(cur, prev, k)                                     \
    (((cur) << (k)) | ((prev) >> (64 - (k))))

#define ngx_http_llm_after(cur, next)                                         \
    (((cur) >> 1) | ((next) << 63))

#define ngx_http_llm_is_space(c)                                              \
    ((c) == ' ' || (c) == '\t' || (c) == '\n' || (c) == '\r'                 \
     || (c) == '\v' || (c) == '\f')

#define ngx_http_llm_is_letter(c)                                             \
    (((c) | 0x20) >= 'a' && ((c) | 0x20) <= 'z')

#define ngx_http_llm_is_digit(c)  ((c) >= '0' && (c) <= '9')

#define ngx_http_llm_is_punct(c)                                              \
    (!ngx_http_llm_is_letter(c) && !ngx_http_llm_is_digit(c)                  \
     && !ngx_http_llm_is_space(c))


#if (NGX_HTTP_LLM_POPCNT_SWAR)

/* without the instruction, the compiler's builtin is a library call */

static ngx_inline ngx_uint_t
ngx_http_llm_popcount64(uint64_t x)
{
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;

    return (ngx_uint_t) ((x * 0x0101010101010101ULL) >> 56);
}

#endif


NGX_HTTP_LLM_POPCNT_CLONES
static void ngx_http_llm_ascii_count(ngx_http_llm_estimate_t *e, u_char *p,
    u_char *last);


/*
 * NGX_OK: counted; NGX_DECLINED: the text is not all ASCII, and "e" is
 * as it was.
 */

ngx_int_t
ngx_http_llm_estimate_ascii(ngx_http_llm_estimate_t *e, u_char *p,
    size_t len)
{
    u_char    *q, *last;
    uint64_t   v, acc;

#if (NGX_HTTP_LLM_HAVE_AVX512)

    if (ngx_http_llm_simd >= NGX_HTTP_LLM_SIMD_AVX512) {
        return ngx_http_llm_ascii_avx512(e, p, len);
    }

#endif

    last = p + len;
    acc = 0;

    for (q = p; last - q >= 8; q += 8) {
        ngx_memcpy(&v, q, 8);
        acc |= v;
    }

    while (q < last) {
        acc |= *q++;
    }

    if (acc & 0x8080808080808080ULL) {
        return NGX_DECLINED;
    }

    e->chars += len;

    ngx_http_llm_ascii_count(e, p, last);

    return NGX_OK;
}


/* what the blocks add up to, kept in registers until the text ends */

typedef struct {
    ngx_uint_t                  words;
    ngx_uint_t                  long_letters;
    ngx_uint_t                  humps;
    ngx_uint_t                  mixed;
    ngx_uint_t                  puncts;
    ngx_uint_t                  long_puncts;
    ngx_uint_t                  spaces;
    ngx_uint_t                  digits;
} ngx_http_llm_counts_t;


/*
 * What the block of 64 bytes at "q" adds (the masks of the block before
 * it, its own and the block after it); "p" and "last" bound the text.
 * "after" is 1 if the block's first letter would be in a word that
 * follows a digit (the block before ended with a digit or in such a
 * word), and is set for the next block.
 */

static ngx_http_llm_always_inline void
ngx_http_llm_ascii_block(ngx_http_llm_counts_t *c, u_char *p, u_char *q,
    u_char *last, ngx_http_llm_masks_t *prev, ngx_http_llm_masks_t *cur,
    ngx_http_llm_masks_t *next, uint64_t *after)
{
    size_t      n;
    uint64_t    lw, pu, ws, pws, ll, pl, pp, x, lead, single, lw_next,
                pu_next;
    ngx_uint_t  i;

    lw = cur->letter;
    pu = cur->punct;
    ws = cur->space | cur->newline;
    pws = prev->space | prev->newline;

    lw_next = ngx_http_llm_after(lw, next->letter);
    pu_next = ngx_http_llm_after(pu, next->punct);

    /* letter runs; "ll": letters after a letter */

    ll = lw & ngx_http_llm_before(lw, prev->letter, 1);

    c->words += ngx_http_llm_popcount(lw & ~ll);

    /* six letters in a row: a pair, and two pairs before it */

    pl = prev->letter & (prev->letter << 1);
    x = ll & ngx_http_llm_before(ll, pl, 2) & ngx_http_llm_before(ll, pl, 4);

    c->long_letters += ngx_http_llm_popcount(x);

    c->humps += ngx_http_llm_popcount(
                    cur->upper
                    & ngx_http_llm_before(lw & ~cur->upper,
                                          prev->letter & ~prev->upper,
                                          1));

    /* punctuation runs; "pp": punctuation after punctuation */

    pp = pu & ngx_http_llm_before(pu, prev->punct, 1);

    x = pu & ~pp;
    c->puncts += ngx_http_llm_popcount(x);

    /* a lone mark before a word is the word's, unless ' ' led it */

    lead = ngx_http_llm_before(cur->blank, prev->blank, 1);

    c->puncts -= ngx_http_llm_popcount(x & ~pu_next & lw_next & ~lead);

    /* four in a row: a pair, and a pair before it */

    x = prev->punct & (prev->punct << 1);

    c->long_puncts += ngx_http_llm_popcount(pp & ngx_http_llm_before(pp, x,
                                                                     2));

    /* a lone ' ' or tab: a token unless the next piece takes it */

    x = ws & ~ngx_http_llm_before(ws, pws, 1);

    single = cur->space & x
             & ~ngx_http_llm_after(ws, next->space | next->newline);

    c->spaces += ngx_http_llm_popcount(
                     single & ~(lw_next | (cur->blank & pu_next)));

    /* other whitespace runs, one by one, from where they start */

    x &= ~single;

    while (x) {
        i = ngx_http_llm_ctz(x);
        x &= x - 1;

        c->spaces += ngx_http_llm_space_run(p, q + i, last);
    }

    /* the rest is about digits: most blocks of prose have none */

    if ((cur->digit | *after) == 0) {
        return;
    }

    /*
     * Words that follow a digit: their first letters, added to the
     * letter mask, carry through them and clear them.
     */

    x = lw & ((cur->digit << 1) | *after);
    x = lw & ~(lw + x);

    *after = (cur->digit | x) >> 63;

    /* in them, changes of case at a 3rd, 4th or 5th letter */

    if (x) {
        x &= ll & ngx_http_llm_before(ll, pl, 1)
             & ~(ll & ngx_http_llm_before(ll, pl, 2)
                 & ngx_http_llm_before(ll, pl, 4))
             & (cur->upper ^ ngx_http_llm_before(cur->upper, prev->upper,
                                                 1));

        c->mixed += ngx_http_llm_popcount(x);
    }

    /* digit groups of three */

    x = cur->digit & ~ngx_http_llm_before(cur->digit, prev->digit, 1);

    while (x) {
        i = ngx_http_llm_ctz(x);
        x &= x - 1;

        for (n = 0; q + i + n < last && ngx_http_llm_is_digit(q[i + n]);
             n++)
        {
            /* void */
        }

        c->digits += (n + 2) / 3;
    }
}


static ngx_http_llm_always_inline void
ngx_http_llm_counts_add(ngx_http_llm_estimate_t *e, ngx_http_llm_counts_t *c)
{
    e->words += c->words;
    e->long_letters += c->long_letters;
    e->humps += c->humps;
    e->mixed += c->mixed;
    e->puncts += c->puncts;
    e->long_puncts += c->long_puncts;
    e->spaces += c->spaces;
    e->digits += c->digits;
}


NGX_HTTP_LLM_POPCNT_CLONES
static void
ngx_http_llm_ascii_count(ngx_http_llm_estimate_t *e, u_char *p, u_char *last)
{
    u_char                 *q;
    size_t                  n, len;
    uint64_t                after;
    ngx_http_llm_masks_t    prev, cur, next;
    ngx_http_llm_counts_t   c;

    len = last - p;
    after = 0;

    ngx_memzero(&c, sizeof(ngx_http_llm_counts_t));
    ngx_memzero(&prev, sizeof(ngx_http_llm_masks_t));

    ngx_http_llm_classify(p, ngx_min(len, 64), &cur);

    for (q = p; q < last; q += 64) {

        n = (size_t) (last - q);

        if (n > 64) {
            ngx_http_llm_classify(q + 64, ngx_min(n - 64, 64), &next);

        } else {
            ngx_memzero(&next, sizeof(ngx_http_llm_masks_t));
        }

        ngx_http_llm_ascii_block(&c, p, q, last, &prev, &cur, &next,
                                 &after);

        prev = cur;
        cur = next;
    }

    ngx_http_llm_counts_add(e, &c);
}


#if (NGX_HTTP_LLM_HAVE_AVX512)

/*
 * The masks of "n" bytes (at most 64) in one load and a few compares;
 * the bytes over 0x7f, as a mask.
 */

NGX_HTTP_LLM_AVX512
static ngx_http_llm_always_inline uint64_t
ngx_http_llm_classify512(u_char *p, size_t n, ngx_http_llm_masks_t *m)
{
    __m512i   v;
    uint64_t  valid, lw, dg, sp, nl;

    valid = (n >= 64) ? ~(uint64_t) 0 : ((uint64_t) 1 << n) - 1;

    /* a masked load reads nothing past the text */

    v = _mm512_maskz_loadu_epi8(valid, p);

#define ngx_http_llm_in512(x, lo, hi)                                         \
    _mm512_cmple_epu8_mask(_mm512_sub_epi8(x, _mm512_set1_epi8(lo)),          \
                           _mm512_set1_epi8((hi) - (lo)))

    lw = ngx_http_llm_in512(_mm512_or_si512(v, _mm512_set1_epi8(0x20)),
                            'a', 'z');
    dg = ngx_http_llm_in512(v, '0', '9');
    m->blank = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(' ')) & valid;
    sp = m->blank | _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('\t'))
         | ngx_http_llm_in512(v, '\v', '\f');
    nl = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('\n'))
         | _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('\r'));

    m->letter = lw & valid;
    m->upper = ngx_http_llm_in512(v, 'A', 'Z') & valid;

#undef ngx_http_llm_in512

    m->digit = dg & valid;
    m->space = sp & valid;
    m->newline = nl & valid;
    m->punct = ~(lw | dg | sp | nl) & valid;

    return _mm512_movepi8_mask(v);
}


/*
 * ngx_http_llm_estimate_ascii() with 64-byte compares, in one pass: a
 * block's load also shows whether it has a byte over 0x7f, and what the
 * blocks count goes to "e" only once all of them were ASCII.
 */

NGX_HTTP_LLM_AVX512
static ngx_int_t
ngx_http_llm_ascii_avx512(ngx_http_llm_estimate_t *e, u_char *p, size_t len)
{
    u_char                 *q, *last;
    size_t                  n;
    uint64_t                after;
    ngx_http_llm_masks_t    prev, cur, next;
    ngx_http_llm_counts_t   c;

    last = p + len;
    after = 0;

    if (ngx_http_llm_classify512(p, ngx_min(len, 64), &cur)) {
        return NGX_DECLINED;
    }

    ngx_memzero(&c, sizeof(ngx_http_llm_counts_t));
    ngx_memzero(&prev, sizeof(ngx_http_llm_masks_t));

    for (q = p; q < last; q += 64) {

        n = (size_t) (last - q);

        if (n <= 64) {
            ngx_memzero(&next, sizeof(ngx_http_llm_masks_t));

        } else if (ngx_http_llm_classify512(q + 64, ngx_min(n - 64, 64),
                                            &next))
        {
            return NGX_DECLINED;
        }

        ngx_http_llm_ascii_block(&c, p, q, last, &prev, &cur, &next,
                                 &after);

        prev = cur;
        cur = next;
    }

    e->chars += len;
    ngx_http_llm_counts_add(e, &c);

    return NGX_OK;
}

#endif


/*
 * The tokens of a whitespace run from "p", as the byte loop ends it: its
 * line breaks are one unless they only follow punctuation; the spaces
 * after the last break are one, less one that the next piece takes.
 */

static ngx_uint_t
ngx_http_llm_space_run(u_char *start, u_char *p, u_char *last)
{
    u_char      c;
    ngx_uint_t  after_punct, newline, dirty, tail, blank, take, n;

    after_punct = (p > start && ngx_http_llm_is_punct(p[-1]));

    newline = 0;
    dirty = 0;
    tail = 0;
    blank = 0;

    for ( /* void */ ; p < last && ngx_http_llm_is_space(*p); p++) {

        if (*p == '\n' || *p == '\r') {
            dirty |= (tail != 0);
            newline = 1;
            tail = 0;
            blank = 0;

        } else {
            tail++;
            blank = (*p == ' ');
        }
    }

    n = (newline && (dirty || !after_punct));

    if (tail == 0) {
        return n;
    }

    take = 0;

    if (p < last) {
        c = *p;

        /* a word takes any space, punctuation a ' ' */

        take = ngx_http_llm_is_letter(c)
               || (blank && ngx_http_llm_is_punct(c));
    }

    return n + (tail != take);
}


static void
ngx_http_llm_classify(u_char *p, size_t n, ngx_http_llm_masks_t *m)
{
    u_char      c;
    uint64_t    bit;
    ngx_uint_t  i;

#if (NGX_HTTP_LLM_HAVE_SSE2)

    if (ngx_http_llm_simd >= NGX_HTTP_LLM_SIMD_SSE2) {
        ngx_http_llm_classify_sse2(p, n, m);
        return;
    }

#endif

    ngx_memzero(m, sizeof(ngx_http_llm_masks_t));

    for (i = 0; i < n; i++) {
        c = p[i];
        bit = (uint64_t) 1 << i;

        if (ngx_http_llm_is_letter(c)) {
            m->letter |= bit;

            if (c <= 'Z') {
                m->upper |= bit;
            }

        } else if (ngx_http_llm_is_digit(c)) {
            m->digit |= bit;

        } else if (c == ' ' || c == '\t' || c == '\v' || c == '\f') {
            m->space |= bit;

            if (c == ' ') {
                m->blank |= bit;
            }

        } else if (c == '\n' || c == '\r') {
            m->newline |= bit;

        } else {
            m->punct |= bit;
        }
    }
}


#if (NGX_HTTP_LLM_HAVE_SSE2)

static void
ngx_http_llm_classify_sse2(u_char *p, size_t n, ngx_http_llm_masks_t *m)
{
    u_char      block[64];
    uint64_t    lw, up, dg, bl, sp, nl, valid;
    __m128i     v, t;
    ngx_uint_t  i;

    if (n < 64) {
        ngx_memzero(block, 64);
        ngx_memcpy(block, p, n);
        p = block;
    }

    lw = up = dg = bl = sp = nl = 0;

    for (i = 0; i < 64; i += 16) {
        v = _mm_loadu_si128((__m128i *) (p + i));

#define ngx_http_llm_in(x, lo, hi)                                            \
        _mm_cmpeq_epi8(_mm_max_epu8(_mm_sub_epi8(x, _mm_set1_epi8(lo)),       \
                                    _mm_set1_epi8((hi) - (lo))),              \
                       _mm_set1_epi8((hi) - (lo)))

        t = ngx_http_llm_in(_mm_or_si128(v, _mm_set1_epi8(0x20)), 'a', 'z');
        lw |= (uint64_t) (uint16_t) _mm_movemask_epi8(t) << i;

        t = ngx_http_llm_in(v, 'A', 'Z');
        up |= (uint64_t) (uint16_t) _mm_movemask_epi8(t) << i;

        t = ngx_http_llm_in(v, '0', '9');
        dg |= (uint64_t) (uint16_t) _mm_movemask_epi8(t) << i;

        t = _mm_cmpeq_epi8(v, _mm_set1_epi8(' '));
        bl |= (uint64_t) (uint16_t) _mm_movemask_epi8(t) << i;

        t = _mm_or_si128(t, _mm_or_si128(
                _mm_cmpeq_epi8(v, _mm_set1_epi8('\t')),
                ngx_http_llm_in(v, '\v', '\f')));
        sp |= (uint64_t) (uint16_t) _mm_movemask_epi8(t) << i;

        t = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\n')),
                         _mm_cmpeq_epi8(v, _mm_set1_epi8('\r')));
        nl |= (uint64_t) (uint16_t) _mm_movemask_epi8(t) << i;

#undef ngx_http_llm_in
    }

    valid = (n == 64) ? ~(uint64_t) 0 : (((uint64_t) 1 << n) - 1);

    m->letter = lw & valid;
    m->upper = up & valid;
    m->digit = dg & valid;
    m->blank = bl & valid;
    m->space = sp & valid;
    m->newline = nl & valid;
    m->punct = ~(lw | dg | sp | nl) & valid;
}

#endif
