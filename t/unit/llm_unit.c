
/*
 * ngx_llm_gateway: unit tests of the request parser, the usage observer
 * and the token estimator (src/ngx_http_llm_json.c, _tokens.c), linked
 * with a few nginx core objects, without a running nginx.
 *
 *   llm_unit [SAMPLES_DIR]        run the tests, print TAP
 *   llm_unit bench                time the hot paths
 *   llm_unit estimate FILE...     print estimate and counters per file
 *   llm_unit chat-body            print the bench's chat body
 *
 * Built by t/unit/build.sh; run by t/070-tokens-unit.t.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_llm_json.h"
#include "ngx_http_llm_jtape.h"
#include "ngx_http_llm_tokens.h"
#include "ngx_http_llm_simd.h"

#include <time.h>
#include <jansson.h>        /* the bench compares with jansson alone */


#define API_OPENAI     NGX_HTTP_LLM_API_OPENAI
#define API_ANTHROPIC  NGX_HTTP_LLM_API_ANTHROPIC
#define API_GEMINI     NGX_HTTP_LLM_API_GEMINI


/* what nginx's core objects expect from the rest of nginx */

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


/* every case runs at each vector level the CPU has (ngx_http_llm_simd.c) */
static const char  *simd_names[] = { "portable", "SSE2", "AVX-512" };


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

    printf(" [%s]\n", simd_names[ngx_http_llm_simd]);
    fflush(stdout);
}


static void
diag(const char *fmt, ...)
{
    va_list  args;

    printf("# ");

    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);

    printf("\n");
}


static uint64_t
now_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}


static ngx_pool_t *
new_pool(void)
{
    ngx_pool_t  *p;

    p = ngx_create_pool(4096, &unit_log);
    if (p == NULL) {
        fprintf(stderr, "ngx_create_pool() failed\n");
        exit(2);
    }

    return p;
}


static int
str_is(ngx_str_t *s, const char *c)
{
    return s->len == strlen(c) && ngx_memcmp(s->data, c, s->len) == 0;
}


/* ------------------------------------------------------------ tokens */


static ngx_uint_t
estimate(const char *s, ngx_uint_t *chars)
{
    ngx_http_llm_estimate_t  e;

    ngx_http_llm_estimate_init(&e);
    ngx_http_llm_estimate_add(&e, (u_char *) s, strlen(s));

    if (chars) {
        *chars = ngx_http_llm_estimate_chars(&e);
    }

    return ngx_http_llm_estimate_tokens(&e);
}


static int
valid(const char *s, size_t len)
{
    return ngx_http_llm_utf8_valid((u_char *) s, len) ? 1 : 0;
}


static u_char *
read_file(const char *name, size_t *len)
{
    FILE    *f;
    long     n;
    u_char  *buf;

    f = fopen(name, "rb");
    if (f == NULL) {
        return NULL;
    }

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);

    buf = malloc(n + 1);
    if (buf == NULL || fread(buf, 1, n, f) != (size_t) n) {
        fclose(f);
        free(buf);
        return NULL;
    }

    fclose(f);
    buf[n] = '\0';
    *len = n;

    return buf;
}


static void
test_utf8(void)
{
    ok(valid("", 0), "utf8: empty");
    ok(valid("plain ascii", 11), "utf8: ascii");
    ok(valid("caf\xc3\xa9 \xe4\xbd\xa0 \xf0\x9f\x98\x80", 14),
       "utf8: 2, 3 and 4 bytes");
    ok(valid("\xef\xbf\xbf\xf4\x8f\xbf\xbf", 7), "utf8: U+FFFF, U+10FFFF");
    ok(valid("a\0b", 3), "utf8: NUL is valid");
    ok(!valid("\xc0\x80", 2), "utf8: overlong NUL refused");
    ok(!valid("\xc1\xbf", 2), "utf8: overlong 2-byte refused");
    ok(!valid("\xe0\x80\x80", 3), "utf8: overlong 3-byte refused");
    ok(!valid("\xe0\x9f\xbf", 3), "utf8: overlong U+07FF refused");
    ok(!valid("\xf0\x80\x80\x80", 4), "utf8: overlong 4-byte refused");
    ok(!valid("\xf0\x8f\xbf\xbf", 4), "utf8: overlong U+FFFF refused");
    ok(!valid("\xed\xa0\x80", 3), "utf8: surrogate U+D800 refused");
    ok(!valid("\xed\xbf\xbf", 3), "utf8: surrogate U+DFFF refused");
    ok(valid("\xed\x9f\xbf", 3), "utf8: U+D7FF valid");
    ok(!valid("\xf4\x90\x80\x80", 4), "utf8: U+110000 refused");
    ok(!valid("\xf5\x80\x80\x80", 4), "utf8: F5 refused");
    ok(!valid("\xff", 1), "utf8: FF refused");
    ok(!valid("\x80", 1), "utf8: lone continuation refused");
    ok(!valid("\xe4\xbd", 2), "utf8: truncated 3-byte refused");
    ok(!valid("ab\xf0\x9f\x98", 5), "utf8: truncated 4-byte at end refused");
    ok(!valid("\xc3\x28", 2), "utf8: bad continuation refused");
}


static void
test_estimate(void)
{
    ngx_uint_t               n, chars, a, b;
    ngx_http_llm_estimate_t  e;

    ok(estimate("", &chars) == 0 && chars == 0, "estimate: empty is 0");
    ok(estimate("Hello", NULL) == 1, "estimate: one word is 1");

    n = estimate("What is the capital of France?", &chars);
    ok(n >= 6 && n <= 9 && chars == 30,
       "estimate: short question %lu tokens (cl100k: 7)", (unsigned long) n);

    n = estimate("\xec\x95\x88\xeb\x85\x95\xed\x95\x98"
                 "\xec\x84\xb8\xec\x9a\x94", &chars);
    ok(chars == 5 && n >= 5 && n <= 8,
       "estimate: Korean greeting %lu tokens, 5 chars", (unsigned long) n);

    n = estimate("\xf0\x9f\x98\x80", &chars);
    ok(chars == 1 && n >= 2, "estimate: one emoji %lu tokens",
       (unsigned long) n);

    n = estimate("12345678901", NULL);
    ok(n >= 4 && n <= 5, "estimate: 11 digits %lu tokens (3 per token)",
       (unsigned long) n);

    n = estimate("\xff\xfe\xfd", &chars);
    ok(chars == 3 && n >= 3, "estimate: invalid bytes counted one each");

    /* the counters add up over strings */

    a = estimate("The quick brown fox", NULL);
    b = estimate("jumps over the lazy dog.", NULL);

    ngx_http_llm_estimate_init(&e);
    ngx_http_llm_estimate_add(&e, (u_char *) "The quick brown fox", 19);
    ngx_http_llm_estimate_add(&e, (u_char *) "jumps over the lazy dog.", 24);
    n = ngx_http_llm_estimate_tokens(&e);

    ok(n <= a + b && n + 1 >= a + b,
       "estimate: two strings %lu ~ %lu + %lu", (unsigned long) n,
       (unsigned long) a, (unsigned long) b);
    ok(ngx_http_llm_estimate_chars(&e) == 43, "estimate: chars over strings");

    ngx_http_llm_estimate_add_tokens(&e, 100);
    ok(ngx_http_llm_estimate_tokens(&e) == n + 100,
       "estimate: exact tokens added");
}


/*
 * The ASCII path (64 bytes at a time, bit masks) counts exactly what the
 * byte loop counts: on every ASCII sample, on 300,000 random strings
 * of up to 200 bytes over an alphabet of the characters whose order
 * matters, and on 100,000 of up to 255 bytes of base64's (a fixed seed,
 * so a failure can be replayed).
 */

static ngx_int_t
ascii_agrees(u_char *p, size_t len)
{
    ngx_http_llm_estimate_t  fast, slow;

    ngx_http_llm_estimate_init(&fast);
    ngx_http_llm_estimate_init(&slow);

    ngx_http_llm_estimate_add_bytes(&slow, p, len);

    if (ngx_http_llm_estimate_ascii(&fast, p, len) != NGX_OK) {
        return NGX_DECLINED;
    }

    return ngx_memcmp(&fast, &slow, sizeof(fast)) == 0 ? NGX_OK : NGX_ERROR;
}


static void
test_estimate_ascii(const char *dir)
{
    u_char          buf[256], *text;
    size_t          len, i;
    uint64_t        seed;
    ngx_uint_t      n, bad, files;
    struct dirent  *de;
    DIR            *d;
    char            path[1024];

    static const char  alphabet[] = "aZb 9 .\t\n\r(-x Q'\v,_\"#7!";

    /* base64's: long words of both cases after digits, across blocks */
    static const char  base64[] = "aZbQxYcW0917+/ ";

    seed = 20261122;
    bad = 0;

    for (n = 0; n < 300000; n++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        len = (seed >> 33) % 201;

        for (i = 0; i < len; i++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            buf[i] = alphabet[(seed >> 33) % (sizeof(alphabet) - 1)];
        }

        if (ascii_agrees(buf, len) != NGX_OK) {
            if (bad++ == 0) {
                printf("# first disagreement: \"%.*s\"\n", (int) len, buf);
            }
        }
    }

    ok(bad == 0, "estimate: ASCII path agrees on 300,000 random strings "
       "(%lu differ)", (unsigned long) bad);

    bad = 0;

    for (n = 0; n < 100000; n++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        len = (seed >> 33) % 256;

        for (i = 0; i < len; i++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;

            /* a space one time in 100, so that words run long */

            buf[i] = ((seed >> 33) % 100 == 0)
                     ? ' ' : base64[(seed >> 40) % (sizeof(base64) - 2)];
        }

        if (ascii_agrees(buf, len) != NGX_OK) {
            if (bad++ == 0) {
                printf("# first disagreement: \"%.*s\"\n", (int) len, buf);
            }
        }
    }

    ok(bad == 0, "estimate: ASCII path agrees on 100,000 random strings "
       "of base64 (%lu differ)", (unsigned long) bad);

    files = 0;
    bad = 0;

    d = opendir(dir);

    while (d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }

        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);

        text = read_file(path, &len);
        if (text == NULL) {
            continue;
        }

        /* a sample not all ASCII is declined, as it should be */

        if (ascii_agrees(text, len) == NGX_ERROR) {
            bad++;
        }

        files++;
        free(text);
    }

    if (d) {
        closedir(d);
    }

    ok(files >= 20 && bad == 0, "estimate: ASCII path agrees on the %lu "
       "samples (%lu differ)", (unsigned long) files, (unsigned long) bad);
}


/* every calibration sample within -10% .. +25% of its cl100k count */

static void
test_samples(const char *dir)
{
    char        path[1024], line[512], name[256], set[32];
    FILE       *f;
    size_t      len;
    u_char     *buf;
    double      err;
    unsigned    chars, cl, o2;
    ngx_uint_t  n, c, samples;

    ngx_http_llm_estimate_t  e;

    snprintf(path, sizeof(path), "%s/../samples.counts", dir);

    f = fopen(path, "r");
    if (f == NULL) {
        ok(0, "samples: cannot open %s", path);
        return;
    }

    samples = 0;

    while (fgets(line, sizeof(line), f)) {

        if (line[0] == '#'
            || sscanf(line, "%255s %u %u %u %31s", name, &chars, &cl, &o2,
                      set)
               != 5)
        {
            continue;
        }

        snprintf(path, sizeof(path), "%s/%s", dir, name);

        buf = read_file(path, &len);
        if (buf == NULL) {
            ok(0, "samples: cannot read %s", path);
            continue;
        }

        ngx_http_llm_estimate_init(&e);
        ngx_http_llm_estimate_add(&e, buf, len);
        n = ngx_http_llm_estimate_tokens(&e);
        c = ngx_http_llm_estimate_chars(&e);
        free(buf);

        err = 100.0 * ((double) n - cl) / cl;

        ok(c == chars && err >= -10 && err <= 25,
           "samples: %-12s %4lu tokens, cl100k %4u (%+5.1f%%), %s",
           name, (unsigned long) n, cl, err, set);

        samples++;
    }

    fclose(f);

    ok(samples >= 20, "samples: %lu read", (unsigned long) samples);
}


/* ---------------------------------------------------------- requests */


static ngx_int_t
parse(ngx_uint_t api, const char *body, ngx_http_llm_request_info_t *info,
    ngx_str_t *err)
{
    ngx_str_null(err);

    return ngx_http_llm_json_parse_request(pool, api, (u_char *) body,
                                           strlen(body), info, NULL, err);
}


static void
refused(ngx_uint_t api, const char *body, const char *what)
{
    ngx_int_t                    rc;
    ngx_str_t                    err;
    ngx_http_llm_request_info_t  info;

    rc = parse(api, body, &info, &err);

    ok(rc == NGX_DECLINED && err.len > 0, "refused: %s (\"%.*s\")", what,
       (int) err.len, err.data);
}


/* refused for the reason "why" names (a part of the error message) */

static void
refused_for(ngx_uint_t api, const char *body, const char *why)
{
    ngx_int_t                    rc;
    ngx_str_t                    err;
    ngx_http_llm_request_info_t  info;

    rc = parse(api, body, &info, &err);

    ok(rc == NGX_DECLINED && err.len > 0
       && ngx_strlcasestrn(err.data, err.data + err.len, (u_char *) why,
                           strlen(why) - 1) != NULL,
       "refused for \"%s\": %.40s... (\"%.*s\")", why, body,
       (int) err.len, err.data);
}


static void
accepted(ngx_uint_t api, const char *body, int64_t max, const char *what)
{
    ngx_int_t                    rc;
    ngx_str_t                    err;
    ngx_http_llm_request_info_t  info;

    rc = parse(api, body, &info, &err);

    ok(rc == NGX_OK && info.max_tokens == max,
       "accepted: %s (max_tokens %lld)", what, (long long) info.max_tokens);

    if (rc != NGX_OK) {
        diag("error: %.*s", (int) err.len, err.data);
    }
}


static void
test_openai(void)
{
    ngx_int_t                    rc;
    ngx_str_t                    err;
    ngx_uint_t                   t1, t2;
    ngx_http_llm_request_info_t  info;

    rc = parse(API_OPENAI,
               "{\"model\":\"gpt-4o-mini\",\"max_tokens\":256,"
               "\"stream\":true,\"messages\":["
               "{\"role\":\"system\",\"content\":\"You are terse.\"},"
               "{\"role\":\"user\",\"content\":\"Say hello to the world\"}]}",
               &info, &err);

    ok(rc == NGX_OK, "openai chat: parsed");
    ok(str_is(&info.model, "gpt-4o-mini"), "openai chat: model");
    ok(info.max_tokens == 256, "openai chat: max_tokens");
    ok(info.stream && !info.has_include_usage, "openai chat: stream");
    ok(info.messages == 2, "openai chat: 2 messages");
    ok(info.choices == 1, "openai chat: 1 choice");

    t1 = ngx_http_llm_estimate_tokens(&info.estimate);
    ok(t1 >= 7 && t1 <= 11, "openai chat: %lu prompt tokens (cl100k: 9)",
       (unsigned long) t1);
    ok(ngx_http_llm_estimate_chars(&info.estimate) == 36,
       "openai chat: 36 chars");

    rc = parse(API_OPENAI,
               "{\"model\":\"gpt-4o\",\"max_completion_tokens\":1000,"
               "\"n\":3,\"stream\":true,"
               "\"stream_options\":{\"include_usage\":true},"
               "\"messages\":[{\"role\":\"user\",\"content\":["
               "{\"type\":\"text\",\"text\":\"Say hello to the world\"},"
               "{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}}]},"
               "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
               "{\"id\":\"c1\",\"type\":\"function\",\"function\":"
               "{\"name\":\"get_weather\",\"arguments\":"
               "\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},"
               "{\"role\":\"tool\",\"tool_call_id\":\"c1\","
               "\"content\":\"sunny\"}],"
               "\"tools\":[{\"type\":\"function\",\"function\":{"
               "\"name\":\"get_weather\",\"description\":\"Weather now\","
               "\"parameters\":{\"type\":\"object\",\"properties\":"
               "{\"city\":{\"type\":\"string\"}}}}}]}",
               &info, &err);

    ok(rc == NGX_OK, "openai parts: parsed");
    ok(info.max_tokens == 1000, "openai parts: max_completion_tokens");
    ok(info.has_include_usage, "openai parts: include_usage seen");
    ok(info.choices == 3, "openai parts: n = 3");
    ok(info.messages == 3, "openai parts: 3 messages");

    t2 = ngx_http_llm_estimate_tokens(&info.estimate);
    ok(t2 > t1 + NGX_HTTP_LLM_TOKENS_PER_IMAGE + 15,
       "openai parts: image, tool call and tools counted (%lu)",
       (unsigned long) t2);

    rc = parse(API_OPENAI,
               "{\"model\":\"gpt-3.5-turbo-instruct\",\"prompt\":"
               "[\"one two\",\"three four\"],\"max_tokens\":7}",
               &info, &err);
    ok(rc == NGX_OK && info.max_tokens == 7 && info.messages == 0
       && ngx_http_llm_estimate_tokens(&info.estimate) >= 4,
       "openai completions: prompt strings");

    rc = parse(API_OPENAI, "{\"prompt\":[[1,2,3],[4,5]]}", &info, &err);
    ok(rc == NGX_OK && ngx_http_llm_estimate_tokens(&info.estimate) == 5,
       "openai completions: token id arrays count exactly");

    rc = parse(API_OPENAI, "{\"model\":\"text-embedding-3-small\","
               "\"input\":\"The food was delicious\"}", &info, &err);
    ok(rc == NGX_OK && info.max_tokens == -1
       && ngx_http_llm_estimate_tokens(&info.estimate) >= 4,
       "openai embeddings: input string");

    rc = parse(API_OPENAI, "{\"input\":[1,2,3,4]}", &info, &err);
    ok(rc == NGX_OK && ngx_http_llm_estimate_tokens(&info.estimate) == 4,
       "openai embeddings: token ids");

    rc = parse(API_OPENAI,
               "{\"model\":\"gpt-4.1\",\"instructions\":\"Be brief.\","
               "\"max_output_tokens\":300,\"input\":[{\"role\":\"user\","
               "\"content\":[{\"type\":\"input_text\",\"text\":\"hello\"}]},"
               "{\"type\":\"function_call_output\",\"call_id\":\"c\","
               "\"output\":\"42\"}]}",
               &info, &err);
    ok(rc == NGX_OK && info.max_tokens == 300 && info.messages == 3
       && ngx_http_llm_estimate_tokens(&info.estimate) >= 5,
       "openai responses: input items, instructions");

    rc = parse(API_OPENAI, "{\"model\":\"m\",\"max_tokens\":10,"
               "\"max_completion_tokens\":20,\"messages\":[]}", &info, &err);
    ok(rc == NGX_OK && info.max_tokens == 20,
       "openai: the larger of two max names");

    rc = parse(API_OPENAI, "{\"messages\":[],\"model\":null,"
               "\"stream\":null,\"max_tokens\":null}", &info, &err);
    ok(rc == NGX_OK && info.model.len == 0 && info.max_tokens == -1
       && !info.stream, "openai: nulls are absent");

    rc = parse(API_OPENAI, " \r\n{\"messages\":[{\"role\":\"user\","
               "\"content\":\"a\\u0000b\"}]} \n", &info, &err);
    ok(rc == NGX_OK, "openai: whitespace around, NUL escape in a string");
}


static void
test_anthropic(void)
{
    ngx_int_t                    rc;
    ngx_str_t                    err;
    ngx_http_llm_request_info_t  info;

    rc = parse(API_ANTHROPIC,
               "{\"model\":\"claude-sonnet-4-20250514\",\"max_tokens\":1024,"
               "\"system\":\"You are terse.\",\"stream\":true,"
               "\"messages\":[{\"role\":\"user\",\"content\":"
               "\"Say hello to the world\"}]}",
               &info, &err);

    ok(rc == NGX_OK, "anthropic: parsed");
    ok(str_is(&info.model, "claude-sonnet-4-20250514"), "anthropic: model");
    ok(info.max_tokens == 1024 && info.stream, "anthropic: max, stream");
    ok(info.messages == 2, "anthropic: system counts as a message");
    ok(ngx_http_llm_estimate_chars(&info.estimate) == 36,
       "anthropic: 36 chars");

    rc = parse(API_ANTHROPIC,
               "{\"model\":\"claude\",\"max_tokens\":50,"
               "\"system\":[{\"type\":\"text\",\"text\":\"sys\","
               "\"cache_control\":{\"type\":\"ephemeral\"}}],"
               "\"messages\":[{\"role\":\"user\",\"content\":["
               "{\"type\":\"text\",\"text\":\"look\"},"
               "{\"type\":\"image\",\"source\":{\"type\":\"base64\","
               "\"media_type\":\"image/png\",\"data\":\"AAAA\"}}]},"
               "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\","
               "\"id\":\"t1\",\"name\":\"calc\",\"input\":{\"x\":\"two\"}}]},"
               "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\","
               "\"tool_use_id\":\"t1\",\"content\":[{\"type\":\"text\","
               "\"text\":\"four\"}]}]}],"
               "\"tools\":[{\"name\":\"calc\",\"input_schema\":"
               "{\"type\":\"object\"}}]}",
               &info, &err);

    ok(rc == NGX_OK && info.messages == 4 && info.max_tokens == 50
       && ngx_http_llm_estimate_tokens(&info.estimate)
          > NGX_HTTP_LLM_TOKENS_PER_IMAGE + 5,
       "anthropic: blocks, image, tool_use, tool_result, tools");

    rc = parse(API_ANTHROPIC, "{\"model\":\"claude-2\","
               "\"max_tokens_to_sample\":300,\"prompt\":"
               "\"\\n\\nHuman: hi\\n\\nAssistant:\"}", &info, &err);
    ok(rc == NGX_OK && info.max_tokens == 300,
       "anthropic: legacy text completion");

    refused(API_ANTHROPIC, "{\"model\":\"c\",\"max_tokens\":5}",
            "anthropic without messages");
    refused(API_ANTHROPIC, "{\"messages\":[],\"system\":5}",
            "anthropic system a number");
    refused(API_ANTHROPIC, "{\"messages\":[{\"role\":\"user\","
            "\"content\":7}]}", "anthropic content a number");
}


static void
test_gemini(void)
{
    ngx_int_t                    rc;
    ngx_str_t                    err;
    ngx_http_llm_request_info_t  info;

    rc = parse(API_GEMINI,
               "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":"
               "\"Say hello to the world\"}]}],"
               "\"systemInstruction\":{\"parts\":[{\"text\":"
               "\"You are terse.\"}]},"
               "\"generationConfig\":{\"maxOutputTokens\":800,"
               "\"candidateCount\":2,\"temperature\":0.7}}",
               &info, &err);

    ok(rc == NGX_OK, "gemini: parsed");
    ok(info.model.len == 0 && !info.stream, "gemini: no model, no stream");
    ok(info.max_tokens == 800, "gemini: maxOutputTokens");
    ok(info.choices == 2, "gemini: candidateCount");
    ok(info.messages == 2, "gemini: system instruction counts");
    ok(ngx_http_llm_estimate_chars(&info.estimate) == 36, "gemini: 36 chars");

    rc = parse(API_GEMINI,
               "{\"contents\":[{\"parts\":[{\"text\":\"what is this\"},"
               "{\"inline_data\":{\"mime_type\":\"image/jpeg\","
               "\"data\":\"AAAA\"}}]},{\"role\":\"model\",\"parts\":"
               "[{\"functionCall\":{\"name\":\"f\",\"args\":{\"a\":1}}}]}],"
               "\"system_instruction\":{\"parts\":{\"text\":\"x\"}},"
               "\"generation_config\":{\"max_output_tokens\":64}}",
               &info, &err);

    ok(rc == NGX_OK && info.max_tokens == 64 && info.messages == 3
       && ngx_http_llm_estimate_tokens(&info.estimate)
          > NGX_HTTP_LLM_TOKENS_PER_IMAGE,
       "gemini: snake_case names, inline data, function call");

    rc = parse(API_GEMINI, "{\"contents\":{\"parts\":[{\"text\":\"hi\"}]}}",
               &info, &err);
    ok(rc == NGX_OK && info.messages == 1, "gemini: one content object");

    refused(API_GEMINI, "{\"prompt\":\"hi\"}", "gemini without contents");
    refused(API_GEMINI, "{\"contents\":[\"hi\"]}", "gemini content a string");
    refused(API_GEMINI, "{\"contents\":[{\"parts\":5}]}",
            "gemini parts a number");
    refused(API_GEMINI, "{\"contents\":[],\"generationConfig\":"
            "{\"maxOutputTokens\":0}}", "gemini maxOutputTokens 0");
    refused(API_GEMINI, "{\"contents\":[],\"generationConfig\":7}",
            "gemini generationConfig a number");
}


static void
test_bad_requests(void)
{
    char                        *deep;
    size_t                       i, n;
    uint64_t                     t;
    ngx_int_t                    rc;
    ngx_str_t                    err;
    ngx_http_llm_request_info_t  info;

    /* max tokens */

    refused(API_OPENAI, "{\"messages\":[],\"max_tokens\":1e400}",
            "max_tokens 1e400");
    refused(API_OPENAI, "{\"messages\":[],\"max_tokens\":-1}",
            "max_tokens -1");
    refused(API_OPENAI, "{\"messages\":[],\"max_tokens\":0}",
            "max_tokens 0");
    refused(API_OPENAI, "{\"messages\":[],\"max_tokens\":2147483648}",
            "max_tokens 2147483648");
    refused(API_OPENAI, "{\"messages\":[],\"max_tokens\":1.5}",
            "max_tokens 1.5");
    refused(API_OPENAI, "{\"messages\":[],\"max_tokens\":\"12\"}",
            "max_tokens \"12\"");
    refused(API_OPENAI, "{\"messages\":[],\"max_tokens\":true}",
            "max_tokens true");
    refused(API_OPENAI, "{\"messages\":[],\"max_tokens\":[5]}",
            "max_tokens [5]");
    refused(API_OPENAI, "{\"messages\":[],\"max_tokens\":"
            "99999999999999999999999}", "max_tokens beyond int64");
    refused(API_OPENAI, "{\"messages\":[],\"max_completion_tokens\":-5}",
            "max_completion_tokens -5");
    refused(API_ANTHROPIC, "{\"messages\":[],\"max_tokens\":1.5}",
            "anthropic max_tokens 1.5");
    refused(API_OPENAI, "{\"messages\":[],\"max_tokens\":1e-300}",
            "max_tokens 1e-300");

    accepted(API_OPENAI, "{\"messages\":[],\"max_tokens\":2147483647}",
             2147483647, "max_tokens 2^31-1");
    accepted(API_OPENAI, "{\"messages\":[],\"max_tokens\":1}", 1,
             "max_tokens 1");
    accepted(API_OPENAI, "{\"messages\":[],\"max_tokens\":100.0}", 100,
             "max_tokens 100.0");
    accepted(API_OPENAI, "{\"messages\":[],\"max_tokens\":1e3}", 1000,
             "max_tokens 1e3");
    accepted(API_OPENAI, "{\"messages\":[],\"max_tokens\":7,\"tools\":[{"
             "\"type\":\"function\",\"function\":{\"name\":\"f\","
             "\"parameters\":{\"type\":\"integer\","
             "\"maximum\":18446744073709551615,"
             "\"minimum\":-99999999999999999999999999}}}]}", 7,
             "integers beyond 64 bits in a tool's schema");
    refused_for(API_OPENAI, "{\"messages\":[],\"seed\":1"
                "0000000000000000000000000000000000000000000000000"
                "0000000000000000000000000000000000000000000000000"
                "0000000000000000000000000000000000000000000000000"
                "0000000000000000000000000000000000000000000000000"
                "0000000000000000000000000000000000000000000000000"
                "0000000000000000000000000000000000000000000000000"
                "0000000000000000000000000000000000000000000000000"
                "0000000000}", "out of range");

    {
        ngx_str_t                    err;
        ngx_http_llm_request_info_t  info;

        ok(parse(API_OPENAI, "{\"messages\":[],\"n\":3.0}", &info, &err)
           == NGX_OK && info.choices == 3, "n = 3.0: 3 choices");
        ok(parse(API_OPENAI, "{\"messages\":[],\"n\":1e30}", &info, &err)
           == NGX_OK && info.choices == 2147483647,
           "n = 1e30: 2^31 - 1 choices");
        ok(parse(API_OPENAI, "{\"messages\":[],\"n\":"
                 "99999999999999999999}", &info, &err)
           == NGX_OK && info.choices == 2147483647,
           "n beyond 64 bits: 2^31 - 1 choices");
        ok(parse(API_OPENAI, "{\"messages\":[],\"n\":2.5}", &info, &err)
           == NGX_OK && info.choices == 1, "n = 2.5: left to the backend");
    }

    /* not JSON, not UTF-8, not an object */

    refused(API_OPENAI, "", "empty body");
    refused(API_OPENAI, "{\"messages\":[]", "truncated JSON");
    refused(API_OPENAI, "{\"messages\":[]} x", "trailing garbage");
    refused(API_OPENAI, "{'messages':[]}", "single quotes");
    refused(API_OPENAI, "{\"messages\":[\"\xc3\x28\"]}", "invalid UTF-8");
    refused(API_OPENAI, "{\"messages\":[\"\xed\xa0\x80\"]}",
            "UTF-8 surrogate");

    /*
     * what a string holds, in its first 64 bytes, after them, and in
     * the tail the vector scanners read with a masked load
     */

    refused_for(API_OPENAI, "{\"messages\":[{\"role\":\"user\","
                "\"content\":\"ok \xc3\x28\"}]}", "UTF-8");
    refused_for(API_OPENAI, "{\"messages\":[{\"role\":\"user\","
                "\"content\":\"0123456789012345678901234567890123456789"
                "0123456789012345678901234567890123456789 \xff\"}]}",
                "UTF-8");
    refused_for(API_OPENAI, "{\"messages\":[{\"role\":\"user\","
                "\"content\":\"0123456789012345678901234567890123456789"
                "0123456789012345678901234567890123456789\x01\"}]}",
                "control");
    refused_for(API_OPENAI, "{\"messages\":[{\"role\":\"user\","
                "\"content\":\"0123456789012345678901234567890123456789"
                "0123456789012345678901234\\q56789\"}]}", "escape");
    refused(API_OPENAI, "[{\"messages\":[]}]", "an array");
    refused(API_OPENAI, "\"messages\"", "a string");
    refused(API_OPENAI, "42", "a number");
    refused(API_OPENAI, "null", "null");
    refused(API_OPENAI, "{\"messages\":[],\"seed\":1e999}",
            "another number out of range");

    rc = parse(API_OPENAI, "{\"messages\":[], x}", &info, &err);
    ok(rc == NGX_DECLINED && err.len > 30
       && ngx_strstrn(err.data, "not valid JSON", 14 - 1) != NULL,
       "not JSON: message says where (\"%.*s\")", (int) err.len, err.data);

    /* shapes */

    refused(API_OPENAI, "{\"model\":\"gpt-4o\"}", "openai without messages");
    refused(API_OPENAI, "{\"messages\":{}}", "messages an object");
    refused(API_OPENAI, "{\"messages\":[\"hi\"]}", "a message a string");
    refused(API_OPENAI, "{\"messages\":[{\"role\":\"user\","
            "\"content\":5}]}", "content a number");
    refused(API_OPENAI, "{\"messages\":[],\"model\":5}", "model a number");
    refused(API_OPENAI, "{\"messages\":[],\"model\":\"a\\u0000b\"}",
            "model with NUL");
    refused(API_OPENAI, "{\"messages\":[],\"stream\":\"yes\"}",
            "stream a string");

    /* nesting */

    n = 10000;
    deep = malloc(2 * n + 64);
    if (deep == NULL) {
        exit(2);
    }

    strcpy(deep, "{\"messages\":[],\"x\":");
    i = strlen(deep);
    memset(deep + i, '[', n);
    memset(deep + i + n, ']', n);
    strcpy(deep + i + 2 * n, "}");

    t = now_ns();
    rc = parse(API_OPENAI, deep, &info, &err);
    t = now_ns() - t;

    ok(rc == NGX_DECLINED && err.len > 0,
       "10,000 levels refused in %lu us (\"%.*s\")",
       (unsigned long) (t / 1000), (int) err.len, err.data);
    ok(t < 5000000, "10,000 levels refused fast");

    /* 64 levels pass, 65 do not: the object itself is the first */

    strcpy(deep, "{\"messages\":[],\"x\":");
    i = strlen(deep);
    memset(deep + i, '[', 63);
    memset(deep + i + 63, ']', 63);
    strcpy(deep + i + 126, "}");
    rc = parse(API_OPENAI, deep, &info, &err);
    ok(rc == NGX_OK, "64 levels accepted");

    strcpy(deep, "{\"messages\":[],\"x\":");
    memset(deep + i, '[', 64);
    memset(deep + i + 64, ']', 64);
    strcpy(deep + i + 128, "}");
    rc = parse(API_OPENAI, deep, &info, &err);
    ok(rc == NGX_DECLINED, "65 levels refused");

    /* brackets in strings do not count */

    strcpy(deep, "{\"messages\":[{\"role\":\"user\",\"content\":\"\\\"");
    i = strlen(deep);
    memset(deep + i, '[', n);
    strcpy(deep + i + n, "\"}]}");
    rc = parse(API_OPENAI, deep, &info, &err);
    ok(rc == NGX_OK, "10,000 brackets inside a string accepted");

    free(deep);

    rc = parse(API_OPENAI, "{\"messages\":[],\"x\":\"\\", &info, &err);
    ok(rc == NGX_DECLINED, "a string cut after a backslash refused");

    /* reals: overflow is refused, underflow (a subnormal, 0) is not */

    rc = parse(API_OPENAI, "{\"temperature\":1e-310,\"messages\":[]}",
               &info, &err);
    ok(rc == NGX_OK, "a subnormal real accepted, as jansson does");

    rc = parse(API_OPENAI, "{\"temperature\":1e-400,\"messages\":[]}",
               &info, &err);
    ok(rc == NGX_OK, "a real that underflows to 0 accepted");

    rc = parse(API_OPENAI, "{\"temperature\":-1e309,\"messages\":[]}",
               &info, &err);
    ok(rc == NGX_DECLINED && err.len && ngx_strstr(err.data, "range"),
       "a real that overflows refused: %.*s", (int) err.len, err.data);
}


/* ------------------------------------------------------ include_usage */


/* "body" with include_usage set must be "want", byte for byte */

static void
usage_edit(const char *body, const char *want, const char *what)
{
    ngx_int_t  rc;
    ngx_str_t  out;

    rc = ngx_http_llm_json_include_usage(pool, (u_char *) body,
                                         strlen(body), NULL, &out);

    ok(rc == NGX_OK && str_is(&out, want), "include_usage: %s (%.*s)",
       what, (int) (rc == NGX_OK ? out.len : 0), out.data);
}


static void
test_include_usage(void)
{
    ngx_int_t  rc;
    ngx_str_t  out;

    usage_edit("{\"model\":\"m\",\"temperature\":0.7,\"stream\":true,"
               "\"messages\":[]}",
               "{\"stream_options\":{\"include_usage\":true},"
               "\"model\":\"m\",\"temperature\":0.7,"
               "\"stream\":true,\"messages\":[]}",
               "inserted, the rest untouched");

    usage_edit(" {  } ",
               " {\"stream_options\":{\"include_usage\":true}  } ",
               "empty object");

    usage_edit("{\"stream_options\":{\"foo\":1},\"temperature\":0.7,"
               "\"top_p\":0.1,\"x\":\"\xc3\xa9\",\"stream\":true}",
               "{\"stream_options\":{\"include_usage\":true,"
               "\"foo\":1},\"temperature\":0.7,"
               "\"top_p\":0.1,\"x\":\"\xc3\xa9\",\"stream\":true}",
               "added to stream_options, the rest untouched");

    usage_edit("{\"stream\":true, \"stream_options\": "
               "{\"include_usage\": false}}",
               "{\"stream\":true, \"stream_options\": "
               "{\"include_usage\": true}}",
               "false made true, in place");

    usage_edit("{\"stream_options\":{ },\"seed\":18446744073709551616,"
               "\"p\":1.10,\"q\":1e2}",
               "{\"stream_options\":{\"include_usage\":true },"
               "\"seed\":18446744073709551616,\"p\":1.10,"
               "\"q\":1e2}",
               "numbers as written, one beyond 64 bits too");

    usage_edit("{\"stream_options\":{\"include_usage\":false},\"a\":1,"
               "\"stream_options\":{\"include\\u005fusage\":\"no\","
               "\"b\":2}}",
               "{\"stream_options\":{\"include_usage\":false},"
               "\"a\":1,\"stream_options\":"
               "{\"include\\u005fusage\":true,\"b\":2}}",
               "the last stream_options set, its escaped key too");

    usage_edit("{\"stream_options\":{\"include_usage\":{\"a\":[1,{}]}},"
               "\"x\":[]}",
               "{\"stream_options\":{\"include_usage\":true},\"x\":[]}",
               "an object in its place");

    usage_edit("{\"stream_options\":[1, [2]] ,\"x\":0}",
               "{\"stream_options\":{\"include_usage\":true} ,\"x\":0}",
               "an array replaced");

    usage_edit("{\"stream\":true, \"stream_options\": "
               "{\"include_usage\": true}}",
               "{\"stream\":true, \"stream_options\": "
               "{\"include_usage\": true}}",
               "already set");

    usage_edit("{\"stream_options\":null,\"p\":0.30000000000000004}",
               "{\"stream_options\":{\"include_usage\":true},"
               "\"p\":0.30000000000000004}",
               "null replaced, numbers as written");

    rc = ngx_http_llm_json_include_usage(pool, (u_char *) "[1]", 3, NULL,
                                         &out);
    ok(rc == NGX_DECLINED, "include_usage: not an object");

    rc = ngx_http_llm_json_include_usage(pool, (u_char *) "{x", 2, NULL,
                                         &out);
    ok(rc == NGX_DECLINED, "include_usage: not JSON");
}


/* ------------------------------------------------------------- usage */


typedef struct {
    ngx_uint_t   found;
    ngx_uint_t   prompt;
    ngx_uint_t   completion;
    ngx_uint_t   chars;
    ngx_uint_t   generated;
    char         model[64];
} result_t;


/* feeds "s" in pieces cut at cuts[0..ncuts-1] */

static void
observe(ngx_uint_t api, ngx_uint_t sse, const char *s, size_t len,
    size_t *cuts, ngx_uint_t ncuts, result_t *r)
{
    size_t                 from, to;
    ngx_uint_t             i;
    ngx_pool_t            *p;
    ngx_http_llm_usage_t   u;

    p = new_pool();

    ngx_http_llm_usage_init(&u, p, api, sse);

    from = 0;

    for (i = 0; i <= ncuts; i++) {
        to = (i < ncuts) ? cuts[i] : len;

        if (ngx_http_llm_usage_feed(&u, (u_char *) s + from, to - from)
            != NGX_OK)
        {
            fprintf(stderr, "usage_feed() failed\n");
            exit(2);
        }

        from = to;
    }

    ngx_http_llm_usage_finish(&u);

    r->found = u.found;
    r->prompt = u.prompt_tokens;
    r->completion = u.completion_tokens;
    r->chars = u.streamed_chars;
    r->generated = ngx_http_llm_estimate_tokens(&u.generated);
    snprintf(r->model, sizeof(r->model), "%.*s",
             (int) ngx_min(u.model.len, 63), u.model.data);

    ngx_destroy_pool(p);
}


static int
same(result_t *a, result_t *b)
{
    return a->found == b->found && a->prompt == b->prompt
           && a->completion == b->completion && a->chars == b->chars
           && a->generated == b->generated
           && strcmp(a->model, b->model) == 0;
}


static void
check_stream(const char *name, ngx_uint_t api, ngx_uint_t sse,
    const char *s, ngx_uint_t prompt, ngx_uint_t completion,
    ngx_uint_t chars, const char *model, ngx_uint_t exhaustive)
{
    size_t      len, cuts[3], *all, i, j;
    uint32_t    seed;
    result_t    whole, r;
    ngx_uint_t  bad, n;

    len = strlen(s);

    observe(api, sse, s, len, NULL, 0, &whole);

    ok(whole.found == (prompt || completion) && whole.prompt == prompt
       && whole.completion == completion,
       "%s: whole: found %lu, prompt %lu, completion %lu", name,
       (unsigned long) whole.found, (unsigned long) whole.prompt,
       (unsigned long) whole.completion);
    ok(whole.chars == chars, "%s: whole: %lu chars of text (want %lu)",
       name, (unsigned long) whole.chars, (unsigned long) chars);
    ok(strcmp(whole.model, model) == 0, "%s: whole: model \"%s\"", name,
       whole.model);

    /* one byte at a time */

    all = malloc(len * sizeof(size_t));
    if (all == NULL) {
        exit(2);
    }

    for (i = 0; i < len; i++) {
        all[i] = i;
    }

    observe(api, sse, s, len, all, len, &r);
    ok(same(&whole, &r), "%s: one byte at a time", name);
    free(all);

    /* cut once at every position */

    bad = 0;

    for (i = 0; i <= len; i++) {
        cuts[0] = i;
        observe(api, sse, s, len, cuts, 1, &r);
        bad += !same(&whole, &r);
    }

    ok(bad == 0, "%s: cut at each of %lu positions (%lu differ)", name,
       (unsigned long) len + 1, (unsigned long) bad);

    /* cut twice at every pair of positions */

    if (exhaustive) {
        bad = 0;
        n = 0;

        for (i = 0; i <= len; i++) {
            for (j = i; j <= len; j++) {
                cuts[0] = i;
                cuts[1] = j;
                observe(api, sse, s, len, cuts, 2, &r);
                bad += !same(&whole, &r);
                n++;
            }
        }

        ok(bad == 0, "%s: cut at each of %lu pairs (%lu differ)", name,
           (unsigned long) n, (unsigned long) bad);
    }

    /* random cuts */

    bad = 0;
    seed = 12345;

    for (i = 0; i < 300; i++) {
        for (j = 0; j < 3; j++) {
            seed = seed * 1103515245 + 12345;
            cuts[j] = (seed >> 8) % (len + 1);
        }

        if (cuts[0] > cuts[1]) {
            n = cuts[0]; cuts[0] = cuts[1]; cuts[1] = n;
        }

        if (cuts[1] > cuts[2]) {
            n = cuts[1]; cuts[1] = cuts[2]; cuts[2] = n;
        }

        if (cuts[0] > cuts[1]) {
            n = cuts[0]; cuts[0] = cuts[1]; cuts[1] = n;
        }

        observe(api, sse, s, len, cuts, 3, &r);
        bad += !same(&whole, &r);
    }

    ok(bad == 0, "%s: 300 random 4-way cuts (%lu differ)", name,
       (unsigned long) bad);
}


static char *
crlf(const char *s, const char *eol)
{
    char    *out, *p;
    size_t   n;

    n = strlen(s);

    out = malloc(2 * n + 1);
    if (out == NULL) {
        exit(2);
    }

    for (p = out; *s; s++) {
        if (*s == '\n') {
            p = stpcpy(p, eol);

        } else {
            *p++ = *s;
        }
    }

    *p = '\0';

    return out;
}


static const char  openai_sse[] =
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\","
    "\"created\":1,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":"
    "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
    "\"finish_reason\":null}],\"usage\":null}\n\n"
    "data: {\"id\":\"c1\",\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":"
    "[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}],\"usage\":null}\n\n"
    "data: {\"id\":\"c1\",\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":"
    "[{\"index\":0,\"delta\":{\"content\":\" w\xc3\xb6rld \\u00e9\\n"
    "\\ud83d\\ude00\\\"\"}}],\"usage\":null}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},"
    "\"finish_reason\":\"stop\"}],\"usage\":null}\n\n"
    "data: {\"id\":\"c1\",\"model\":\"gpt-4o-mini-2024-07-18\","
    "\"choices\":[],\"usage\":{\"prompt_tokens\":12,"
    "\"completion_tokens\":5,\"total_tokens\":17,"
    "\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n"
    "data: [DONE]\n\n";

static const char  anthropic_sse[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\","
    "\"type\":\"message\",\"role\":\"assistant\",\"content\":[],"
    "\"model\":\"claude-sonnet-4-20250514\",\"stop_reason\":null,"
    "\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":100,"
    "\"cache_read_input_tokens\":50,\"output_tokens\":1}}}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,"
    "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
    "event: ping\n"
    "data: {\"type\": \"ping\"}\n\n"
    ": a comment, then an id line and a retry line\n"
    "id: 7\nretry: 1000\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
    "{\"type\":\"text_delta\",\"text\":\"Hi \xf0\x9f\x98\x80\"}}\n\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
    "\"end_turn\",\"stop_sequence\":null},\"usage\":"
    "{\"output_tokens\":15}}\n\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n\n";

static const char  gemini_sse[] =
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": "
    "\"Bonjour\"}],\"role\": \"model\"},\"index\": 0}],"
    "\"usageMetadata\": {\"promptTokenCount\": 9,\"totalTokenCount\": 9},"
    "\"modelVersion\": \"gemini-2.0-flash\"}\n\n"
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": "
    "\" le monde\"}],\"role\": \"model\"},\"finishReason\": \"STOP\","
    "\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,"
    "\"candidatesTokenCount\": 4,\"thoughtsTokenCount\": 6,"
    "\"totalTokenCount\": 19},\"modelVersion\": \"gemini-2.0-flash\"}\n\n";

/* usage split over two data lines of one event, no space after "data:" */
static const char  multiline_sse[] =
    "data:{\"model\":\"m1\",\"choices\":[{\"delta\":{\"content\":\"ab\"}}],\n"
    "data:\"usage\":{\"prompt_tokens\":3,\n"
    "data:\"completion_tokens\":4}}\n"
    "\n"
    "data\n"
    "data: [DONE]\n\n";

static const char  nousage_sse[] =
    "data: {\"model\":\"llama-3\",\"choices\":[{\"delta\":"
    "{\"content\":\"one \"}}]}\n\n"
    "data: {\"model\":\"llama-3\",\"choices\":[{\"delta\":"
    "{\"content\":\"two\",\"tool_calls\":[{\"function\":{\"arguments\":"
    "\"{}\"}}]}}]}\n\n"
    "data: {\"model\":\"other\",\"choices\":[{\"delta\":"
    "{\"reasoning_content\":\"hmm\"}}]}\n\n"
    "data: [DONE]\n\n";

static const char  mock_json[] =
    "{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion\","
    "\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":"
    "[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
    "\"Hello from the mock backend.\"},\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":7,"
    "\"total_tokens\":16}}";

static const char  openai_json[] =
    "{\"id\":\"x\",\"object\":\"chat.completion\",\"model\":\"gpt-4o\","
    "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
    "\"content\":\"Hello there\"},\"logprobs\":null,"
    "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":10,"
    "\"completion_tokens\":2,\"total_tokens\":12}}";

static const char  anthropic_json[] =
    "{\"id\":\"msg\",\"type\":\"message\",\"role\":\"assistant\","
    "\"model\":\"claude-3-5-haiku\",\"content\":[{\"type\":\"text\","
    "\"text\":\"Hi!\"}],\"stop_reason\":\"end_turn\",\"usage\":"
    "{\"input_tokens\":10,\"cache_creation_input_tokens\":3,"
    "\"cache_read_input_tokens\":4,\"output_tokens\":7}}";

static const char  gemini_json[] =
    "{\n  \"candidates\": [\n    {\n      \"content\": {\n        "
    "\"parts\": [\n          {\n            \"text\": \"Yes\"\n          "
    "}\n        ],\n        \"role\": \"model\"\n      }\n    }\n  ],\n"
    "  \"usageMetadata\": {\n    \"promptTokenCount\": 5,\n    "
    "\"candidatesTokenCount\": 1,\n    \"thoughtsTokenCount\": 20,\n    "
    "\"totalTokenCount\": 26\n  },\n  \"modelVersion\": "
    "\"gemini-2.5-pro\"\n}\n";

/* streamGenerateContent without alt=sse: a JSON array, the last wins */
static const char  gemini_array[] =
    "[{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}],"
    "\"usageMetadata\":{\"promptTokenCount\":5,\"totalTokenCount\":5},"
    "\"modelVersion\":\"gemini-1.5-flash\"}\r\n,\r\n"
    "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"bc\"}]}}],"
    "\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":2,"
    "\"totalTokenCount\":7},\"modelVersion\":\"gemini-1.5-flash\"}]";


/* the samples are valid UTF-8 */

static uint32_t
decode(u_char **p, u_char *last)
{
    if (**p < 0x80) {
        return *(*p)++;
    }

    return ngx_utf8_decode(p, last - *p);
}


/*
 * A sample file streamed as OpenAI deltas of about a token each (a word
 * with its leading space, or two CJK characters), JSON-escaped, with
 * every non-ASCII character as \uXXXX if "ascii" (Python's default).
 */

static char *
sample_stream(u_char *text, size_t len, ngx_uint_t ascii, size_t *out_len)
{
    char        *out, *o;
    u_char      *p, *q, *last, *s;
    uint32_t     c;
    ngx_uint_t   n;

    out = malloc(len * 100 + 64);
    if (out == NULL) {
        exit(2);
    }

    o = out;
    p = text;
    last = text + len;

    while (p < last) {

        /* one delta: up to the next space or line break, or 2 chars */

        q = p;
        n = 0;

        do {
            c = decode(&q, last);
            n++;

        } while (q < last && *q != ' ' && *q != '\n'
                 && !(c >= 0x80 && n == 2) && !(*q >= 0x80 && c < 0x80));

        o += sprintf(o, "data: {\"choices\":[{\"index\":0,\"delta\":"
                     "{\"content\":\"");

        while (p < q) {
            s = p;
            c = decode(&p, q);

            if (c == '"' || c == '\\') {
                o += sprintf(o, "\\%c", (int) c);

            } else if (c == '\n') {
                o += sprintf(o, "\\n");

            } else if (c < 0x20) {
                o += sprintf(o, "\\u%04x", (unsigned) c);

            } else if (c >= 0x80 && ascii) {
                if (c >= 0x10000) {
                    c -= 0x10000;
                    o += sprintf(o, "\\u%04x\\u%04x",
                                 (unsigned) (0xd800 + (c >> 10)),
                                 (unsigned) (0xdc00 + (c & 0x3ff)));

                } else {
                    o += sprintf(o, "\\u%04x", (unsigned) c);
                }

            } else {
                memcpy(o, s, p - s);
                o += p - s;
            }
        }

        o += sprintf(o, "\"},\"finish_reason\":null}]}\n\n");
    }

    o += sprintf(o, "data: [DONE]\n\n");
    *out_len = o - out;

    return out;
}


static void
test_generated(const char *dir)
{
    char        *sse, path[1024];
    size_t       len, slen;
    u_char      *text;
    double       err;
    result_t     raw, esc;
    ngx_uint_t   i;

    static struct {
        const char  *name;
        ngx_uint_t   cl100k;
    } files[] = {
        { "en_prose.txt", 461 },
        { "en_chat.txt", 332 },
        { "code_py.py", 537 },
        { "zh.txt", 702 },
        { "ko.txt", 747 },
        { "ja.txt", 628 },
        { "ru.txt", 396 },
    };

    for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i].name);

        text = read_file(path, &len);
        if (text == NULL) {
            ok(0, "generated: cannot read %s", path);
            continue;
        }

        sse = sample_stream(text, len, 0, &slen);
        observe(API_OPENAI, 1, sse, slen, NULL, 0, &raw);
        free(sse);

        sse = sample_stream(text, len, 1, &slen);
        observe(API_OPENAI, 1, sse, slen, NULL, 0, &esc);
        free(sse);

        err = 100.0 * ((double) raw.generated - files[i].cl100k)
              / files[i].cl100k;

        ok(raw.found == 0 && err >= -10 && err <= 25,
           "generated: %-12s streamed in deltas: %lu tokens, cl100k %lu "
           "(%+.1f%%)", files[i].name, (unsigned long) raw.generated,
           (unsigned long) files[i].cl100k, err);

        ok(esc.generated == raw.generated && esc.chars == raw.chars,
           "generated: %-12s \\u-escaped: the same %lu tokens, %lu chars",
           files[i].name, (unsigned long) esc.generated,
           (unsigned long) esc.chars);

        free(text);
    }
}


static void
test_usage(void)
{
    char        *s, *big;
    size_t       n, len, i;
    result_t     r;
    ngx_pool_t  *p;

    ngx_http_llm_usage_t  u;

    check_stream("openai sse", API_OPENAI, 1, openai_sse, 12, 5, 16,
                 "gpt-4o-mini-2024-07-18", 0);

    s = crlf(openai_sse, "\r\n");
    check_stream("openai sse crlf", API_OPENAI, 1, s, 12, 5, 16,
                 "gpt-4o-mini-2024-07-18", 0);
    free(s);

    s = crlf(openai_sse, "\r");
    check_stream("openai sse cr", API_OPENAI, 1, s, 12, 5, 16,
                 "gpt-4o-mini-2024-07-18", 0);
    free(s);

    check_stream("anthropic sse", API_ANTHROPIC, 1, anthropic_sse, 175, 15,
                 4, "claude-sonnet-4-20250514", 0);

    s = crlf(anthropic_sse, "\r\n");
    check_stream("anthropic sse crlf", API_ANTHROPIC, 1, s, 175, 15, 4,
                 "claude-sonnet-4-20250514", 0);
    free(s);

    check_stream("gemini sse", API_GEMINI, 1, gemini_sse, 9, 10, 16,
                 "gemini-2.0-flash", 0);

    s = crlf(gemini_sse, "\r\n");
    check_stream("gemini sse crlf", API_GEMINI, 1, s, 9, 10, 16,
                 "gemini-2.0-flash", 0);
    free(s);

    check_stream("multi-line data", API_OPENAI, 1, multiline_sse, 3, 4, 2,
                 "m1", 1);

    /* a BOM opening a stream is dropped, cut anywhere; half of one is not */

    check_stream("a BOM first", API_OPENAI, 1,
                 "\xef\xbb\xbf" "data: {\"model\":\"m\",\"usage\":"
                 "{\"prompt_tokens\":71,\"completion_tokens\":72}}\n\n",
                 71, 72, 0, "m", 1);
    check_stream("half a BOM first", API_OPENAI, 1,
                 "\xef\xbb" "data: {\"model\":\"m\",\"usage\":"
                 "{\"prompt_tokens\":71,\"completion_tokens\":72}}\n\n"
                 "data: {\"model\":\"m2\"}\n\n",
                 0, 0, 0, "m2", 1);
    check_stream("a BOM later", API_OPENAI, 1,
                 "data: {\"model\":\"m3\"}\n\n\xef\xbb\xbf" "data: "
                 "{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}"
                 "\n\n", 0, 0, 0, "m3", 1);

    check_stream("no usage", API_OPENAI, 1, nousage_sse, 0, 0, 12,
                 "llama-3", 1);

    check_stream("openai json", API_OPENAI, 0, openai_json, 10, 2, 11,
                 "gpt-4o", 0);

    /* a usage object with a subnormal real in it is read all the same */

    ngx_http_llm_usage_init(&u, pool, API_OPENAI, 0);
    s = "{\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,"
        "\"cost\":1e-320}}";
    (void) ngx_http_llm_usage_feed(&u, (u_char *) s, strlen(s));
    ngx_http_llm_usage_finish(&u);
    ok(u.found && u.prompt_tokens == 5 && u.completion_tokens == 7,
       "usage: an object with a subnormal real is read");
    check_stream("anthropic json", API_ANTHROPIC, 0, anthropic_json, 17, 7,
                 3, "claude-3-5-haiku", 0);
    check_stream("gemini json", API_GEMINI, 0, gemini_json, 5, 21, 3,
                 "gemini-2.5-pro", 0);
    check_stream("gemini json array", API_GEMINI, 0, gemini_array, 5, 2, 3,
                 "gemini-1.5-flash", 0);

    /* an SSE stream read as JSON finds nothing but does no harm */

    observe(API_OPENAI, 0, anthropic_sse, strlen(anthropic_sse), NULL, 0,
            &r);
    ok(r.found == 0 || r.prompt > 0, "sse read as json: no crash");

    observe(API_OPENAI, 0, "<html>502 Bad Gateway</html>", 28, NULL, 0, &r);
    ok(r.found == 0 && r.chars == 0, "html body: nothing found");

    /* a usage object cut off by the end of the response */

    s = "data: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4";
    observe(API_OPENAI, 1, s, strlen(s), NULL, 0, &r);
    ok(r.found == 0, "usage cut off: not read");

    /* an event that ends inside a usage object */

    s = "data: {\"usage\":{\"prompt_tokens\":3,\n\n"
        "data: \"completion_tokens\":4}}\n\n"
        "data: {\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":9}}\n\n";
    observe(API_OPENAI, 1, s, strlen(s), NULL, 0, &r);
    ok(r.found && r.prompt == 8 && r.completion == 9,
       "usage cut by the event's end: the next one is read");

    /* an empty model name does not hide the next one */

    s = "data: {\"model\":\"\",\"x\":1}\n\n"
        "data: {\"model\":\"gpt-\\u0034o\"}\n\n"
        "data: {\"model\":\"real-model\"}\n\n"
        "data: {\"model\":\"later\"}\n\n";
    observe(API_OPENAI, 1, s, strlen(s), NULL, 0, &r);
    ok(strcmp(r.model, "real-model") == 0,
       "model: empty and escaped names skipped, the first kept (%s)",
       r.model);

    /* usage objects that are null or not objects */

    s = "data: {\"usage\":null,\"x\":{\"usage\":[1,2]},\"usage\":\"7\"}\n\n";
    observe(API_OPENAI, 1, s, strlen(s), NULL, 0, &r);
    ok(r.found == 0, "usage null, an array or a string: ignored");

    s = "data: {\"usage\":{\"prompt_tokens\":-3,\"completion_tokens\":1.5}}"
        "\n\n";
    observe(API_OPENAI, 1, s, strlen(s), NULL, 0, &r);
    ok(r.found == 0, "usage with negative or fractional counts: ignored");

    /* an oversize line of text: counted, not kept */

    n = 2 * 1024 * 1024;
    big = malloc(n + 256);
    if (big == NULL) {
        exit(2);
    }

    len = sprintf(big, "data: {\"choices\":[{\"delta\":{\"content\":\"");
    memset(big + len, 'x', n);
    len += n;
    len += sprintf(big + len, "\"}}]}\n\ndata: {\"usage\":{"
                   "\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n");

    p = new_pool();
    ngx_http_llm_usage_init(&u, p, API_OPENAI, 1);

    for (i = 0; i < len; i += 1000) {
        (void) ngx_http_llm_usage_feed(&u, (u_char *) big + i,
                                       ngx_min(1000, len - i));
    }

    ngx_http_llm_usage_finish(&u);

    ok(u.found && u.prompt_tokens == 1 && u.completion_tokens == 2
       && u.streamed_chars == n,
       "2 MB line: %lu chars counted, usage after it read",
       (unsigned long) u.streamed_chars);
    ok(u.capture_size <= 1024, "2 MB line: %lu bytes kept",
       (unsigned long) u.capture_size);

    ngx_destroy_pool(p);

    /* an oversize usage object: dropped, the next one read */

    len = sprintf(big, "data: {\"usage\":{\"prompt_tokens\":5,\"pad\":\"");
    memset(big + len, 'y', 100000);
    len += 100000;
    len += sprintf(big + len, "\",\"completion_tokens\":6}}\n\n");

    observe(API_OPENAI, 1, big, len, NULL, 0, &r);
    ok(r.found == 0, "usage object over %d bytes: dropped",
       NGX_HTTP_LLM_USAGE_CAP);

    len += sprintf(big + len, "data: {\"usage\":{\"prompt_tokens\":1,"
                   "\"completion_tokens\":1}}\n\n");
    observe(API_OPENAI, 1, big, len, NULL, 0, &r);
    ok(r.found && r.prompt == 1, "usage object over the cap: next read");

    free(big);

    /*
     * a message_delta that names input_tokens alone keeps the cache's
     * counts message_start told; one that names them all replaces them
     */

    s = "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"usage\":"
        "{\"input_tokens\":25,\"cache_creation_input_tokens\":100,"
        "\"cache_read_input_tokens\":50,\"output_tokens\":1}}}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"usage\":"
        "{\"input_tokens\":25,\"output_tokens\":15}}\n\n";
    check_stream("anthropic delta input only", API_ANTHROPIC, 1, s, 175,
                 15, 0, "", 0);

    s = "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"usage\":"
        "{\"input_tokens\":25,\"cache_creation_input_tokens\":100,"
        "\"cache_read_input_tokens\":50,\"output_tokens\":1}}}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"usage\":"
        "{\"input_tokens\":30,\"cache_creation_input_tokens\":0,"
        "\"cache_read_input_tokens\":60,\"output_tokens\":15}}\n\n";
    check_stream("anthropic delta all counts", API_ANTHROPIC, 1, s, 90, 15,
                 0, "", 0);

    /* the prompt's parts a provider's cache read or wrote */

    {
        static struct {
            ngx_uint_t   api;
            const char  *body;
            ngx_uint_t   prompt, read, written, hour;
        } cached[] = {
            { API_OPENAI, "{\"usage\":{\"prompt_tokens\":2006,"
              "\"completion_tokens\":300,\"prompt_tokens_details\":"
              "{\"cached_tokens\":1920,\"audio_tokens\":0}}}",
              2006, 1920, 0, 0 },
            { API_OPENAI, "{\"usage\":{\"input_tokens\":900,"
              "\"input_tokens_details\":{\"cached_tokens\":800},"
              "\"output_tokens\":5}}", 900, 800, 0, 0 },
            { API_ANTHROPIC, "{\"usage\":{\"input_tokens\":25,"
              "\"cache_creation_input_tokens\":100,"
              "\"cache_read_input_tokens\":50,\"output_tokens\":3}}",
              175, 50, 100, 0 },
            { API_ANTHROPIC, "{\"usage\":{\"input_tokens\":25,"
              "\"cache_creation_input_tokens\":100,"
              "\"cache_read_input_tokens\":50,\"cache_creation\":"
              "{\"ephemeral_5m_input_tokens\":60,"
              "\"ephemeral_1h_input_tokens\":40},\"output_tokens\":3}}",
              175, 50, 100, 40 },
            { API_ANTHROPIC, "{\"usage\":{\"input_tokens\":25,"
              "\"cache_creation_input_tokens\":10,\"cache_creation\":"
              "{\"ephemeral_1h_input_tokens\":40},\"output_tokens\":3}}",
              35, 0, 10, 10 },
            { API_OPENAI, "{\"usage\":{\"prompt_tokens\":2006,"
              "\"completion_tokens\":300,\"prompt_tokens_details\":"
              "{\"cached_tokens\":1000},"
              "\"cache_creation_input_tokens\":900}}", 2006, 1000, 900, 0 },
            { API_GEMINI, "{\"usageMetadata\":{\"promptTokenCount\":700,"
              "\"cachedContentTokenCount\":600,"
              "\"candidatesTokenCount\":2}}", 700, 600, 0, 0 },
            { API_OPENAI, "{\"usage\":{\"prompt_tokens\":10,"
              "\"completion_tokens\":3,\"prompt_tokens_details\":"
              "{\"cached_tokens\":-1}}}", 10, 0, 0, 0 },
            { API_OPENAI, "{\"usage\":{\"prompt_tokens\":10,"
              "\"completion_tokens\":3,\"prompt_tokens_details\":null}}",
              10, 0, 0, 0 },
        };

        for (i = 0; i < sizeof(cached) / sizeof(cached[0]); i++) {
            for (n = 0; n < 2; n++) {
                p = new_pool();
                ngx_http_llm_usage_init(&u, p, cached[i].api, 0);
                len = strlen(cached[i].body);

                if (n == 0) {
                    (void) ngx_http_llm_usage_feed(&u,
                                            (u_char *) cached[i].body, len);
                } else {
                    (void) ngx_http_llm_usage_feed_whole(&u,
                                            (u_char *) cached[i].body, len);
                }

                ngx_http_llm_usage_finish(&u);
                ok(u.prompt_tokens == cached[i].prompt
                   && u.cache_read == cached[i].read
                   && u.cache_write == cached[i].written
                   && u.cache_write_1h == cached[i].hour,
                   "usage: cached parts %lu (%s): prompt %lu, read %lu, "
                   "written %lu, for an hour %lu", (unsigned long) i,
                   n ? "whole" : "lexer", (unsigned long) u.prompt_tokens,
                   (unsigned long) u.cache_read,
                   (unsigned long) u.cache_write,
                   (unsigned long) u.cache_write_1h);
                ngx_destroy_pool(p);
            }
        }
    }

    /*
     * a Responses API stream whose events name their type in their data
     * only: the .done events repeat their deltas' text, not counted again,
     * wherever the stream is cut; a "type" deeper in the data names
     * nothing
     */

    s = "data: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi \"}"
        "\n\n"
        "data: {\"type\":\"response.output_text.delta\",\"delta\":\"there\"}"
        "\n\n"
        "data: {\"type\":\"response.output_text.done\",\"text\":\"Hi there\"}"
        "\n\n"
        "data: {\"type\":\"response.output_item.done\",\"item\":{\"type\":"
        "\"message\",\"content\":[{\"type\":\"output_text\",\"text\":"
        "\"Hi there\"}]}}\n\n"
        "data: {\"type\":\"response.\\u0064one\",\"text\":\"abc\"}\n\n";
    check_stream("responses sse, types in the data", API_OPENAI, 1, s, 0, 0,
                 8, "", 1);

    /*
     * the same with "type" last, as a proxy writes out the OpenAI SDK's
     * objects (their keys in alphabetical order): the stream is the
     * Responses API's from its first event on, and only its "delta"
     * strings count
     */

    s = "data: {\"response\":{\"id\":\"r\",\"output\":[],\"text\":"
        "{\"format\":{\"type\":\"text\"}}},\"type\":\"response.created\"}"
        "\n\n"
        "data: {\"delta\":\"Hi \",\"type\":\"response.output_text.delta\"}"
        "\n\n"
        "data: {\"delta\":\"there\",\"type\":\"response.output_text.delta\"}"
        "\n\n"
        "data: {\"text\":\"Hi there\",\"type\":\"response.output_text.done\"}"
        "\n\n"
        "data: {\"item\":{\"content\":[{\"text\":\"Hi there\",\"type\":"
        "\"output_text\"}],\"type\":\"message\"},\"type\":"
        "\"response.output_item.done\"}\n\n";
    check_stream("responses sse, types last", API_OPENAI, 1, s, 0, 0, 8, "",
                 1);

    /* the cache's counts alone, before any input_tokens: not an input */

    s = "{\"usage\":{\"cache_read_input_tokens\":50,\"output_tokens\":3}}";
    observe(API_ANTHROPIC, 0, s, strlen(s), NULL, 0, &r);
    ok(r.found && r.prompt == 0 && r.completion == 3,
       "usage: cache counts without input_tokens name no input (%lu)",
       (unsigned long) r.prompt);

    /*
     * a Gemini JSON array in one buffer whose usage came in its first
     * chunk only: read by the lexer, so the text after it counts and
     * the usage is not final (the tape's walk counts no text)
     */

    s = "[{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}],"
        "\"usageMetadata\":{\"promptTokenCount\":5,"
        "\"candidatesTokenCount\":1,\"totalTokenCount\":6}},"
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":"
        "\"and then a long answer after the usage\"}]}}]}]";
    p = new_pool();
    ngx_http_llm_usage_init(&u, p, API_GEMINI, 0);
    (void) ngx_http_llm_usage_feed_whole(&u, (u_char *) s, strlen(s));
    ok(u.streamed_chars == 39 && !ngx_http_llm_usage_final(&u),
       "gemini array in one buffer: %lu chars after its usage, final %lu",
       (unsigned long) u.streamed_chars,
       (unsigned long) ngx_http_llm_usage_final(&u));
    ngx_destroy_pool(p);

    /*
     * a Gemini JSON object (generateContent) is a whole answer: a usage
     * before its text is final whether the body comes in one buffer (the
     * tape) or in pieces (the lexer)
     */

    s = "{\"usageMetadata\":{\"promptTokenCount\":5,"
        "\"candidatesTokenCount\":3},\"candidates\":[{\"content\":"
        "{\"parts\":[{\"text\":\"and then a long answer\"}]}}]}";

    for (n = 0; n < 2; n++) {
        p = new_pool();
        ngx_http_llm_usage_init(&u, p, API_GEMINI, 0);
        len = strlen(s);

        if (n == 0) {
            (void) ngx_http_llm_usage_feed_whole(&u, (u_char *) s, len);

        } else {
            (void) ngx_http_llm_usage_feed(&u, (u_char *) s, 20);
            (void) ngx_http_llm_usage_feed(&u, (u_char *) s + 20, len - 20);
        }

        ngx_http_llm_usage_finish(&u);
        ok(u.completion_tokens == 3 && ngx_http_llm_usage_final(&u),
           "gemini object, usage first (%s): completion %lu, final %lu",
           n ? "pieces" : "whole", (unsigned long) u.completion_tokens,
           (unsigned long) ngx_http_llm_usage_final(&u));
        ngx_destroy_pool(p);
    }

    /* an Anthropic JSON answer in one buffer still takes the tape */

    p = new_pool();
    ngx_http_llm_usage_init(&u, p, API_ANTHROPIC, 0);
    (void) ngx_http_llm_usage_feed_whole(&u, (u_char *) anthropic_json,
                                         strlen(anthropic_json));
    ok(u.finished && !u.fed && u.prompt_tokens == 17,
       "anthropic json in one buffer: read as a tape, prompt %lu",
       (unsigned long) u.prompt_tokens);
    ngx_destroy_pool(p);

    /* nothing after finish */

    p = new_pool();
    ngx_http_llm_usage_init(&u, p, API_OPENAI, 0);
    (void) ngx_http_llm_usage_feed(&u, (u_char *) openai_json,
                                   strlen(openai_json));
    ngx_http_llm_usage_finish(&u);
    (void) ngx_http_llm_usage_feed(&u, (u_char *) openai_json, 20);
    ok(u.found && u.prompt_tokens == 10, "finish: results kept");
    ngx_destroy_pool(p);
}


/* ------------------------------------------------------------- bench */


/* the estimator on a few samples, in the scripts they are written in */

static void
bench_samples(void)
{
    size_t        len;
    u_char       *text;
    uint64_t      t;
    ngx_uint_t    i, k, iters;
    char          path[256];

    ngx_http_llm_estimate_t  e;

    static const char  *names[] = { "en_prose.txt", "code_py.py",
                                    "fr_de.txt", "ru.txt", "ko.txt",
                                    "zh.txt", "ja.txt", NULL };

    for (k = 0; names[k]; k++) {
        snprintf(path, sizeof(path), "t/unit/samples/%s", names[k]);

        text = read_file(path, &len);
        if (text == NULL || len == 0) {
            free(text);
            continue;
        }

        iters = 2000000 / len + 1;
        t = now_ns();

        for (i = 0; i < iters; i++) {
            ngx_http_llm_estimate_init(&e);
            ngx_http_llm_estimate_add(&e, text, len);
        }

        t = now_ns() - t;

        printf("estimate %-12s %6lu bytes: %5lu ns per KB\n", names[k],
               (unsigned long) len,
               (unsigned long) (t / iters * 1024 / len));

        free(text);
    }
}


/*
 * The bench's chat body (about 2 KB, 11 messages) into "body" (4 KB);
 * its length.  "prompts" gets the messages' texts.
 */

#define CHAT_MESSAGES  11

static size_t
chat_body(char *body, const char **prompts)
{
    size_t  blen, i, k;

    static const char  *system = "You are a precise assistant for "
        "infrastructure engineers. Answer in short paragraphs, and say "
        "when you are unsure.";

    static const char  *turns[] = {
        "Can you explain how a sliding window rate limiter works, and why "
        "it is better than a fixed window for an API gateway?",
        "A sliding window counts requests over the last N seconds rather "
        "than in calendar-aligned buckets. With a fixed window, a client "
        "can send a full quota at the end of one window and another at the "
        "start of the next, doubling the burst. A sliding window smooths "
        "that by weighting the previous bucket.",
        "How would you store the counters when there are several nginx "
        "nodes behind a load balancer?",
        "Keep them in a shared store such as Redis, keyed by account and "
        "window, and update them with an atomic script so that the check "
        "and the increment cannot interleave between nodes.",
        "What happens if Redis is slow or unreachable? I do not want the "
        "gateway to block requests for seconds.",
    };

    blen = sprintf(body, "{\"model\":\"gpt-4o-mini\",\"temperature\":0.2,"
                   "\"max_tokens\":512,\"stream\":true,\"messages\":["
                   "{\"role\":\"system\",\"content\":\"%s\"}", system);

    prompts[0] = system;

    for (k = 0; k < 2; k++) {
        for (i = 0; i < 5; i++) {
            blen += sprintf(body + blen, ",{\"role\":\"%s\",\"content\":"
                            "\"%s\"}", (i % 2) ? "assistant" : "user",
                            turns[i]);
            prompts[1 + k * 5 + i] = turns[i];
        }
    }

    blen += sprintf(body + blen, "]}");

    return blen;
}


static void
bench(void)
{
    char          *sse, *body;
    size_t         len, blen, i, k;
    uint64_t       t;
    ngx_str_t      err;
    ngx_uint_t     iters, tokens;
    ngx_pool_t    *p;
    const char    *prompts[CHAT_MESSAGES];

    ngx_http_llm_jtok_t          tok[512];
    ngx_http_llm_jtape_t         tape;
    ngx_http_llm_usage_t         u;
    ngx_http_llm_request_info_t  info;
    ngx_http_llm_estimate_t      e;

    /* a realistic chat body of about 2 KB */

    body = malloc(4096);
    if (body == NULL) {
        exit(2);
    }

    blen = chat_body(body, prompts);

    p = new_pool();
    iters = 20000;

    t = now_ns();

    for (i = 0; i < iters; i++) {
        if (ngx_http_llm_json_parse_request(p, API_OPENAI, (u_char *) body,
                                            blen, &info, NULL, &err)
            != NGX_OK)
        {
            fprintf(stderr, "bench body refused\n");
            exit(2);
        }

        ngx_reset_pool(p);
    }

    t = now_ns() - t;

    printf("parse_request: %lu-byte chat body, %lu messages, %lu tokens: "
           "%lu ns per call\n", (unsigned long) blen,
           (unsigned long) info.messages,
           (unsigned long) ngx_http_llm_estimate_tokens(&info.estimate),
           (unsigned long) (t / iters));

    t = now_ns();

    for (i = 0; i < iters; i++) {
        ngx_memzero(&tape, sizeof(ngx_http_llm_jtape_t));
        tape.tok = tok;
        tape.nalloc = 512;

        if (ngx_http_llm_jtape_parse(&tape, p, (u_char *) body, blen, 64,
                                     &err)
            != NGX_OK)
        {
            fprintf(stderr, "bench body refused by the tape\n");
            exit(2);
        }

        tokens = tape.ntok;

        ngx_http_llm_jtape_free(&tape);
        ngx_reset_pool(p);
    }

    t = now_ns() - t;

    printf("  of which the tape (checks the JSON, %lu tokens): %lu ns\n",
           (unsigned long) tokens, (unsigned long) (t / iters));

    t = now_ns();

    for (i = 0; i < iters; i++) {
        ngx_http_llm_estimate_init(&e);

        for (k = 0; k < CHAT_MESSAGES; k++) {
            ngx_http_llm_estimate_add(&e, (u_char *) prompts[k],
                                      strlen(prompts[k]));
        }

        tokens = ngx_http_llm_estimate_tokens(&e);
    }

    t = now_ns() - t;

    for (len = 0, k = 0; k < CHAT_MESSAGES; k++) {
        len += strlen(prompts[k]);
    }

    printf("  of which the estimate of its %lu bytes of text: %lu ns\n",
           (unsigned long) len, (unsigned long) (t / iters));

    t = now_ns();

    for (i = 0; i < iters; i++) {
        json_decref(json_loadb(body, blen, 0, NULL));
    }

    t = now_ns() - t;

    printf("  for comparison, jansson's json_loadb() + json_decref() "
           "of that body: %lu ns\n",
           (unsigned long) (t / iters));

    t = now_ns();

    for (i = 0; i < iters; i++) {
        ngx_http_llm_estimate_init(&e);
        ngx_http_llm_estimate_add(&e, (u_char *) body, blen);
        tokens = ngx_http_llm_estimate_tokens(&e);
    }

    t = now_ns() - t;

    printf("estimate alone over the same bytes: %lu ns (%lu ns per KB), "
           "%lu tokens\n", (unsigned long) (t / iters),
           (unsigned long) (t / iters * 1024 / blen), (unsigned long) tokens);

    bench_samples();

    ngx_destroy_pool(p);
    free(body);

    /* an OpenAI stream with include_usage: "usage":null in every chunk */

    sse = malloc(1024 * 1024 + 4096);
    if (sse == NULL) {
        exit(2);
    }

    for (len = 0; len < 1024 * 1024; /* void */) {
        len += sprintf(sse + len, "data: {\"id\":\"chatcmpl-9x\",\"object\":"
                       "\"chat.completion.chunk\",\"created\":1718036481,"
                       "\"model\":\"gpt-4o-mini\",\"system_fingerprint\":"
                       "\"fp_0ba0d124f1\",\"choices\":[{\"index\":0,"
                       "\"delta\":{\"content\":\" window%lu\"},"
                       "\"logprobs\":null,\"finish_reason\":null}],"
                       "\"usage\":null}\n\n", (unsigned long) (len % 97));
    }

    len += sprintf(sse + len, "data: {\"choices\":[],\"usage\":"
                   "{\"prompt_tokens\":100,\"completion_tokens\":2000}}\n\n"
                   "data: [DONE]\n\n");

    for (k = 0; k < 2; k++) {
        size_t  piece = k ? 256 : 4096;

        iters = 20;
        t = now_ns();

        for (i = 0; i < iters; i++) {
            size_t  off;

            p = new_pool();
            ngx_http_llm_usage_init(&u, p, API_OPENAI, 1);

            for (off = 0; off < len; off += piece) {
                (void) ngx_http_llm_usage_feed(&u, (u_char *) sse + off,
                                               ngx_min(piece, len - off));
            }

            ngx_http_llm_usage_finish(&u);
            ngx_destroy_pool(p);
        }

        t = now_ns() - t;

        printf("usage_feed: %lu KB OpenAI SSE in %lu-byte pieces: %lu ns "
               "per KB (found %lu, %lu chars)\n",
               (unsigned long) (len / 1024), (unsigned long) piece,
               (unsigned long) (t / iters / (len / 1024)),
               (unsigned long) u.found, (unsigned long) u.streamed_chars);
    }

    /* for comparison: jansson on every data payload of the same stream */

    iters = 10;
    t = now_ns();

    for (i = 0; i < iters; i++) {
        char  *line, *end;

        for (line = sse; line < sse + len; line = end + 2) {
            end = strstr(line, "\n\n");
            json_decref(json_loadb(line + 6, end - line - 6, 0, NULL));
        }
    }

    t = now_ns() - t;

    printf("  for comparison, json_loadb() of every data payload: %lu ns "
           "per KB\n", (unsigned long) (t / iters / (len / 1024)));

    /* the worst case: a usage object in every chunk (vLLM continuous) */

    for (len = 0; len < 1024 * 1024; /* void */) {
        len += sprintf(sse + len, "data: {\"id\":\"cmpl-1\",\"model\":"
                       "\"llama\",\"choices\":[{\"index\":0,\"delta\":"
                       "{\"content\":\" tok\"}}],\"usage\":"
                       "{\"prompt_tokens\":100,\"completion_tokens\":%lu,"
                       "\"total_tokens\":%lu}}\n\n",
                       (unsigned long) len / 200,
                       (unsigned long) len / 200 + 100);
    }

    iters = 10;
    t = now_ns();

    for (i = 0; i < iters; i++) {
        p = new_pool();
        ngx_http_llm_usage_init(&u, p, API_OPENAI, 1);

        for (k = 0; k < len; k += 4096) {
            (void) ngx_http_llm_usage_feed(&u, (u_char *) sse + k,
                                           ngx_min(4096, len - k));
        }

        ngx_http_llm_usage_finish(&u);
        ngx_destroy_pool(p);
    }

    t = now_ns() - t;

    printf("usage_feed: %lu KB SSE with usage in every chunk: %lu ns "
           "per KB\n", (unsigned long) (len / 1024),
           (unsigned long) (t / iters / (len / 1024)));

    free(sse);

    /* a whole JSON answer, as the bench's mock sends it */

    len = strlen(mock_json);
    iters = getenv("LLM_UNIT_ITERS") ? atoi(getenv("LLM_UNIT_ITERS"))
                                     : 200000;
    t = now_ns();

    for (i = 0; i < iters; i++) {
        p = new_pool();
        ngx_http_llm_usage_init(&u, p, API_OPENAI, 0);
        (void) ngx_http_llm_usage_feed(&u, (u_char *) mock_json, len);
        u.whole = 1;
        ngx_http_llm_usage_finish(&u);
        ngx_destroy_pool(p);
    }

    t = now_ns() - t;

    printf("usage_feed: a %lu-byte JSON answer: %lu ns (found %lu)\n",
           (unsigned long) len, (unsigned long) (t / iters),
           (unsigned long) u.found);

    /* the same answer whole in one buffer, as the gateway reads it */

    t = now_ns();

    for (i = 0; i < iters; i++) {
        p = new_pool();
        ngx_http_llm_usage_init(&u, p, API_OPENAI, 0);
        (void) ngx_http_llm_usage_feed_whole(&u, (u_char *) mock_json, len);
        u.whole = 1;
        ngx_http_llm_usage_finish(&u);
        ngx_destroy_pool(p);
    }

    t = now_ns() - t;

    printf("usage_feed_whole: the same answer in one buffer: %lu ns "
           "(found %lu)\n", (unsigned long) (t / iters),
           (unsigned long) u.found);
}


static void
estimate_files(int argc, char **argv)
{
    int                       i;
    size_t                    len;
    u_char                   *buf;
    ngx_http_llm_estimate_t   e;

    for (i = 2; i < argc; i++) {
        buf = read_file(argv[i], &len);
        if (buf == NULL) {
            fprintf(stderr, "cannot read %s\n", argv[i]);
            exit(2);
        }

        ngx_http_llm_estimate_init(&e);
        ngx_http_llm_estimate_add(&e, buf, len);
        free(buf);

        printf("%s %lu %lu words=%lu long=%lu humps=%lu mixed=%lu "
               "accented=%lu marks=%lu runs=%lu alphabetic=%lu abjad=%lu "
               "complex=%lu han=%lu kana=%lu hangul=%lu wide=%lu rare=%lu "
               "digits=%lu puncts=%lu long_puncts=%lu symbols=%lu "
               "emoji=%lu joiners=%lu spaces=%lu invalid=%lu\n",
               strrchr(argv[i], '/') ? strrchr(argv[i], '/') + 1 : argv[i],
               (unsigned long) ngx_http_llm_estimate_tokens(&e),
               (unsigned long) e.chars, (unsigned long) e.words,
               (unsigned long) e.long_letters, (unsigned long) e.humps,
               (unsigned long) e.mixed, (unsigned long) e.accented,
               (unsigned long) e.marks, (unsigned long) e.runs,
               (unsigned long) e.alphabetic, (unsigned long) e.abjad,
               (unsigned long) e.complex, (unsigned long) e.han,
               (unsigned long) e.kana, (unsigned long) e.hangul,
               (unsigned long) e.wide, (unsigned long) e.rare,
               (unsigned long) e.digits, (unsigned long) e.puncts,
               (unsigned long) e.long_puncts, (unsigned long) e.symbols,
               (unsigned long) e.emoji, (unsigned long) e.joiners,
               (unsigned long) e.spaces, (unsigned long) e.invalid);
    }
}


int
main(int argc, char **argv)
{
    const char  *samples;
    ngx_uint_t   best, level;

    ngx_pagesize = getpagesize();

    unit_log.log_level = NGX_LOG_EMERG;

    pool = new_pool();

    ngx_http_llm_simd_init();

    if (argc > 1 && strcmp(argv[1], "bench") == 0) {
        bench();
        return 0;
    }

    if (argc > 1 && strcmp(argv[1], "chat-body") == 0) {
        char        buf[4096];
        const char  *prompts[CHAT_MESSAGES];

        fwrite(buf, 1, chat_body(buf, prompts), stdout);
        return 0;
    }

    if (argc > 1 && strcmp(argv[1], "estimate") == 0) {
        estimate_files(argc, argv);
        return 0;
    }

    samples = (argc > 1) ? argv[1] : "t/unit/samples";

    best = ngx_http_llm_simd_best();

    for (level = NGX_HTTP_LLM_SIMD_NONE; level <= best; level++) {
        ngx_http_llm_simd = level;

        test_utf8();
        test_estimate();
        test_estimate_ascii(samples);
        test_samples(samples);
        test_openai();
        test_anthropic();
        test_gemini();
        test_bad_requests();
        test_include_usage();
        test_usage();
        test_generated(samples);
    }

    printf("1..%lu\n", (unsigned long) tests);

    if (failed) {
        printf("# %lu of %lu failed\n", (unsigned long) failed,
               (unsigned long) tests);
    }

    ngx_destroy_pool(pool);

    return failed ? 1 : 0;
}
