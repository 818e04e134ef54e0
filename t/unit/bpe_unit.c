
/*
 * ngx_llm_gateway: unit tests of the exact counter (src/ngx_http_llm_bpe.c),
 * linked with a few nginx core objects, without a running nginx.
 *
 *   bpe_unit DIR                  run the tests (vocabularies written in
 *                                 DIR), print TAP
 *   bpe_unit count VOCAB          count NUL-separated texts from stdin:
 *                                 "TOKENS CHARS" per text
 *   bpe_unit bench VOCAB FILE...  time the counter, ns per KB
 *
 * VOCAB:o200k counts with o200k_base's pre-tokenizer.
 *
 * Built by t/unit/build.sh; run by t/075-bpe.t, which also checks the
 * counts against independent references (a Perl BPE, js-tiktoken).
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_llm_bpe.h"
#include "ngx_http_llm_tokens.h"

#include <time.h>


volatile ngx_cycle_t  *ngx_cycle;


void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
}


static ngx_uint_t   tests;
static ngx_uint_t   failed;
static ngx_pool_t  *pool;
static ngx_log_t    unit_log;


static void
ok(int cond, const char *fmt, ...)
{
    va_list  args;

    tests++;

    if (!cond) {
        failed++;
    }

    printf("%s %lu - ", cond ? "ok" : "not ok", (unsigned long) tests);

    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);

    printf("\n");
    fflush(stdout);
}


static uint64_t
now_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}


static u_char *
read_all(FILE *f, size_t *len)
{
    u_char  *buf;
    size_t   size, n;

    size = 65536;
    n = 0;
    buf = malloc(size);

    while (buf) {
        n += fread(buf + n, 1, size - n, f);

        if (n < size) {
            break;
        }

        size *= 2;
        buf = realloc(buf, size);
    }

    if (buf == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }

    *len = n;

    return buf;
}


static void
write_file(const char *path, const char *data)
{
    FILE  *f;

    f = fopen(path, "w");

    if (f == NULL || fputs(data, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
}


/* every byte, rank = its value, then "extra" (lines "BASE64 RANK") */

static char *
byte_vocab(const char *extra)
{
    char       *s, *p;
    ngx_str_t   src, dst;
    ngx_uint_t  i;
    u_char      byte, b64[8];

    s = malloc(256 * 12 + strlen(extra) + 1);
    p = s;

    for (i = 0; i < 256; i++) {
        byte = (u_char) i;
        src.data = &byte;
        src.len = 1;
        dst.data = b64;
        ngx_encode_base64(&dst, &src);
        p += sprintf(p, "%.*s %lu\n", (int) dst.len, dst.data,
                     (unsigned long) i);
    }

    strcpy(p, extra);

    return s;
}


static ngx_http_llm_bpe_t *
load(const char *dir, const char *name, const char *data, ngx_str_t *error)
{
    char  path[1024];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    write_file(path, data);

    return ngx_http_llm_bpe_load(pool, (u_char *) path,
                                 NGX_HTTP_LLM_BPE_CL100K, error);
}


static void
test_load_errors(const char *dir)
{
    char                *v;
    ngx_str_t            error;
    ngx_uint_t           i;
    ngx_http_llm_bpe_t  *bpe;

    static struct {
        const char  *name;
        const char  *extra;
        const char  *error;
    } bad[] = {
        { "no rank", "aGk=\n", "line 257: not \"BASE64TOKEN RANK\"" },
        { "no token", " 300\n", "line 257: not \"BASE64TOKEN RANK\"" },
        { "rank not a number", "aGk= 3x\n",
          "line 257: rank is not a number below 4294967295" },
        { "rank too large", "aGk= 4294967295\n",
          "line 257: rank is not a number below 4294967295" },
        { "negative rank", "aGk= -1\n",
          "line 257: rank is not a number below 4294967295" },
        { "bad base64", "a*k= 300\n",
          "line 257: token is not base64 of 1 to 65535 bytes" },
        { "base64 length", "aGk 300\n",
          "line 257: token is not base64 of 1 to 65535 bytes" },
        { "two spaces", "aGk=  300\n",
          "line 257: rank is not a number below 4294967295" },
        { "token twice", "aGk= 300\n\naGk= 301\n",
          "line 259: the token appears twice" },
        { "rank twice", "aGk= 300\naGo= 300\n",
          "the rank 300 is given twice" },
    };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = byte_vocab(bad[i].extra);
        bpe = load(dir, "bad.tiktoken", v, &error);
        free(v);

        ok(bpe == NULL && error.len == strlen(bad[i].error)
           && ngx_strncmp(error.data, bad[i].error, error.len) == 0,
           "load: %s: \"%.*s\"", bad[i].name, (int) error.len, error.data);
    }

    /* a byte without a token: drop the line of 0x41 ("QQ==") */

    v = byte_vocab("");
    memcpy(strstr(v, "QQ== 65\n"), "aGk= 65\n", 8);
    bpe = load(dir, "bad.tiktoken", v, &error);
    free(v);

    ok(bpe == NULL && error.len
       && ngx_strncmp(error.data, "no token for the byte 0x41", error.len)
          == 0,
       "load: a byte without a token: \"%.*s\"", (int) error.len, error.data);

    bpe = load(dir, "empty.tiktoken", "", &error);

    ok(bpe == NULL && error.len
       && ngx_strncmp(error.data, "no token for the byte 0x00", error.len)
          == 0,
       "load: an empty file: \"%.*s\"", (int) error.len, error.data);

    error.len = 0;
    bpe = ngx_http_llm_bpe_load(pool, (u_char *) "/nonexistent/vocab",
                                NGX_HTTP_LLM_BPE_CL100K, &error);

    ok(bpe == NULL && error.len > 14
       && ngx_strncmp(error.data, "open() failed (", 15) == 0,
       "load: no file: \"%.*s\"", (int) error.len, error.data);

    v = byte_vocab("aGk= 300\r\n\r\naGVsbG8= 301");
    bpe = load(dir, "crlf.tiktoken", v, &error);
    free(v);

    ok(bpe && ngx_http_llm_bpe_tokens(bpe) == 258,
       "load: CRLF lines, a blank line, no final line break");
}


static ngx_uint_t
count(ngx_http_llm_bpe_t *bpe, const char *s)
{
    return ngx_http_llm_bpe_count(bpe, (u_char *) s, strlen(s));
}


/*
 * Merges in a vocabulary of every byte plus "ab" 300, "bc" 301, "abc"
 * 302, "aa" 303, "aaaa" 304, " x" 305: the order of ranks decides.
 */

static void
test_merges(const char *dir)
{
    char                     *v, *s;
    size_t                    i;
    ngx_str_t                 error;
    ngx_http_llm_bpe_t       *bpe;
    ngx_http_llm_estimate_t   e;

    v = byte_vocab("YWI= 300\nYmM= 301\nYWJj 302\nYWE= 303\nYWFhYQ== 304\n"
                   "IHg= 305\n");
    bpe = load(dir, "merges.tiktoken", v, &error);
    free(v);

    if (bpe == NULL) {
        ok(0, "load merges.tiktoken: %.*s", (int) error.len, error.data);
        return;
    }

    ok(count(bpe, "") == 0, "merge: empty text");
    ok(count(bpe, "q") == 1, "merge: one byte");
    ok(count(bpe, "abc") == 1, "merge: a piece that is a token");
    ok(count(bpe, "abcd") == 2, "merge: ab+c -> abc, d");
    ok(count(bpe, "bcab") == 2, "merge: bc, ab");
    ok(count(bpe, "aaaaa") == 2, "merge: leftmost first: aaaa + a");
    ok(count(bpe, "aaaaaaa") == 3, "merge: aaaa + aa + a");
    ok(count(bpe, "qqqq") == 4, "merge: no pair is a token");
    ok(count(bpe, "ab ab") == 3, "pieces: ab, \" ab\" (a b merge: 2)");

    /* long pieces are counted in chunks: the work stays bounded */

    s = malloc(3 * NGX_HTTP_LLM_BPE_PIECE_MAX + 1);

    for (i = 0; i < 3 * NGX_HTTP_LLM_BPE_PIECE_MAX; i++) {
        s[i] = 'a';
    }

    s[i] = '\0';

    ok(count(bpe, s) == 3 * NGX_HTTP_LLM_BPE_PIECE_MAX / 4,
       "a piece of %d letters 'a' in chunks: %lu tokens",
       3 * NGX_HTTP_LLM_BPE_PIECE_MAX,
       (unsigned long) count(bpe, s));

    /* a long piece of 3-byte characters is cut between characters */

    for (i = 0; i + 3 <= 3 * NGX_HTTP_LLM_BPE_PIECE_MAX; i += 3) {
        memcpy(s + i, "\xe4\xb8\x80", 3);      /* U+4E00, a letter */
    }

    s[i] = '\0';

    ngx_memzero(&e, sizeof(ngx_http_llm_estimate_t));
    e.bpe = bpe;
    ngx_http_llm_estimate_add(&e, (u_char *) s, i);

    ok(e.tokens == i && e.chars == i / 3,
       "a long piece of CJK: %lu tokens, %lu chars",
       (unsigned long) e.tokens, (unsigned long) e.chars);

    free(s);

    /* bytes that are not UTF-8 are characters of their own */

    ngx_memzero(&e, sizeof(ngx_http_llm_estimate_t));
    e.bpe = bpe;
    ngx_http_llm_estimate_add(&e, (u_char *) "ab\xff\x80 x\xe4\xb8", 8);

    ok(e.tokens == 6 && e.chars == 8,
       "invalid UTF-8: %lu tokens, %lu chars",
       (unsigned long) e.tokens, (unsigned long) e.chars);

    ok(ngx_http_llm_estimate_tokens(&e) == 6,
       "an estimate with a vocabulary is the exact count");
}


/* the estimator and the counter agree on what a character is */

static void
test_chars(const char *dir, const char *samples)
{
    char                      path[1024];
    char                     *v;
    FILE                     *f;
    u_char                   *text;
    size_t                    len;
    ngx_str_t                 error;
    ngx_http_llm_bpe_t       *bpe;
    ngx_http_llm_estimate_t   a, b;

    static const char  *files[] = {
        "en_prose.txt", "zh.txt", "ja.txt", "ko.txt", "emoji.txt",
        "mixed.txt", "code_py.py", "hi.txt", "ar.txt"
    };

    ngx_uint_t  i;

    v = byte_vocab("");
    bpe = load(dir, "bytes.tiktoken", v, &error);
    free(v);

    for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", samples, files[i]);

        f = fopen(path, "r");
        if (f == NULL || bpe == NULL) {
            ok(0, "chars: %s", path);
            continue;
        }

        text = read_all(f, &len);
        fclose(f);

        ngx_http_llm_estimate_init(&a);
        ngx_http_llm_estimate_add(&a, text, len);

        ngx_http_llm_estimate_init(&b);
        b.bpe = bpe;
        ngx_http_llm_estimate_add(&b, text, len);

        /* with bytes alone, every byte is a token */

        ok(a.chars == b.chars && b.tokens == len,
           "chars of %s: estimator %lu, bpe %lu; tokens %lu of %lu bytes",
           files[i], (unsigned long) a.chars, (unsigned long) b.chars,
           (unsigned long) b.tokens, (unsigned long) len);

        free(text);
    }
}


/*
 * Random bytes (UTF-8 of every class, bytes that are not UTF-8, pieces
 * longer than a chunk) with both pre-tokenizers: with a vocabulary of
 * bytes alone every byte is a token, with merges no more; characters as
 * the estimator counts them.
 */

static void
test_random(const char *dir)
{
    char                     *v;
    u_char                   *s;
    size_t                    len, i, k;
    ngx_str_t                 error;
    ngx_uint_t                pattern, round, bad;
    ngx_http_llm_bpe_t       *bytes, *merges;
    ngx_http_llm_estimate_t   a, b, c;

    static const char  *parts[] = {
        "a", "Z", "q", " ", "  ", "\n", "\r\n", "\t", "1", "23", ".", "!",
        "'", "'s", "'LL", "/", "\xc3\xa9", "\xcc\x81", "\xe4\xb8\x80",
        "\xe3\x83\xbc", "\xf0\x9f\x98\x80", "\xe2\x80\xa8",
        "\xc2\x85", "\xc2\xa0", "\xe3\x80\x80", "\xff", "\x80", "\xe4\xb8",
        "\xed\xa0\x80", "\xc7\x85", "\xca\xb0", "\x00"
    };

    v = byte_vocab("");
    bytes = load(dir, "rbytes.tiktoken", v, &error);
    free(v);

    v = byte_vocab("YWI= 300\nYWE= 301\nIHo= 302\nMTI= 303\nJ3M= 304\n"
                   "w6k= 305\n5LiA 306\n5LiA5LiA 307\nICA= 308\n");
    merges = load(dir, "rmerges.tiktoken", v, &error);
    free(v);

    if (bytes == NULL || merges == NULL) {
        ok(0, "random: load");
        return;
    }

    s = malloc(3 * NGX_HTTP_LLM_BPE_PIECE_MAX + 64);
    srandom(2026);
    bad = 0;

    for (round = 0; round < 20000; round++) {
        len = 0;
        k = (round % 100 == 0) ? 3 * NGX_HTTP_LLM_BPE_PIECE_MAX : 40;

        while (len < k) {
            i = random() % (sizeof(parts) / sizeof(parts[0]));

            if (round % 100 == 0) {
                i = (round / 100) % (sizeof(parts) / sizeof(parts[0]));
            }

            ngx_memcpy(s + len, parts[i], strlen(parts[i]) + (i == 31));
            len += strlen(parts[i]) + (i == 31);
        }

        ngx_http_llm_estimate_init(&a);
        ngx_http_llm_estimate_add(&a, s, len);

        for (pattern = 0; pattern < 2; pattern++) {
            ngx_http_llm_bpe_pattern(bytes, pattern);
            ngx_http_llm_bpe_pattern(merges, pattern);

            ngx_http_llm_estimate_init(&b);
            b.bpe = bytes;
            ngx_http_llm_estimate_add(&b, s, len);

            ngx_http_llm_estimate_init(&c);
            c.bpe = merges;
            ngx_http_llm_estimate_add(&c, s, len);

            if (b.tokens != len || b.chars != a.chars || c.chars != a.chars
                || c.tokens > len || (len && c.tokens == 0))
            {
                if (bad++ < 5) {
                    printf("# round %lu pattern %lu: %lu bytes, tokens %lu"
                           " %lu, chars %lu %lu %lu\n",
                           (unsigned long) round, (unsigned long) pattern,
                           (unsigned long) len, (unsigned long) b.tokens,
                           (unsigned long) c.tokens, (unsigned long) a.chars,
                           (unsigned long) b.chars, (unsigned long) c.chars);
                }
            }
        }
    }

    ngx_http_llm_bpe_pattern(bytes, NGX_HTTP_LLM_BPE_CL100K);
    ngx_http_llm_bpe_pattern(merges, NGX_HTTP_LLM_BPE_CL100K);

    free(s);

    ok(bad == 0, "random: 20,000 texts, both patterns: every byte covered,"
       " no more tokens than bytes, characters as the estimator's (%lu bad)",
       (unsigned long) bad);
}


static int
count_stdin(const char *vocab, ngx_uint_t pattern)
{
    u_char                   *text, *p, *last, *end;
    size_t                    len;
    ngx_str_t                 error;
    ngx_http_llm_bpe_t       *bpe;
    ngx_http_llm_estimate_t   e;

    bpe = ngx_http_llm_bpe_load(pool, (u_char *) vocab, pattern, &error);
    if (bpe == NULL) {
        fprintf(stderr, "%s: %.*s\n", vocab, (int) error.len, error.data);
        return 1;
    }

    text = read_all(stdin, &len);
    last = text + len;

    for (p = text; p < last; p = end + 1) {
        end = memchr(p, '\0', last - p);
        if (end == NULL) {
            end = last;
        }

        ngx_memzero(&e, sizeof(ngx_http_llm_estimate_t));
        e.bpe = bpe;
        ngx_http_llm_estimate_add(&e, p, end - p);

        printf("%lu %lu\n", (unsigned long) e.tokens, (unsigned long) e.chars);
    }

    free(text);

    return 0;
}


static int
bench(const char *vocab, ngx_uint_t pattern, int n, char **files)
{
    int                  i, k, rounds;
    FILE                *f;
    u_char              *text;
    size_t               len, all;
    uint64_t             t0, ns, total;
    ngx_str_t            error;
    ngx_uint_t           tokens;
    ngx_http_llm_bpe_t  *bpe;

    t0 = now_ns();
    bpe = ngx_http_llm_bpe_load(pool, (u_char *) vocab, pattern, &error);
    if (bpe == NULL) {
        fprintf(stderr, "%s: %.*s\n", vocab, (int) error.len, error.data);
        return 1;
    }

    printf("load %s: %lu tokens in %.1f ms\n", vocab,
           (unsigned long) ngx_http_llm_bpe_tokens(bpe),
           (now_ns() - t0) / 1e6);

    total = 0;
    all = 0;

    for (i = 0; i < n; i++) {
        f = fopen(files[i], "r");
        if (f == NULL) {
            continue;
        }

        text = read_all(f, &len);
        fclose(f);

        rounds = 2000000 / (len + 1) + 1;
        tokens = 0;

        t0 = now_ns();

        for (k = 0; k < rounds; k++) {
            tokens = ngx_http_llm_bpe_count(bpe, text, len);
        }

        ns = (now_ns() - t0) / rounds;
        total += ns;
        all += len;

        printf("%-14s %6lu bytes %5lu tokens %8.0f ns per KB\n",
               strrchr(files[i], '/') ? strrchr(files[i], '/') + 1
                                      : files[i],
               (unsigned long) len, (unsigned long) tokens,
               ns * 1024.0 / len);

        free(text);
    }

    if (all) {
        printf("all            %6lu bytes %8.0f ns per KB\n",
               (unsigned long) all, total * 1024.0 / all);
    }

    return 0;
}


int
main(int argc, char **argv)
{
    char        *colon;
    const char  *dir, *samples;
    ngx_uint_t   pattern;

    ngx_pagesize = getpagesize();
    unit_log.log_level = NGX_LOG_EMERG;

    pool = ngx_create_pool(4096, &unit_log);
    if (pool == NULL) {
        return 2;
    }

    /* "VOCAB" or "VOCAB:o200k" */

    if (argc > 2
        && (strcmp(argv[1], "count") == 0 || strcmp(argv[1], "bench") == 0))
    {
        pattern = NGX_HTTP_LLM_BPE_CL100K;
        colon = strrchr(argv[2], ':');

        if (colon && strcmp(colon, ":o200k") == 0) {
            *colon = '\0';
            pattern = NGX_HTTP_LLM_BPE_O200K;
        }

        if (argv[1][0] == 'c') {
            return count_stdin(argv[2], pattern);
        }

        return bench(argv[2], pattern, argc - 3, argv + 3);
    }

    dir = (argc > 1) ? argv[1] : "build/unit";
    samples = (argc > 2) ? argv[2] : "t/unit/samples";

    test_load_errors(dir);
    test_merges(dir);
    test_chars(dir, samples);
    test_random(dir);

    printf("1..%lu\n", (unsigned long) tests);

    ngx_destroy_pool(pool);

    return failed ? 1 : 0;
}
