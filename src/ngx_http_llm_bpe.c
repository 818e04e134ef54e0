
/*
 * ngx_llm_gateway: exact token counts from a BPE vocabulary.
 *
 * Owns "llm_tokenizer PATH [pattern=cl100k|o200k]": reading and
 * checking a vocabulary in tiktoken's rank format (lines "BASE64TOKEN
 * RANK") once, when the configuration is read, into a hash table from
 * the cycle's pool that the workers share after fork; and counting the
 * tokens of a text as tiktoken does: the text is cut by cl100k_base's
 * pre-tokenizer
 *
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
 *   | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *
 * (or o200k_base's, see ngx_http_llm_bpe_add_o200k()) written out by
 * hand (the classes from ngx_http_llm_bpe_ucd.h, made by
 * tools/bpe-unicode.py), and each piece that is not itself a token is
 * merged byte pair by byte pair, the pair of lowest rank first (the
 * leftmost of equal ones), with a heap: O(n log n) for a piece of n
 * bytes.  A piece longer than NGX_HTTP_LLM_BPE_PIECE_MAX is counted in
 * chunks of that size.  Counting allocates nothing: the scratch space
 * for one piece is allocated with the vocabulary, and each worker,
 * single-threaded, uses its own copy of it.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_llm_bpe.h"


/* classes of characters (o200k splits \p{L} and needs \p{M}) */
#define NGX_HTTP_LLM_BPE_O        0      /* other */
#define NGX_HTTP_LLM_BPE_L        1      /* \p{L}: what cl100k sees */
#define NGX_HTTP_LLM_BPE_N        2      /* \p{N} */
#define NGX_HTTP_LLM_BPE_S        3      /* \s but CR and LF */
#define NGX_HTTP_LLM_BPE_NL       4      /* CR, LF */
#define NGX_HTTP_LLM_BPE_LU       1      /* Lu, Lt */
#define NGX_HTTP_LLM_BPE_LL       5      /* Ll */
#define NGX_HTTP_LLM_BPE_LO       6      /* Lm, Lo */
#define NGX_HTTP_LLM_BPE_M        7      /* \p{M} */

/* o200k's [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and [\p{Ll}\p{Lm}\p{Lo}\p{M}] */
#define ngx_http_llm_bpe_upper(k)                                             \
    ((k) == NGX_HTTP_LLM_BPE_LU || (k) >= NGX_HTTP_LLM_BPE_LO)
#define ngx_http_llm_bpe_lower(k)  ((k) >= NGX_HTTP_LLM_BPE_LL)

#define NGX_HTTP_LLM_BPE_NONE     0xffffffff    /* no rank */

/* the longest token accepted in a vocabulary */
#define NGX_HTTP_LLM_BPE_TOKEN_MAX  65535


typedef struct {
    uint32_t                    off;    /* in bpe->bytes */
    uint32_t                    rank;
    uint16_t                    len;    /* 0: an empty slot */
    uint16_t                    tag;    /* the hash's high bits */
} ngx_http_llm_bpe_slot_t;


struct ngx_http_llm_bpe_s {
    u_char                     *bytes;  /* every token, back to back */
    ngx_http_llm_bpe_slot_t    *slots;
    ngx_uint_t                  mask;
    ngx_uint_t                  ntokens;
    size_t                      max_len;  /* of a token */
    ngx_uint_t                  pattern;  /* NGX_HTTP_LLM_BPE_CL100K, ... */

    uint32_t                   *pairs;  /* ranks of two-byte tokens */

    /* one piece's merges: parts by their first byte, and a heap */
    uint32_t                   *next;
    uint32_t                   *prev;
    uint32_t                   *rank;   /* of the pair a part starts */
    uint64_t                   *heap;   /* rank << 32 | part */
};


#include "ngx_http_llm_bpe_ucd.h"


static ngx_int_t ngx_http_llm_bpe_parse(ngx_pool_t *pool,
    ngx_http_llm_bpe_t *bpe, u_char *p, u_char *last, ngx_str_t *error);
static ngx_int_t ngx_http_llm_bpe_insert(ngx_http_llm_bpe_t *bpe,
    u_char *token, size_t len, uint32_t rank);
static ngx_int_t ngx_http_llm_bpe_check(ngx_pool_t *pool,
    ngx_http_llm_bpe_t *bpe, ngx_str_t *error);
static int ngx_http_llm_bpe_cmp_rank(const void *a, const void *b);
static ngx_inline uint32_t ngx_http_llm_bpe_hash(u_char *p, size_t len);
static ngx_inline uint32_t ngx_http_llm_bpe_rank(ngx_http_llm_bpe_t *bpe,
    u_char *p, size_t len);
static ngx_inline ngx_uint_t ngx_http_llm_bpe_class(u_char *p, u_char *last,
    size_t *n);
static ngx_uint_t ngx_http_llm_bpe_class_search(uint32_t c);
static ngx_uint_t ngx_http_llm_bpe_contraction(u_char *p, u_char *last);
static void ngx_http_llm_bpe_add_o200k(ngx_http_llm_bpe_t *bpe,
    ngx_http_llm_estimate_t *e, u_char *p, size_t len);
static u_char *ngx_http_llm_bpe_o200k_word(u_char *p, u_char *last,
    ngx_uint_t lower);
static ngx_inline ngx_uint_t ngx_http_llm_bpe_uclass(u_char *p,
    u_char *last, size_t *n);
static ngx_uint_t ngx_http_llm_bpe_piece(ngx_http_llm_bpe_t *bpe, u_char *p,
    size_t len);
static ngx_uint_t ngx_http_llm_bpe_merge(ngx_http_llm_bpe_t *bpe, u_char *p,
    size_t len);
static void ngx_http_llm_bpe_push(uint64_t *heap, ngx_uint_t *n, uint64_t v);
static uint64_t ngx_http_llm_bpe_pop(uint64_t *heap, ngx_uint_t *n);


/* classes of ASCII: \t \v \f ' ' space, \r \n, digits, upper, lower */
static u_char  ngx_http_llm_bpe_ascii[128] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 4, 3, 3, 4, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
    0, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 0, 0, 0, 0, 0
};


/* what cl100k sees of a class: a letter, a mark is "other" */
static u_char  ngx_http_llm_bpe_cl100k[8] = { 0, 1, 2, 3, 4, 1, 1, 0 };


/* the classes of the first 64K code points, filled when a file loads */
static u_char      ngx_http_llm_bpe_bmp[0x10000];
static ngx_uint_t  ngx_http_llm_bpe_bmp_ready;


/*
 * Reads and checks the vocabulary at "path" (blocking: configuration
 * time only).  Returns NULL with "error" set (in the pool) if the file
 * cannot be read or is not a vocabulary.
 */

ngx_http_llm_bpe_t *
ngx_http_llm_bpe_load(ngx_pool_t *pool, u_char *path, ngx_uint_t pattern,
    ngx_str_t *error)
{
    u_char              *data;
    size_t               size, n;
    ssize_t              got;
    uint32_t             c;
    ngx_fd_t             fd;
    ngx_err_t            err;
    ngx_int_t            rc;
    ngx_uint_t           lines, slots;
    const char          *what;
    ngx_file_info_t      fi;
    ngx_http_llm_bpe_t  *bpe;

    error->len = 0;

    fd = ngx_open_file(path, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        err = ngx_errno;
        what = ngx_open_file_n;
        goto failed;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        err = ngx_errno;
        what = ngx_fd_info_n;
        (void) ngx_close_file(fd);
        goto failed;
    }

    size = (size_t) ngx_file_size(&fi);

    /* read whole, with a line break at the end; freed when parsed */

    data = ngx_palloc(pool, size + 1);
    if (data == NULL) {
        (void) ngx_close_file(fd);
        return NULL;
    }

    for (n = 0; n < size; n += got) {
        got = ngx_read_fd(fd, data + n, size - n);

        if (got <= 0) {
            err = (got == 0) ? NGX_EINVAL : ngx_errno;
            what = ngx_read_fd_n;
            (void) ngx_close_file(fd);
            ngx_pfree(pool, data);
            goto failed;
        }
    }

    (void) ngx_close_file(fd);

    data[size] = '\n';

    lines = 0;

    for (n = 0; n <= size; n++) {
        lines += (data[n] == '\n');
    }

    for (slots = 1024; slots < 2 * lines; slots <<= 1) { /* void */ }

    bpe = ngx_pcalloc(pool, sizeof(ngx_http_llm_bpe_t));
    if (bpe == NULL) {
        ngx_pfree(pool, data);
        return NULL;
    }

    bpe->mask = slots - 1;
    bpe->pattern = pattern;
    bpe->slots = ngx_pcalloc(pool, slots * sizeof(ngx_http_llm_bpe_slot_t));

    /* a token is no longer than its base64 */
    bpe->bytes = ngx_pnalloc(pool, size / 4 * 3 + 3);

    bpe->next = ngx_palloc(pool, (NGX_HTTP_LLM_BPE_PIECE_MAX + 1)
                                 * 3 * sizeof(uint32_t));
    bpe->heap = ngx_palloc(pool, (3 * NGX_HTTP_LLM_BPE_PIECE_MAX + 1)
                                 * sizeof(uint64_t));
    bpe->pairs = ngx_palloc(pool, 65536 * sizeof(uint32_t));

    if (bpe->slots == NULL || bpe->bytes == NULL || bpe->next == NULL
        || bpe->heap == NULL || bpe->pairs == NULL)
    {
        ngx_pfree(pool, data);
        return NULL;
    }

    bpe->prev = bpe->next + NGX_HTTP_LLM_BPE_PIECE_MAX + 1;
    bpe->rank = bpe->prev + NGX_HTTP_LLM_BPE_PIECE_MAX + 1;

    ngx_memset(bpe->pairs, 0xff, 65536 * sizeof(uint32_t));

    rc = ngx_http_llm_bpe_parse(pool, bpe, data, data + size + 1, error);

    ngx_pfree(pool, data);

    if (rc != NGX_OK || ngx_http_llm_bpe_check(pool, bpe, error) != NGX_OK) {
        return NULL;
    }

    if (!ngx_http_llm_bpe_bmp_ready) {
        for (c = 0; c < 0x10000; c++) {
            ngx_http_llm_bpe_bmp[c] =
                                (u_char) ngx_http_llm_bpe_class_search(c);
        }

        ngx_http_llm_bpe_bmp_ready = 1;
    }

    return bpe;

failed:

    error->data = ngx_pnalloc(pool, NGX_MAX_ERROR_STR);
    if (error->data == NULL) {
        return NULL;
    }

    error->len = ngx_snprintf(error->data, NGX_MAX_ERROR_STR,
                              "%s failed (%d: %s)", what, err, strerror(err))
                 - error->data;
    return NULL;
}


/* every line "BASE64 RANK"; empty lines are skipped, as tiktoken does */

static ngx_int_t
ngx_http_llm_bpe_parse(ngx_pool_t *pool, ngx_http_llm_bpe_t *bpe, u_char *p,
    u_char *last, ngx_str_t *error)
{
    u_char      *eol, *sp, *s, *end;
    size_t       off;
    ngx_int_t    rank, rc;
    ngx_str_t    b64, token;
    ngx_uint_t   line;
    const char  *msg;

    off = 0;
    line = 0;

    for ( /* void */ ; p < last; p = eol + 1) {
        line++;

        eol = ngx_strlchr(p, last, '\n');
        end = (eol > p && eol[-1] == '\r') ? eol - 1 : eol;

        if (end == p) {
            continue;
        }

        sp = ngx_strlchr(p, end, ' ');

        if (sp == NULL || sp == p || sp + 1 == end) {
            msg = "not \"BASE64TOKEN RANK\"";
            goto invalid;
        }

        for (s = sp + 1; s < end; s++) {
            if (*s < '0' || *s > '9') {
                break;
            }
        }

        rank = (s == end && end - sp - 1 <= 10)
               ? ngx_atoi(sp + 1, end - sp - 1) : NGX_ERROR;

        if (rank == NGX_ERROR || rank >= NGX_HTTP_LLM_BPE_NONE) {
            msg = "rank is not a number below 4294967295";
            goto invalid;
        }

        b64.data = p;
        b64.len = sp - p;

        if (b64.len % 4 != 0 || b64.len / 4 * 3 > NGX_HTTP_LLM_BPE_TOKEN_MAX)
        {
            msg = "token is not base64 of 1 to 65535 bytes";
            goto invalid;
        }

        token.data = bpe->bytes + off;

        if (ngx_decode_base64(&token, &b64) != NGX_OK || token.len == 0) {
            msg = "token is not base64 of 1 to 65535 bytes";
            goto invalid;
        }

        if (off > NGX_HTTP_LLM_BPE_NONE - token.len) {
            msg = "too many tokens";
            goto invalid;
        }

        rc = ngx_http_llm_bpe_insert(bpe, token.data, token.len,
                                     (uint32_t) rank);
        if (rc == NGX_DECLINED) {
            msg = "the token appears twice";
            goto invalid;
        }

        off += token.len;
    }

    return NGX_OK;

invalid:

    error->data = ngx_pnalloc(pool, NGX_MAX_ERROR_STR);
    if (error->data == NULL) {
        return NGX_ERROR;
    }

    error->len = ngx_snprintf(error->data, NGX_MAX_ERROR_STR, "line %ui: %s",
                              line, msg)
                 - error->data;

    return NGX_ERROR;
}


/* NGX_DECLINED: the token is there already */

static ngx_int_t
ngx_http_llm_bpe_insert(ngx_http_llm_bpe_t *bpe, u_char *token, size_t len,
    uint32_t rank)
{
    uint32_t                  h;
    ngx_uint_t                i;
    ngx_http_llm_bpe_slot_t  *s;

    h = ngx_http_llm_bpe_hash(token, len);

    for (i = h & bpe->mask; /* void */ ; i = (i + 1) & bpe->mask) {
        s = &bpe->slots[i];

        if (s->len == 0) {
            break;
        }

        if (s->len == len && s->tag == (h >> 16)
            && ngx_memcmp(bpe->bytes + s->off, token, len) == 0)
        {
            return NGX_DECLINED;
        }
    }

    s->off = (uint32_t) (token - bpe->bytes);
    s->rank = rank;
    s->len = (uint16_t) len;
    s->tag = (uint16_t) (h >> 16);

    bpe->ntokens++;

    if (len > bpe->max_len) {
        bpe->max_len = len;
    }

    if (len == 2) {
        bpe->pairs[token[0] << 8 | token[1]] = rank;
    }

    return NGX_OK;
}


/*
 * What tiktoken needs of a vocabulary: a token for every byte (any text
 * can be cut into tokens), and no rank given twice.
 */

static ngx_int_t
ngx_http_llm_bpe_check(ngx_pool_t *pool, ngx_http_llm_bpe_t *bpe,
    ngx_str_t *error)
{
    u_char       byte;
    uint32_t    *ranks;
    ngx_uint_t   i, n;

    for (i = 0; i < 256; i++) {
        byte = (u_char) i;

        if (ngx_http_llm_bpe_rank(bpe, &byte, 1) == NGX_HTTP_LLM_BPE_NONE) {
            error->data = ngx_pnalloc(pool, 64);
            if (error->data == NULL) {
                return NGX_ERROR;
            }

            error->len = ngx_sprintf(error->data,
                                     "no token for the byte 0x%02xi", i)
                         - error->data;
            return NGX_ERROR;
        }
    }

    ranks = ngx_palloc(pool, bpe->ntokens * sizeof(uint32_t));
    if (ranks == NULL) {
        return NGX_ERROR;
    }

    n = 0;

    for (i = 0; i <= bpe->mask; i++) {
        if (bpe->slots[i].len) {
            ranks[n++] = bpe->slots[i].rank;
        }
    }

    ngx_qsort(ranks, n, sizeof(uint32_t), ngx_http_llm_bpe_cmp_rank);

    for (i = 1; i < n; i++) {
        if (ranks[i] == ranks[i - 1]) {
            error->data = ngx_pnalloc(pool, 64);
            if (error->data == NULL) {
                ngx_pfree(pool, ranks);
                return NGX_ERROR;
            }

            error->len = ngx_sprintf(error->data,
                                     "the rank %uD is given twice", ranks[i])
                         - error->data;
            ngx_pfree(pool, ranks);
            return NGX_ERROR;
        }
    }

    ngx_pfree(pool, ranks);

    return NGX_OK;
}


static int
ngx_http_llm_bpe_cmp_rank(const void *a, const void *b)
{
    uint32_t  x, y;

    x = *(uint32_t *) a;
    y = *(uint32_t *) b;

    return (x > y) - (x < y);
}


ngx_uint_t
ngx_http_llm_bpe_tokens(ngx_http_llm_bpe_t *bpe)
{
    return bpe->ntokens;
}


/* the pre-tokenizer of a loaded vocabulary, for the tests */

void
ngx_http_llm_bpe_pattern(ngx_http_llm_bpe_t *bpe, ngx_uint_t pattern)
{
    bpe->pattern = pattern;
}


/* eight bytes at a time: a multiply and a fold each */

static ngx_inline uint32_t
ngx_http_llm_bpe_hash(u_char *p, size_t len)
{
    uint64_t  h, w;

    h = (uint64_t) len * 0x9e3779b97f4a7c15ULL;

    for ( /* void */ ; len >= 8; p += 8, len -= 8) {
        ngx_memcpy(&w, p, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 32;
    }

    w = 0;

    while (len--) {
        w = (w << 8) | p[len];
    }

    h = (h ^ w) * 0x9e3779b97f4a7c15ULL;

    return (uint32_t) (h >> 32) ^ (uint32_t) (h >> 13);
}


static ngx_inline uint32_t
ngx_http_llm_bpe_rank(ngx_http_llm_bpe_t *bpe, u_char *p, size_t len)
{
    uint32_t                  h;
    ngx_uint_t                i;
    ngx_http_llm_bpe_slot_t  *s;

    if (len > bpe->max_len) {
        return NGX_HTTP_LLM_BPE_NONE;
    }

    h = ngx_http_llm_bpe_hash(p, len);

    for (i = h & bpe->mask; /* void */ ; i = (i + 1) & bpe->mask) {
        s = &bpe->slots[i];

        if (s->len == 0) {
            return NGX_HTTP_LLM_BPE_NONE;
        }

        if (s->len == len && s->tag == (h >> 16)
            && ngx_memcmp(bpe->bytes + s->off, p, len) == 0)
        {
            return s->rank;
        }
    }
}


/*
 * The class of the character at p as cl100k sees it (uclass(): as
 * o200k does) and its length in *n; a byte that is not well-formed
 * UTF-8 is a character of its own, of class "other".
 */

static ngx_inline ngx_uint_t
ngx_http_llm_bpe_class(u_char *p, u_char *last, size_t *n)
{
    return ngx_http_llm_bpe_cl100k[ngx_http_llm_bpe_uclass(p, last, n)];
}


static ngx_inline ngx_uint_t
ngx_http_llm_bpe_uclass(u_char *p, u_char *last, size_t *n)
{
    uint32_t    c, min;
    ngx_uint_t  i, len;

    c = *p;

    if (c < 0x80) {
        *n = 1;
        return ngx_http_llm_bpe_ascii[c];
    }

    *n = 1;

    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        c &= 0x1f;
        min = 0x80;

    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        c &= 0x0f;
        min = 0x800;

    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        c &= 0x07;
        min = 0x10000;

    } else {
        return NGX_HTTP_LLM_BPE_O;
    }

    if ((size_t) (last - p) < len) {
        return NGX_HTTP_LLM_BPE_O;
    }

    for (i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return NGX_HTTP_LLM_BPE_O;
        }

        c = (c << 6) | (p[i] & 0x3f);
    }

    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
        return NGX_HTTP_LLM_BPE_O;
    }

    *n = len;

    if (c < 0x10000) {
        return ngx_http_llm_bpe_bmp[c];
    }

    return ngx_http_llm_bpe_class_search(c);
}


static ngx_uint_t
ngx_http_llm_bpe_class_search(uint32_t c)
{
    if (c < 0x80) {
        return ngx_http_llm_bpe_ascii[c];
    }

    return ngx_http_llm_range_find(ngx_http_llm_bpe_ucd,
                                   sizeof(ngx_http_llm_bpe_ucd)
                                   / sizeof(ngx_http_llm_range_t),
                                   c, NGX_HTTP_LLM_BPE_O);
}


/* after an apostrophe: the length of s, t, re, ve, m, ll or d, or 0 */

static ngx_uint_t
ngx_http_llm_bpe_contraction(u_char *p, u_char *last)
{
    u_char  c, d;

    if (p == last) {
        return 0;
    }

    c = ngx_tolower(*p);

    if (c == 's' || c == 't' || c == 'm' || c == 'd') {
        return 1;
    }

    if (last - p < 2) {
        return 0;
    }

    d = ngx_tolower(p[1]);

    if ((c == 'r' && d == 'e') || (c == 'v' && d == 'e')
        || (c == 'l' && d == 'l'))
    {
        return 2;
    }

    return 0;
}


/*
 * Counts the tokens of a text into the estimate: exact tokens into
 * e->tokens, code points into e->chars.
 */

void
ngx_http_llm_bpe_add(ngx_http_llm_bpe_t *bpe, ngx_http_llm_estimate_t *e,
    u_char *p, size_t len)
{
    u_char      *last, *q, *start, *nl;
    size_t       n, m;
    ngx_uint_t   cls, next, chars, tokens, k, runs;

    if (bpe->pattern == NGX_HTTP_LLM_BPE_O200K) {
        ngx_http_llm_bpe_add_o200k(bpe, e, p, len);
        return;
    }

    last = p + len;
    chars = 0;
    tokens = 0;

    while (p < last) {
        start = p;
        cls = ngx_http_llm_bpe_class(p, last, &n);
        q = p + n;
        chars++;

        /* 's 't 're 've 'm 'll 'd */

        if (*p == '\'' && (k = ngx_http_llm_bpe_contraction(q, last))) {
            q += k;
            chars += k;
            goto piece;
        }

        next = (q < last) ? ngx_http_llm_bpe_class(q, last, &m)
                          : NGX_HTTP_LLM_BPE_NL + 1;

        /* [^\r\n\p{L}\p{N}]?\p{L}+ */

        if (cls == NGX_HTTP_LLM_BPE_L
            || ((cls == NGX_HTTP_LLM_BPE_O || cls == NGX_HTTP_LLM_BPE_S)
                && next == NGX_HTTP_LLM_BPE_L))
        {
            while (q < last
                   && ngx_http_llm_bpe_class(q, last, &m)
                      == NGX_HTTP_LLM_BPE_L)
            {
                q += m;
                chars++;
            }

            goto piece;
        }

        /* \p{N}{1,3} */

        if (cls == NGX_HTTP_LLM_BPE_N) {
            for (k = 1; k < 3 && q < last; k++) {
                if (ngx_http_llm_bpe_class(q, last, &m) != NGX_HTTP_LLM_BPE_N)
                {
                    break;
                }

                q += m;
                chars++;
            }

            goto piece;
        }

        /* " ?[^\s\p{L}\p{N}]+[\r\n]*" */

        if (cls == NGX_HTTP_LLM_BPE_O
            || (*p == ' ' && next == NGX_HTTP_LLM_BPE_O))
        {
            while (q < last
                   && ngx_http_llm_bpe_class(q, last, &m)
                      == NGX_HTTP_LLM_BPE_O)
            {
                q += m;
                chars++;
            }

            while (q < last && (*q == '\r' || *q == '\n')) {
                q++;
                chars++;
            }

            goto piece;
        }

        /*
         * whitespace: \s*[\r\n]+ up to its last line break, else
         * \s+(?!\S) all but the last character before a non-space,
         * else \s+ the one character
         */

        nl = NULL;
        runs = 1;

        if (cls == NGX_HTTP_LLM_BPE_NL) {
            nl = q;
        }

        while (q < last) {
            k = ngx_http_llm_bpe_class(q, last, &m);

            if (k != NGX_HTTP_LLM_BPE_S && k != NGX_HTTP_LLM_BPE_NL) {
                break;
            }

            q += m;
            runs++;

            if (k == NGX_HTTP_LLM_BPE_NL) {
                nl = q;
                chars += runs - 1;
                runs = 1;
            }
        }

        if (nl) {
            q = nl;

        } else if (q < last && runs > 1) {

            /* give the last character back */

            do {
                q--;
            } while ((*q & 0xc0) == 0x80);

            chars += runs - 2;

        } else {
            chars += runs - 1;
        }

    piece:

        tokens += ngx_http_llm_bpe_piece(bpe, start, q - start);
        p = q;
    }

    e->tokens += tokens;
    e->chars += chars;
}


/*
 * o200k_base's pre-tokenizer, where a word is an optional mark (not a
 * letter, number or line break), then a run of upper or other letters
 * and marks with a run of lower or other letters and marks after it,
 * and an optional contraction; numbers and whitespace as in cl100k, and
 * punctuation takes "/" after it as well as line breaks:
 *
 *   [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*
 *       [\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
 *   |[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+
 *       [\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
 *   |\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *
 * Code points are counted per piece.
 */

static void
ngx_http_llm_bpe_add_o200k(ngx_http_llm_bpe_t *bpe,
    ngx_http_llm_estimate_t *e, u_char *p, size_t len)
{
    u_char      *last, *q, *start, *w, *nl;
    size_t       n, m;
    ngx_uint_t   cls, next, tokens, k, runs;

    last = p + len;
    tokens = 0;

    while (p < last) {
        start = p;
        cls = ngx_http_llm_bpe_uclass(p, last, &n);
        q = p + n;

        /* words, with or without a mark before them */

        if (cls != NGX_HTTP_LLM_BPE_N && cls != NGX_HTTP_LLM_BPE_NL) {

            if (cls == NGX_HTTP_LLM_BPE_LU || cls == NGX_HTTP_LLM_BPE_LL
                || cls == NGX_HTTP_LLM_BPE_LO)
            {
                w = ngx_http_llm_bpe_o200k_word(p, last, 1);

                if (w == NULL) {
                    w = ngx_http_llm_bpe_o200k_word(p, last, 0);
                }

            } else {
                w = ngx_http_llm_bpe_o200k_word(q, last, 1);

                if (w == NULL && cls == NGX_HTTP_LLM_BPE_M) {
                    w = ngx_http_llm_bpe_o200k_word(p, last, 1);
                }

                if (w == NULL) {
                    w = ngx_http_llm_bpe_o200k_word(q, last, 0);
                }
            }

            if (w) {
                q = w;

                if (q < last && *q == '\''
                    && (k = ngx_http_llm_bpe_contraction(q + 1, last)))
                {
                    q += 1 + k;
                }

                goto piece;
            }
        }

        /* \p{N}{1,3} */

        if (cls == NGX_HTTP_LLM_BPE_N) {
            for (k = 1; k < 3 && q < last; k++) {
                if (ngx_http_llm_bpe_uclass(q, last, &m) != NGX_HTTP_LLM_BPE_N)
                {
                    break;
                }

                q += m;
            }

            goto piece;
        }

        /* " ?[^\s\p{L}\p{N}]+[\r\n/]*" */

        next = (q < last) ? ngx_http_llm_bpe_uclass(q, last, &m)
                          : NGX_HTTP_LLM_BPE_NL;

        if (cls == NGX_HTTP_LLM_BPE_O || cls == NGX_HTTP_LLM_BPE_M
            || (*p == ' '
                && (next == NGX_HTTP_LLM_BPE_O || next == NGX_HTTP_LLM_BPE_M)))
        {
            while (q < last) {
                k = ngx_http_llm_bpe_uclass(q, last, &m);

                if (k != NGX_HTTP_LLM_BPE_O && k != NGX_HTTP_LLM_BPE_M) {
                    break;
                }

                q += m;
            }

            while (q < last && (*q == '\r' || *q == '\n' || *q == '/')) {
                q++;
            }

            goto piece;
        }

        /* whitespace, as in cl100k */

        nl = (cls == NGX_HTTP_LLM_BPE_NL) ? q : NULL;
        runs = 1;

        while (q < last) {
            k = ngx_http_llm_bpe_uclass(q, last, &m);

            if (k != NGX_HTTP_LLM_BPE_S && k != NGX_HTTP_LLM_BPE_NL) {
                break;
            }

            q += m;
            runs++;

            if (k == NGX_HTTP_LLM_BPE_NL) {
                nl = q;
            }
        }

        if (nl) {
            q = nl;

        } else if (q < last && runs > 1) {
            do {
                q--;
            } while ((*q & 0xc0) == 0x80);
        }

    piece:

        tokens += ngx_http_llm_bpe_piece(bpe, start, q - start);

        for (p = start; p < q; p += n) {
            (void) ngx_http_llm_bpe_uclass(p, q, &n);
            e->chars++;
        }
    }

    e->tokens += tokens;
}


/*
 * An o200k word from p, without the mark before it: "lower" the first
 * alternative ([upper]*[lower]+), else the second ([upper]+[lower]*),
 * where upper is Lu Lt Lm Lo M and lower Ll Lm Lo M.  Returns its end,
 * or NULL if that alternative does not match at p.
 */

static u_char *
ngx_http_llm_bpe_o200k_word(u_char *p, u_char *last, ngx_uint_t lower)
{
    u_char      *q, *both;
    size_t       n;
    ngx_uint_t   k;

    q = p;
    both = NULL;

    /* [upper]*: greedy; "both" is after the last letter in both sets */

    while (q < last) {
        k = ngx_http_llm_bpe_uclass(q, last, &n);

        if (!ngx_http_llm_bpe_upper(k)) {
            break;
        }

        q += n;

        if (k != NGX_HTTP_LLM_BPE_LU) {
            both = q;
        }
    }

    if (q < last
        && ngx_http_llm_bpe_uclass(q, last, &n) == NGX_HTTP_LLM_BPE_LL)
    {
        /* then [lower]+, or [lower]* */

        while (q < last) {
            k = ngx_http_llm_bpe_uclass(q, last, &n);

            if (!ngx_http_llm_bpe_lower(k)) {
                break;
            }

            q += n;
        }

        return q;
    }

    if (lower) {

        /*
         * [upper]* gives back letters until [lower]+ can start: at the
         * last letter of both sets, which is all [lower]+ takes
         */

        return both;
    }

    return (q > p) ? q : NULL;
}


/* a piece, in chunks if it is long */

static ngx_uint_t
ngx_http_llm_bpe_piece(ngx_http_llm_bpe_t *bpe, u_char *p, size_t len)
{
    size_t      n;
    ngx_uint_t  tokens;

    tokens = 0;

    while (len > NGX_HTTP_LLM_BPE_PIECE_MAX) {
        n = NGX_HTTP_LLM_BPE_PIECE_MAX;

        /* cut before a character, unless it is all continuation bytes */

        while (n > NGX_HTTP_LLM_BPE_PIECE_MAX - 4 && (p[n] & 0xc0) == 0x80) {
            n--;
        }

        tokens += ngx_http_llm_bpe_merge(bpe, p, n);
        p += n;
        len -= n;
    }

    return tokens + ngx_http_llm_bpe_merge(bpe, p, len);
}


/*
 * Byte pair merges of one piece, as tiktoken's byte_pair_encode(): the
 * pieces start as bytes; the adjacent pair whose concatenation has the
 * lowest rank (the leftmost of equal ones) is merged until no pair is a
 * token.  A heap of (rank, part) gives the lowest pair; entries made
 * stale by a merge are dropped as they come up (a part's pair only
 * grows, and no two tokens share a rank, so a stale entry's rank is not
 * the part's rank any more).
 */

static ngx_uint_t
ngx_http_llm_bpe_merge(ngx_http_llm_bpe_t *bpe, u_char *p, size_t len)
{
    uint32_t    *next, *prev, *rank, r, i, j, k;
    uint64_t     top;
    ngx_uint_t   n, count;

    if (len <= 1) {
        return len;
    }

    if (ngx_http_llm_bpe_rank(bpe, p, len) != NGX_HTTP_LLM_BPE_NONE) {
        return 1;
    }

    next = bpe->next;
    prev = bpe->prev;
    rank = bpe->rank;
    n = 0;

    for (i = 0; i < len; i++) {
        next[i] = i + 1;
        prev[i] = i - 1;

        r = (i + 1 < len) ? bpe->pairs[p[i] << 8 | p[i + 1]]
                          : NGX_HTTP_LLM_BPE_NONE;
        rank[i] = r;

        if (r != NGX_HTTP_LLM_BPE_NONE) {
            ngx_http_llm_bpe_push(bpe->heap, &n, (uint64_t) r << 32 | i);
        }
    }

    count = len;

    while (n) {
        top = ngx_http_llm_bpe_pop(bpe->heap, &n);
        i = (uint32_t) top;

        if (rank[i] != (uint32_t) (top >> 32)) {
            continue;
        }

        /* part i takes part j */

        j = next[i];
        k = next[j];

        next[i] = k;
        rank[j] = NGX_HTTP_LLM_BPE_NONE;
        count--;

        if (k < len) {
            prev[k] = i;
            r = ngx_http_llm_bpe_rank(bpe, p + i, next[k] - i);

        } else {
            r = NGX_HTTP_LLM_BPE_NONE;
        }

        rank[i] = r;

        if (r != NGX_HTTP_LLM_BPE_NONE) {
            ngx_http_llm_bpe_push(bpe->heap, &n, (uint64_t) r << 32 | i);
        }

        if (i > 0) {
            j = prev[i];
            r = ngx_http_llm_bpe_rank(bpe, p + j, k - j);
            rank[j] = r;

            if (r != NGX_HTTP_LLM_BPE_NONE) {
                ngx_http_llm_bpe_push(bpe->heap, &n, (uint64_t) r << 32 | j);
            }
        }
    }

    return count;
}


static void
ngx_http_llm_bpe_push(uint64_t *heap, ngx_uint_t *n, uint64_t v)
{
    ngx_uint_t  i, parent;

    for (i = (*n)++; i > 0; i = parent) {
        parent = (i - 1) / 2;

        if (heap[parent] <= v) {
            break;
        }

        heap[i] = heap[parent];
    }

    heap[i] = v;
}


static uint64_t
ngx_http_llm_bpe_pop(uint64_t *heap, ngx_uint_t *n)
{
    uint64_t    top, v;
    ngx_uint_t  i, child, size;

    top = heap[0];
    size = --(*n);
    v = heap[size];

    /* a sentinel past the end spares a test, and the choice a branch */

    heap[size] = (uint64_t) -1;

    for (i = 0; (child = 2 * i + 1) < size; i = child) {
        child += (heap[child + 1] < heap[child]);

        if (v <= heap[child]) {
            break;
        }

        heap[i] = heap[child];
    }

    heap[i] = v;

    return top;
}


/* the tokens of a text, for the tests and llm_unit */

ngx_uint_t
ngx_http_llm_bpe_count(ngx_http_llm_bpe_t *bpe, u_char *p, size_t len)
{
    ngx_http_llm_estimate_t  e;

    ngx_memzero(&e, sizeof(ngx_http_llm_estimate_t));

    ngx_http_llm_bpe_add(bpe, &e, p, len);

    return e.tokens;
}
