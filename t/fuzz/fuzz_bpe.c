
/*
 * ngx_llm_gateway: libFuzzer target for the exact counter
 * (src/ngx_http_llm_bpe.c).
 *
 * Input: a selector byte, then the data.  Selector 'V': the data is a
 * vocabulary file, loaded (it must load or fail cleanly); a loaded one
 * counts a fixed text.  Any other selector: the data is a text, counted
 * with a small vocabulary (every byte, pairs, runs of one byte up to a
 * 300-byte token, some UTF-8) by cl100k's pre-tokenizer (selector
 * even) or o200k's (odd).  Checked: 0 < tokens <= bytes, 0 < code
 * points <= bytes, for any non-empty text.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_llm_bpe.h"


volatile ngx_cycle_t  *ngx_cycle;
static ngx_log_t       fuzz_log;
static ngx_pool_t     *pool;
static ngx_http_llm_bpe_t  *bpe;
static char            vocab_path[64];


void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
}


static const char  *extra[] = {
    "aa", "aaaa", "aaaaaaaa", " a", "ab", "abc", "bc", "  ", "    ",
    "\n\n", " \n", "12", "123", "'s", "\xc3\xa9", "\xe4\xb8\xad",
    "\xe4\xb8\xad\xe6\x96\x87", "==", "====", " the", "the", "th",
    "he", "\xf0\x9f", "\x9f\x98", "\xf0\x9f\x98\x80", NULL
};


static void
write_vocab(const char *path)
{
    FILE        *f;
    u_char       buf[512], b64[1024];
    ngx_str_t    src, dst;
    ngx_uint_t   i, rank;

    f = fopen(path, "w");
    rank = 0;

    for (i = 0; i < 256; i++) {
        buf[0] = (u_char) i;
        src.data = buf;
        src.len = 1;
        dst.data = b64;
        ngx_encode_base64(&dst, &src);
        fprintf(f, "%.*s %lu\n", (int) dst.len, dst.data, rank++);
    }

    for (i = 0; extra[i]; i++) {
        src.data = (u_char *) extra[i];
        src.len = strlen(extra[i]);
        dst.data = b64;
        ngx_encode_base64(&dst, &src);
        fprintf(f, "%.*s %lu\n", (int) dst.len, dst.data, rank++);
    }

    /* runs of 'x' and of spaces: 2..300 */

    for (i = 2; i <= 300; i++) {
        ngx_memset(buf, 'x', i);
        src.data = buf;
        src.len = i;
        dst.data = b64;
        ngx_encode_base64(&dst, &src);
        fprintf(f, "%.*s %lu\n", (int) dst.len, dst.data, rank++);

        if (i > 4) {
            ngx_memset(buf, ' ', i);
            ngx_encode_base64(&dst, &src);
            fprintf(f, "%.*s %lu\n", (int) dst.len, dst.data, rank++);
        }
    }

    fclose(f);
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_str_t  error;

    ngx_pagesize = getpagesize();
    ngx_cacheline_size = 64;

    fuzz_log.log_level = NGX_LOG_EMERG;
    pool = ngx_create_pool(16384, &fuzz_log);

    snprintf(vocab_path, sizeof(vocab_path), "/tmp/fuzz_bpe.%d.vocab",
             (int) getpid());
    write_vocab(vocab_path);

    bpe = ngx_http_llm_bpe_load(pool, (u_char *) vocab_path,
                                NGX_HTTP_LLM_BPE_CL100K, &error);
    if (bpe == NULL) {
        fprintf(stderr, "fuzz_bpe: %.*s\n", (int) error.len, error.data);
        abort();
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                   *text;
    ngx_str_t                 error;
    ngx_pool_t               *p;
    ngx_http_llm_bpe_t       *v;
    ngx_http_llm_estimate_t   e;
    char                      path[64];
    FILE                     *f;

    if (size == 0) {
        return 0;
    }

    if (data[0] == 'V') {
        snprintf(path, sizeof(path), "/tmp/fuzz_bpe.%d.in", (int) getpid());
        f = fopen(path, "w");
        fwrite(data + 1, 1, size - 1, f);
        fclose(f);

        p = ngx_create_pool(4096, &fuzz_log);
        v = ngx_http_llm_bpe_load(p, (u_char *) path,
                                  NGX_HTTP_LLM_BPE_CL100K, &error);
        if (v) {
            (void) ngx_http_llm_bpe_count(v, (u_char *) "hello world", 11);
            ngx_http_llm_bpe_pattern(v, NGX_HTTP_LLM_BPE_O200K);
            (void) ngx_http_llm_bpe_count(v, (u_char *) "Hello 'S", 8);
        }

        ngx_destroy_pool(p);
        return 0;
    }

    /* an exact-size copy: ASan sees any read past the end */

    text = malloc(size - 1 ? size - 1 : 1);
    memcpy(text, data + 1, size - 1);

    ngx_http_llm_bpe_pattern(bpe, (data[0] & 1) ? NGX_HTTP_LLM_BPE_O200K
                                                : NGX_HTTP_LLM_BPE_CL100K);

    ngx_memzero(&e, sizeof(ngx_http_llm_estimate_t));
    ngx_http_llm_bpe_add(bpe, &e, text, size - 1);

    if (size > 1
        && (e.tokens == 0 || e.tokens > size - 1
            || e.chars == 0 || e.chars > size - 1))
    {
        fprintf(stderr, "fuzz_bpe: %lu bytes: %lu tokens, %lu chars\n",
                (unsigned long) size - 1, (unsigned long) e.tokens,
                (unsigned long) e.chars);
        abort();
    }

    free(text);

    return 0;
}
