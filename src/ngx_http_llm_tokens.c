
/*
 * ngx_llm_gateway: the prompt token estimator.
 *
 * Owns the script-aware estimate of how many tokens a BPE tokenizer
 * makes of a text, and the strict UTF-8 check.  The text is cut the
 * way cl100k's pre-tokenizer cuts it (letter runs that take one leading
 * space or mark, digit groups of three, punctuation runs that take one
 * leading space and the line breaks after them, whitespace), each piece
 * is counted by the class of its characters, and the counts are
 * weighed once, when the estimate is asked for.  The weights were
 * measured against cl100k_base: see docs/tokens.md.  No allocation, no
 * state outside the caller's ngx_http_llm_estimate_t.  An estimate that
 * carries a vocabulary (e->bpe, "llm_tokenizer") hands its text to the
 * exact counter, ngx_http_llm_bpe.c, instead.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_llm_tokens.h"
#include "ngx_http_llm_bpe.h"


/* character classes */
#define NGX_HTTP_LLM_C_SPACE       0
#define NGX_HTTP_LLM_C_NEWLINE     1
#define NGX_HTTP_LLM_C_DIGIT       2
#define NGX_HTTP_LLM_C_PUNCT       3     /* ASCII punctuation, controls */
#define NGX_HTTP_LLM_C_SYMBOL      4     /* other punctuation, symbols */
#define NGX_HTTP_LLM_C_MARK        5     /* combining marks */
#define NGX_HTTP_LLM_C_EMOJI       6
#define NGX_HTTP_LLM_C_JOINER      7     /* ZWJ, selectors, skin tones */
#define NGX_HTTP_LLM_C_BAD         8     /* a byte that is not UTF-8 */
#define NGX_HTTP_LLM_C_LATIN       9     /* letters from here on */
#define NGX_HTTP_LLM_C_ACCENTED    10
#define NGX_HTTP_LLM_C_ALPHA       11
#define NGX_HTTP_LLM_C_ABJAD       12
#define NGX_HTTP_LLM_C_COMPLEX     13
#define NGX_HTTP_LLM_C_HAN         14
#define NGX_HTTP_LLM_C_KANA        15
#define NGX_HTTP_LLM_C_HANGUL      16
#define NGX_HTTP_LLM_C_WIDE        17    /* fullwidth Latin, halfwidth forms */
#define NGX_HTTP_LLM_C_RARE        18    /* letters cl100k has no token for */

/* the piece of text being counted */
#define NGX_HTTP_LLM_K_NONE        0
#define NGX_HTTP_LLM_K_LETTERS     1
#define NGX_HTTP_LLM_K_DIGITS      2
#define NGX_HTTP_LLM_K_PUNCT       3
#define NGX_HTTP_LLM_K_SPACE       4

/* a Latin word up to this many letters is usually one token */
#define NGX_HTTP_LLM_SHORT_WORD    5

/* an ASCII punctuation run up to this long is usually one token */
#define NGX_HTTP_LLM_SHORT_PUNCT   3

#define NGX_HTTP_LLM_BAD_CHAR      0xffffffff

/* shorter text goes byte by byte */
#define NGX_HTTP_LLM_ASCII_MIN     32

/* what a whitespace run knows before it ends */
#define NGX_HTTP_LLM_S_NEWLINE     0x01  /* a line break in the run */
#define NGX_HTTP_LLM_S_DIRTY       0x02  /* spaces before a line break */
#define NGX_HTTP_LLM_S_SPACE       0x04  /* the run ends with ' ' */
#define NGX_HTTP_LLM_S_AFTER_PUNCT 0x08  /* the run follows punctuation */
#define NGX_HTTP_LLM_S_LEAD        0x10  /* punctuation took a space */
#define NGX_HTTP_LLM_S_TAIL_SHIFT  5     /* spaces after the last break */


/* weights, in thousandths of a token (docs/tokens.md) */
#define NGX_HTTP_LLM_W_WORD        1000
#define NGX_HTTP_LLM_W_LONG        180
#define NGX_HTTP_LLM_W_FOREIGN     250     /* and more if not English */
#define NGX_HTTP_LLM_W_HUMP        500
#define NGX_HTTP_LLM_W_MIXED       2800
#define NGX_HTTP_LLM_W_ACCENTED    480
#define NGX_HTTP_LLM_W_MARK        1435
#define NGX_HTTP_LLM_W_RUN         205
#define NGX_HTTP_LLM_W_ALPHA       570
#define NGX_HTTP_LLM_W_ABJAD       830
#define NGX_HTTP_LLM_W_COMPLEX     1270
#define NGX_HTTP_LLM_W_HAN         1170
#define NGX_HTTP_LLM_W_KANA        890
#define NGX_HTTP_LLM_W_HANGUL      1290
#define NGX_HTTP_LLM_W_WIDE        2130
#define NGX_HTTP_LLM_W_RARE        980     /* per UTF-8 byte */
#define NGX_HTTP_LLM_W_DIGITS      1050
#define NGX_HTTP_LLM_W_PUNCT       1030
#define NGX_HTTP_LLM_W_LONG_PUNCT  250
#define NGX_HTTP_LLM_W_SYMBOL      580
#define NGX_HTTP_LLM_W_EMOJI       2750
#define NGX_HTTP_LLM_W_JOINER      1000
#define NGX_HTTP_LLM_W_SPACE       1060
#define NGX_HTTP_LLM_W_INVALID     1000


static ngx_inline uint32_t ngx_http_llm_utf8_next(u_char **p, u_char *last);
static ngx_inline ngx_uint_t ngx_http_llm_class(uint32_t c);
static ngx_uint_t ngx_http_llm_class_search(uint32_t c);
static void ngx_http_llm_space_end(ngx_http_llm_estimate_t *e,
    ngx_uint_t *state, ngx_uint_t next);


/* classes of ASCII: 0 space, 1 line break, 2 digit, 3 punctuation, 9 letter */
static u_char  ngx_http_llm_ascii[128] = {
    3, 3, 3, 3, 3, 3, 3, 3, 3, 0, 1, 0, 0, 1, 3, 3,    /* \t \n \v \f \r */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    0, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,    /* ' ' */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,    /* 0-9 */
    3, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,    /* A-O */
    9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 3, 3, 3, 3, 3,    /* P-Z */
    3, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,    /* a-o */
    9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 3, 3, 3, 3, 3     /* p-z */
};


/* classes of the rest, sorted; what is not listed is "complex" */
static ngx_http_llm_range_t  ngx_http_llm_ranges[] = {
    { 0x0080, 0x009f, NGX_HTTP_LLM_C_SYMBOL },
    { 0x00a0, 0x00a0, NGX_HTTP_LLM_C_SPACE },
    { 0x00a1, 0x00bf, NGX_HTTP_LLM_C_SYMBOL },
    { 0x00c0, 0x00d6, NGX_HTTP_LLM_C_ACCENTED },
    { 0x00d7, 0x00d7, NGX_HTTP_LLM_C_SYMBOL },
    { 0x00d8, 0x00f6, NGX_HTTP_LLM_C_ACCENTED },
    { 0x00f7, 0x00f7, NGX_HTTP_LLM_C_SYMBOL },
    { 0x00f8, 0x02af, NGX_HTTP_LLM_C_ACCENTED },
    { 0x02b0, 0x02ff, NGX_HTTP_LLM_C_SYMBOL },
    { 0x0300, 0x036f, NGX_HTTP_LLM_C_MARK },            /* combining marks */
    { 0x0370, 0x058f, NGX_HTTP_LLM_C_ALPHA },           /* Greek, Cyrillic */
    { 0x0590, 0x065f, NGX_HTTP_LLM_C_ABJAD },           /* Hebrew, Arabic */
    { 0x0660, 0x0669, NGX_HTTP_LLM_C_DIGIT },
    { 0x066a, 0x06ef, NGX_HTTP_LLM_C_ABJAD },
    { 0x06f0, 0x06f9, NGX_HTTP_LLM_C_DIGIT },
    { 0x06fa, 0x08ff, NGX_HTTP_LLM_C_ABJAD },           /* Syriac, Thaana */
    { 0x0966, 0x096f, NGX_HTTP_LLM_C_DIGIT },           /* Devanagari */
    { 0x10a0, 0x10ff, NGX_HTTP_LLM_C_ALPHA },           /* Georgian */
    { 0x1100, 0x11ff, NGX_HTTP_LLM_C_RARE },            /* conjoining jamo */
    { 0x1ab0, 0x1aff, NGX_HTTP_LLM_C_MARK },
    { 0x1dc0, 0x1dff, NGX_HTTP_LLM_C_MARK },
    { 0x1e00, 0x1eff, NGX_HTTP_LLM_C_ACCENTED },
    { 0x1f00, 0x1fff, NGX_HTTP_LLM_C_ALPHA },           /* Greek extended */
    { 0x2000, 0x200a, NGX_HTTP_LLM_C_SPACE },
    { 0x200b, 0x200f, NGX_HTTP_LLM_C_JOINER },
    { 0x2010, 0x2027, NGX_HTTP_LLM_C_SYMBOL },
    { 0x2028, 0x2029, NGX_HTTP_LLM_C_NEWLINE },
    { 0x202a, 0x202e, NGX_HTTP_LLM_C_JOINER },
    { 0x202f, 0x202f, NGX_HTTP_LLM_C_SPACE },
    { 0x2030, 0x205e, NGX_HTTP_LLM_C_SYMBOL },
    { 0x205f, 0x205f, NGX_HTTP_LLM_C_SPACE },
    { 0x2060, 0x206f, NGX_HTTP_LLM_C_JOINER },
    { 0x2070, 0x20cf, NGX_HTTP_LLM_C_SYMBOL },
    { 0x20d0, 0x20ff, NGX_HTTP_LLM_C_JOINER },          /* keycap */
    { 0x2100, 0x2bff, NGX_HTTP_LLM_C_SYMBOL },          /* arrows, math */
    { 0x2c00, 0x2c5f, NGX_HTTP_LLM_C_ALPHA },
    { 0x2c60, 0x2c7f, NGX_HTTP_LLM_C_ACCENTED },
    { 0x2c80, 0x2dff, NGX_HTTP_LLM_C_ALPHA },
    { 0x2e00, 0x2e7f, NGX_HTTP_LLM_C_SYMBOL },
    { 0x2e80, 0x2fdf, NGX_HTTP_LLM_C_HAN },             /* radicals */
    { 0x2fe0, 0x2fff, NGX_HTTP_LLM_C_SYMBOL },
    { 0x3000, 0x3000, NGX_HTTP_LLM_C_SPACE },
    { 0x3001, 0x3004, NGX_HTTP_LLM_C_SYMBOL },          /* comma, stop */
    { 0x3005, 0x3007, NGX_HTTP_LLM_C_HAN },
    { 0x3008, 0x303f, NGX_HTTP_LLM_C_SYMBOL },          /* brackets */
    { 0x3040, 0x312f, NGX_HTTP_LLM_C_KANA },            /* and bopomofo */
    { 0x3130, 0x318f, NGX_HTTP_LLM_C_HANGUL },
    { 0x3190, 0x31ef, NGX_HTTP_LLM_C_HAN },
    { 0x31f0, 0x31ff, NGX_HTTP_LLM_C_KANA },
    { 0x3200, 0x33ff, NGX_HTTP_LLM_C_SYMBOL },
    { 0x3400, 0x4dbf, NGX_HTTP_LLM_C_RARE },            /* extension A */
    { 0x4dc0, 0x4dff, NGX_HTTP_LLM_C_SYMBOL },
    { 0x4e00, 0x9fff, NGX_HTTP_LLM_C_HAN },
    { 0xa640, 0xa69f, NGX_HTTP_LLM_C_ALPHA },
    { 0xa700, 0xa7ff, NGX_HTTP_LLM_C_ACCENTED },
    { 0xa960, 0xa97f, NGX_HTTP_LLM_C_RARE },            /* jamo extended */
    { 0xab30, 0xab6f, NGX_HTTP_LLM_C_ACCENTED },
    { 0xac00, 0xd7af, NGX_HTTP_LLM_C_HANGUL },
    { 0xd7b0, 0xd7ff, NGX_HTTP_LLM_C_RARE },            /* jamo extended */
    { 0xe000, 0xf8ff, NGX_HTTP_LLM_C_SYMBOL },          /* private use */
    { 0xf900, 0xfaff, NGX_HTTP_LLM_C_RARE },            /* compatibility */
    { 0xfb00, 0xfb06, NGX_HTTP_LLM_C_ACCENTED },
    { 0xfb13, 0xfb17, NGX_HTTP_LLM_C_ALPHA },
    { 0xfb1d, 0xfdff, NGX_HTTP_LLM_C_ABJAD },
    { 0xfe00, 0xfe0f, NGX_HTTP_LLM_C_JOINER },
    { 0xfe10, 0xfe1f, NGX_HTTP_LLM_C_SYMBOL },
    { 0xfe20, 0xfe2f, NGX_HTTP_LLM_C_JOINER },
    { 0xfe30, 0xfe6f, NGX_HTTP_LLM_C_SYMBOL },
    { 0xfe70, 0xfefe, NGX_HTTP_LLM_C_ABJAD },
    { 0xfeff, 0xfeff, NGX_HTTP_LLM_C_JOINER },          /* BOM */
    { 0xff00, 0xff0f, NGX_HTTP_LLM_C_SYMBOL },          /* fullwidth forms */
    { 0xff10, 0xff19, NGX_HTTP_LLM_C_DIGIT },
    { 0xff1a, 0xff20, NGX_HTTP_LLM_C_SYMBOL },
    { 0xff21, 0xff3a, NGX_HTTP_LLM_C_WIDE },
    { 0xff3b, 0xff40, NGX_HTTP_LLM_C_SYMBOL },
    { 0xff41, 0xff5a, NGX_HTTP_LLM_C_WIDE },
    { 0xff5b, 0xff65, NGX_HTTP_LLM_C_SYMBOL },
    { 0xff66, 0xffdf, NGX_HTTP_LLM_C_WIDE },            /* halfwidth */
    { 0xffe0, 0xffff, NGX_HTTP_LLM_C_SYMBOL },
    { 0x1b000, 0x1b16f, NGX_HTTP_LLM_C_KANA },
    { 0x1d000, 0x1d7ff, NGX_HTTP_LLM_C_SYMBOL },
    { 0x1f000, 0x1f3fa, NGX_HTTP_LLM_C_EMOJI },         /* with flag letters */
    { 0x1f3fb, 0x1f3ff, NGX_HTTP_LLM_C_JOINER },        /* skin tones */
    { 0x1f400, 0x1faff, NGX_HTTP_LLM_C_EMOJI },
    { 0x1fb00, 0x1fbff, NGX_HTTP_LLM_C_SYMBOL },
    { 0x20000, 0x3ffff, NGX_HTTP_LLM_C_RARE },          /* extension B+ */
    { 0xe0000, 0xe01ef, NGX_HTTP_LLM_C_JOINER },        /* tags, selectors */
    { 0xf0000, 0x10ffff, NGX_HTTP_LLM_C_SYMBOL }
};


/* the classes of the first 64K code points */
static u_char      ngx_http_llm_bmp[0x10000];
static ngx_uint_t  ngx_http_llm_bmp_ready;


void
ngx_http_llm_estimate_init(ngx_http_llm_estimate_t *e)
{
    ngx_memzero(e, sizeof(ngx_http_llm_estimate_t));
}


/*
 * One string, counted on its own: a piece never spans two calls.  Text
 * that is all ASCII goes 64 bytes at a time (ngx_http_llm_tokens_ascii.c),
 * the rest byte by byte; with a vocabulary (e->bpe), it is counted
 * exactly instead.
 */

void
ngx_http_llm_estimate_add(ngx_http_llm_estimate_t *e, u_char *p, size_t len)
{
    if (e->bpe) {
        ngx_http_llm_bpe_add(e->bpe, e, p, len);
        return;
    }

    if (len >= NGX_HTTP_LLM_ASCII_MIN
        && ngx_http_llm_estimate_ascii(e, p, len) == NGX_OK)
    {
        return;
    }

    ngx_http_llm_estimate_add_bytes(e, p, len);
}


/*
 * The byte loop, which defines the estimate.  "state" keeps what a
 * whitespace run needs until the next character says how it ends (see
 * ngx_http_llm_space_end()).
 */

void
ngx_http_llm_estimate_add_bytes(ngx_http_llm_estimate_t *e, u_char *p,
    size_t len)
{
    u_char      *last, *start;
    uint32_t     c;
    ngx_uint_t   cls, kind, n, upper, after, state;

    last = p + len;
    kind = NGX_HTTP_LLM_K_NONE;
    upper = 0;
    after = 0;
    state = 0;
    n = 0;

    while (p < last) {

        if (*p < 0x80) {
            c = *p++;
            cls = ngx_http_llm_ascii[c];

        } else {
            start = p;
            c = ngx_http_llm_utf8_next(&p, last);

            if (c == NGX_HTTP_LLM_BAD_CHAR) {
                cls = NGX_HTTP_LLM_C_BAD;

            } else {
                cls = ngx_http_llm_class(c);

                if (cls == NGX_HTTP_LLM_C_SYMBOL) {
                    e->symbols += p - start;

                } else if (cls == NGX_HTTP_LLM_C_RARE) {
                    e->rare += p - start;
                }
            }
        }

        e->chars++;

        if (cls >= NGX_HTTP_LLM_C_LATIN
            || (cls == NGX_HTTP_LLM_C_JOINER
                && kind == NGX_HTTP_LLM_K_LETTERS))
        {
            if (kind != NGX_HTTP_LLM_K_LETTERS) {

                if (kind == NGX_HTTP_LLM_K_SPACE) {
                    ngx_http_llm_space_end(e, &state, NGX_HTTP_LLM_K_LETTERS);

                } else if (kind == NGX_HTTP_LLM_K_PUNCT && n == 1
                           && !(state & NGX_HTTP_LLM_S_LEAD))
                {
                    /* one mark before a word is part of the word */
                    e->puncts--;
                }

                /* a word right after a digit, as in base64 "w0KGgo" */

                after = (kind == NGX_HTTP_LLM_K_DIGITS);
                kind = NGX_HTTP_LLM_K_LETTERS;
                upper = 1;
                n = 0;

                if (cls <= NGX_HTTP_LLM_C_ACCENTED) {
                    e->words++;

                } else {
                    e->runs++;
                }
            }

            switch (cls) {

            case NGX_HTTP_LLM_C_LATIN:

                /* the rest of an ASCII word in one go */

                for ( ;; ) {
                    if (++n > NGX_HTTP_LLM_SHORT_WORD) {
                        e->long_letters++;
                    }

                    if (c <= 'Z' && n > 1 && upper == 0) {
                        e->humps++;
                    }

                    if (after && n >= 3 && n <= NGX_HTTP_LLM_SHORT_WORD
                        && (c <= 'Z') != upper)
                    {
                        e->mixed++;
                    }

                    upper = (c <= 'Z');

                    if (p == last || *p >= 0x80
                        || ngx_http_llm_ascii[*p] != NGX_HTTP_LLM_C_LATIN)
                    {
                        break;
                    }

                    c = *p++;
                    e->chars++;
                }

                break;

            case NGX_HTTP_LLM_C_ACCENTED:
                if (++n > NGX_HTTP_LLM_SHORT_WORD) {
                    e->long_letters++;
                }

                e->accented++;
                upper = 0;
                break;

            case NGX_HTTP_LLM_C_ALPHA:
                e->alphabetic++;
                break;

            case NGX_HTTP_LLM_C_ABJAD:
                e->abjad++;
                break;

            case NGX_HTTP_LLM_C_HAN:
                e->han++;
                break;

            case NGX_HTTP_LLM_C_KANA:
                e->kana++;
                break;

            case NGX_HTTP_LLM_C_HANGUL:
                e->hangul++;
                break;

            case NGX_HTTP_LLM_C_WIDE:
                e->wide++;
                break;

            case NGX_HTTP_LLM_C_RARE:         /* counted in bytes above */
                break;

            case NGX_HTTP_LLM_C_JOINER:
                e->joiners++;
                break;

            default: /* NGX_HTTP_LLM_C_COMPLEX */
                e->complex++;
            }

            continue;
        }

        switch (cls) {

        case NGX_HTTP_LLM_C_DIGIT:

            if (kind != NGX_HTTP_LLM_K_DIGITS) {
                if (kind == NGX_HTTP_LLM_K_SPACE) {
                    ngx_http_llm_space_end(e, &state, NGX_HTTP_LLM_K_DIGITS);
                }

                kind = NGX_HTTP_LLM_K_DIGITS;
                n = 0;
            }

            /* ASCII digits go three to a token, the others one each */

            if (n++ % 3 == 0 || c >= 0x80) {
                e->digits++;
            }

            break;

        case NGX_HTTP_LLM_C_SPACE:
        case NGX_HTTP_LLM_C_NEWLINE:

            if (kind != NGX_HTTP_LLM_K_SPACE) {
                state = (kind == NGX_HTTP_LLM_K_PUNCT)
                        ? NGX_HTTP_LLM_S_AFTER_PUNCT : 0;
                kind = NGX_HTTP_LLM_K_SPACE;
            }

            if (cls == NGX_HTTP_LLM_C_NEWLINE) {
                if (state >> NGX_HTTP_LLM_S_TAIL_SHIFT) {
                    state |= NGX_HTTP_LLM_S_DIRTY;
                }

                state &= (1 << NGX_HTTP_LLM_S_TAIL_SHIFT) - 1;
                state = (state | NGX_HTTP_LLM_S_NEWLINE)
                        & ~NGX_HTTP_LLM_S_SPACE;

            } else {
                state += 1 << NGX_HTTP_LLM_S_TAIL_SHIFT;

                if (c == ' ') {
                    state |= NGX_HTTP_LLM_S_SPACE;

                } else {
                    state &= ~NGX_HTTP_LLM_S_SPACE;
                }
            }

            break;

        default: /* punctuation, symbols, emoji, joiners, bad bytes */

            if (kind != NGX_HTTP_LLM_K_PUNCT) {
                if (kind == NGX_HTTP_LLM_K_SPACE) {
                    ngx_http_llm_space_end(e, &state, NGX_HTTP_LLM_K_PUNCT);

                } else {
                    state = 0;
                }

                kind = NGX_HTTP_LLM_K_PUNCT;
                n = 0;
                e->puncts++;
            }

            n++;

            switch (cls) {

            case NGX_HTTP_LLM_C_PUNCT:
                if (n > NGX_HTTP_LLM_SHORT_PUNCT) {
                    e->long_puncts++;
                }

                break;

            case NGX_HTTP_LLM_C_MARK:
                e->marks++;
                break;

            case NGX_HTTP_LLM_C_EMOJI:
                e->emoji++;
                break;

            case NGX_HTTP_LLM_C_JOINER:
                e->joiners++;
                break;

            case NGX_HTTP_LLM_C_BAD:
                e->invalid++;
                break;

            default: /* NGX_HTTP_LLM_C_SYMBOL, counted in bytes above */
                break;
            }
        }
    }

    if (kind == NGX_HTTP_LLM_K_SPACE) {
        ngx_http_llm_space_end(e, &state, NGX_HTTP_LLM_K_NONE);
    }
}


/*
 * A whitespace run ends before "next" (NGX_HTTP_LLM_K_NONE: the end of
 * the text).  Its line breaks are one token, unless they only follow
 * punctuation, which takes them; the spaces after the last break are one
 * token, less the last one if the next piece takes it (a word takes any
 * space, punctuation only ' ').
 */

static void
ngx_http_llm_space_end(ngx_http_llm_estimate_t *e, ngx_uint_t *state,
    ngx_uint_t next)
{
    ngx_uint_t  s, tail;

    s = *state;
    tail = s >> NGX_HTTP_LLM_S_TAIL_SHIFT;

    if ((s & NGX_HTTP_LLM_S_NEWLINE)
        && (s & (NGX_HTTP_LLM_S_AFTER_PUNCT|NGX_HTTP_LLM_S_DIRTY))
           != NGX_HTTP_LLM_S_AFTER_PUNCT)
    {
        e->spaces++;
    }

    *state = 0;

    if (tail == 0) {
        return;
    }

    if (next == NGX_HTTP_LLM_K_LETTERS
        || (next == NGX_HTTP_LLM_K_PUNCT && (s & NGX_HTTP_LLM_S_SPACE)))
    {
        if (next == NGX_HTTP_LLM_K_PUNCT) {
            *state = NGX_HTTP_LLM_S_LEAD;
        }

        tail--;
    }

    if (tail) {
        e->spaces++;
    }
}


/* tokens known exactly: token ids in a prompt, fixed costs of images */

void
ngx_http_llm_estimate_add_tokens(ngx_http_llm_estimate_t *e, ngx_uint_t n)
{
    e->tokens += n;
}


ngx_uint_t
ngx_http_llm_estimate_tokens(ngx_http_llm_estimate_t *e)
{
    uint64_t    t;
    ngx_uint_t  w;

    /*
     * Vocabularies are mostly English: long words of Latin text with
     * accents (one accented letter in 16 words or more) split more.
     */

    w = NGX_HTTP_LLM_W_LONG;

    if ((e->accented + e->marks) * 16 > e->words) {
        w += NGX_HTTP_LLM_W_FOREIGN;
    }

    t = (uint64_t) e->words * NGX_HTTP_LLM_W_WORD
        + (uint64_t) e->long_letters * w
        + (uint64_t) e->humps * NGX_HTTP_LLM_W_HUMP
        + (uint64_t) e->mixed * NGX_HTTP_LLM_W_MIXED
        + (uint64_t) e->accented * NGX_HTTP_LLM_W_ACCENTED
        + (uint64_t) e->marks * NGX_HTTP_LLM_W_MARK
        + (uint64_t) e->runs * NGX_HTTP_LLM_W_RUN
        + (uint64_t) e->alphabetic * NGX_HTTP_LLM_W_ALPHA
        + (uint64_t) e->abjad * NGX_HTTP_LLM_W_ABJAD
        + (uint64_t) e->complex * NGX_HTTP_LLM_W_COMPLEX
        + (uint64_t) e->han * NGX_HTTP_LLM_W_HAN
        + (uint64_t) e->kana * NGX_HTTP_LLM_W_KANA
        + (uint64_t) e->hangul * NGX_HTTP_LLM_W_HANGUL
        + (uint64_t) e->wide * NGX_HTTP_LLM_W_WIDE
        + (uint64_t) e->rare * NGX_HTTP_LLM_W_RARE
        + (uint64_t) e->digits * NGX_HTTP_LLM_W_DIGITS
        + (uint64_t) e->puncts * NGX_HTTP_LLM_W_PUNCT
        + (uint64_t) e->long_puncts * NGX_HTTP_LLM_W_LONG_PUNCT
        + (uint64_t) e->symbols * NGX_HTTP_LLM_W_SYMBOL
        + (uint64_t) e->emoji * NGX_HTTP_LLM_W_EMOJI
        + (uint64_t) e->joiners * NGX_HTTP_LLM_W_JOINER
        + (uint64_t) e->spaces * NGX_HTTP_LLM_W_SPACE
        + (uint64_t) e->invalid * NGX_HTTP_LLM_W_INVALID;

    return (ngx_uint_t) ((t + 999) / 1000) + e->tokens;
}


ngx_uint_t
ngx_http_llm_estimate_chars(ngx_http_llm_estimate_t *e)
{
    return e->chars;
}


/* no overlong forms, no surrogates, nothing above U+10FFFF */

ngx_int_t
ngx_http_llm_utf8_valid(u_char *p, size_t len)
{
    u_char  *last;

    last = p + len;

    while (p < last) {

        if (*p < 0x80) {
            p++;
            continue;
        }

        if (ngx_http_llm_utf8_next(&p, last) == NGX_HTTP_LLM_BAD_CHAR) {
            return 0;
        }
    }

    return 1;
}


/* the length of the well-formed character at p (not ASCII), or 0 */

size_t
ngx_http_llm_utf8_char(u_char *p, u_char *last)
{
    u_char  *s;

    s = p;

    if (ngx_http_llm_utf8_next(&s, last) == NGX_HTTP_LLM_BAD_CHAR) {
        return 0;
    }

    return s - p;
}


/*
 * Decodes one non-ASCII character and moves *p past it, or past one
 * byte if it is not well-formed UTF-8.
 */

static ngx_inline uint32_t
ngx_http_llm_utf8_next(u_char **p, u_char *last)
{
    u_char      *s;
    uint32_t     c, min;
    ngx_uint_t   n;

    s = *p;
    c = *s++;

    if (c >= 0xc2 && c <= 0xdf) {
        n = 1;
        c &= 0x1f;
        min = 0x80;

    } else if (c >= 0xe0 && c <= 0xef) {
        n = 2;
        c &= 0x0f;
        min = 0x800;

    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 3;
        c &= 0x07;
        min = 0x10000;

    } else {
        (*p)++;
        return NGX_HTTP_LLM_BAD_CHAR;
    }

    if ((size_t) (last - s) < n) {
        (*p)++;
        return NGX_HTTP_LLM_BAD_CHAR;
    }

    while (n--) {
        if ((*s & 0xc0) != 0x80) {
            (*p)++;
            return NGX_HTTP_LLM_BAD_CHAR;
        }

        c = (c << 6) | (*s++ & 0x3f);
    }

    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
        (*p)++;
        return NGX_HTTP_LLM_BAD_CHAR;
    }

    *p = s;

    return c;
}


/*
 * The class of a character: from a table for the first 64K code points
 * (filled once from the ranges, by the master when nginx starts, or on
 * first use), by a binary search over the ranges above them.
 */

static ngx_inline ngx_uint_t
ngx_http_llm_class(uint32_t c)
{
    if (c < 0x10000) {
        if (!ngx_http_llm_bmp_ready) {
            ngx_http_llm_estimate_prepare();
        }

        return ngx_http_llm_bmp[c];
    }

    return ngx_http_llm_class_search(c);
}


void
ngx_http_llm_estimate_prepare(void)
{
    uint32_t  c;

    if (ngx_http_llm_bmp_ready) {
        return;
    }

    for (c = 0; c < 0x10000; c++) {
        ngx_http_llm_bmp[c] = (u_char) ngx_http_llm_class_search(c);
    }

    ngx_http_llm_bmp_ready = 1;
}


static ngx_uint_t
ngx_http_llm_class_search(uint32_t c)
{
    return ngx_http_llm_range_find(ngx_http_llm_ranges,
                                   sizeof(ngx_http_llm_ranges)
                                   / sizeof(ngx_http_llm_range_t),
                                   c, NGX_HTTP_LLM_C_COMPLEX);
}


/* the class of "c" in "ranges" (binary search); "none": not there */

ngx_uint_t
ngx_http_llm_range_find(ngx_http_llm_range_t *ranges, ngx_uint_t n,
    uint32_t c, ngx_uint_t none)
{
    ngx_uint_t             lo, hi, mid;
    ngx_http_llm_range_t  *r;

    lo = 0;
    hi = n;

    while (lo < hi) {
        mid = (lo + hi) / 2;
        r = &ranges[mid];

        if (c < r->first) {
            hi = mid;

        } else if (c > r->last) {
            lo = mid + 1;

        } else {
            return r->cls;
        }
    }

    return none;
}
