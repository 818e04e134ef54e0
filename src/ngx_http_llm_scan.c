
/*
 * ngx_llm_gateway: the response observer.
 *
 * Owns reading what a backend reports in its answer, as the bytes pass
 * on to the client: the usage object (OpenAI "usage", Anthropic
 * message_start/message_delta "usage", Gemini "usageMetadata"), the
 * model, and the generated text (counted, for when no usage comes
 * back), in JSON bodies and SSE streams, on any split of the bytes.
 * The usage object alone is read whole, with the request's tape
 * (ngx_http_llm_jtape.c), whose memory the next usage object reuses.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_llm_json.h"
#include "ngx_http_llm_jtape.h"
#include "ngx_http_llm_simd.h"


/* a token count above this in a response is not believed */
#define NGX_HTTP_LLM_USAGE_MAX      ((int64_t) 1 << 40)

/*
 * a "model" or a usage counts in the document's object or one of its
 * (Anthropic's "message", the Responses API's "response", an element
 * of Gemini's array stream), not deeper, where an answer's generated
 * content is (a tool call's arguments naming a "model" of their own)
 */
#define NGX_HTTP_LLM_USAGE_NEST     2

/* what a key in a response announces */
#define NGX_HTTP_LLM_KEY_OTHER      0
#define NGX_HTTP_LLM_KEY_TEXT       1     /* generated text */
#define NGX_HTTP_LLM_KEY_USAGE      2     /* a usage object */
#define NGX_HTTP_LLM_KEY_MODEL      3
#define NGX_HTTP_LLM_KEY_TYPE       4     /* an SSE event's, in its data */
#define NGX_HTTP_LLM_KEY_DELTA      5     /* generated text, new in a
                                             Responses API stream */
#define NGX_HTTP_LLM_KEY_CALL       6     /* a tool call's arguments as
                                             an object: generated */

/* the string being read in a response */
#define NGX_HTTP_LLM_STR_KEY        0     /* perhaps a key, kept */
#define NGX_HTTP_LLM_STR_OTHER      1
#define NGX_HTTP_LLM_STR_TEXT       2     /* counted */
#define NGX_HTTP_LLM_STR_MODEL      3     /* kept as the model */
#define NGX_HTTP_LLM_STR_TYPE       4     /* kept as the event's name */

/* where an SSE line is */
#define NGX_HTTP_LLM_SSE_START      0
#define NGX_HTTP_LLM_SSE_FIELD      1
#define NGX_HTTP_LLM_SSE_SPACE      2     /* after "data:" */
#define NGX_HTTP_LLM_SSE_DATA       3
#define NGX_HTTP_LLM_SSE_SKIP       4     /* not a data line */
#define NGX_HTTP_LLM_SSE_NAME       5     /* an "event:" line's value */

/* an SSE line's field name, as far as it matched */
#define NGX_HTTP_LLM_SSE_F_E        10    /* + the characters of "event" */
#define NGX_HTTP_LLM_SSE_F_EVENT    15
#define NGX_HTTP_LLM_SSE_F_OTHER    20


typedef struct {
    ngx_str_t                   name;
    ngx_uint_t                  kind;
} ngx_http_llm_json_key_t;


static ngx_int_t ngx_http_llm_usage_sse(ngx_http_llm_usage_t *u, u_char *p,
    u_char *last);
static ngx_int_t ngx_http_llm_usage_lex(ngx_http_llm_usage_t *u, u_char *p,
    u_char *last);
static ngx_int_t ngx_http_llm_usage_keep(ngx_http_llm_usage_t *u, u_char *p,
    size_t len);
static void ngx_http_llm_usage_reset(ngx_http_llm_usage_t *u);
static void ngx_http_llm_usage_name(ngx_http_llm_usage_t *u);
static void ngx_http_llm_usage_code(ngx_http_llm_usage_t *u);
static void ngx_http_llm_usage_char(ngx_http_llm_usage_t *u, u_char c);
static void ngx_http_llm_usage_text(ngx_http_llm_usage_t *u, u_char *p,
    size_t len);
static void ngx_http_llm_usage_lone(ngx_http_llm_usage_t *u);
static void ngx_http_llm_usage_flush(ngx_http_llm_usage_t *u);
static ngx_uint_t ngx_http_llm_usage_key(u_char *key, size_t len);
static ngx_int_t ngx_http_llm_usage_walk(ngx_http_llm_usage_t *u,
    ngx_uint_t v, ngx_uint_t in_usage, ngx_uint_t nest);
static void ngx_http_llm_usage_read(ngx_http_llm_usage_t *u);
static void ngx_http_llm_usage_object(ngx_http_llm_usage_t *u,
    ngx_http_llm_jtape_t *t, ngx_uint_t obj);
static ngx_int_t ngx_http_llm_usage_count(ngx_http_llm_jtape_t *t,
    ngx_uint_t v, ngx_uint_t *n);
static ngx_uint_t ngx_http_llm_usage_cached(ngx_http_llm_jtape_t *t,
    ngx_uint_t obj);


/* keys whose values a response observer looks at */
static ngx_http_llm_json_key_t  ngx_http_llm_json_keys[] = {
    { ngx_string("content"), NGX_HTTP_LLM_KEY_TEXT },
    { ngx_string("text"), NGX_HTTP_LLM_KEY_TEXT },
    { ngx_string("arguments"), NGX_HTTP_LLM_KEY_TEXT },
    { ngx_string("partial_json"), NGX_HTTP_LLM_KEY_TEXT },
    { ngx_string("args"), NGX_HTTP_LLM_KEY_CALL },       /* Gemini's */
    { ngx_string("input"), NGX_HTTP_LLM_KEY_CALL },      /* Anthropic's */
    { ngx_string("thinking"), NGX_HTTP_LLM_KEY_TEXT },
    { ngx_string("reasoning"), NGX_HTTP_LLM_KEY_TEXT },
    { ngx_string("reasoning_content"), NGX_HTTP_LLM_KEY_TEXT },
    { ngx_string("refusal"), NGX_HTTP_LLM_KEY_TEXT },
    { ngx_string("transcript"), NGX_HTTP_LLM_KEY_TEXT },  /* audio out */
    { ngx_string("delta"), NGX_HTTP_LLM_KEY_DELTA },  /* responses events */
    { ngx_string("usage"), NGX_HTTP_LLM_KEY_USAGE },
    { ngx_string("usageMetadata"), NGX_HTTP_LLM_KEY_USAGE },
    { ngx_string("model"), NGX_HTTP_LLM_KEY_MODEL },
    { ngx_string("modelVersion"), NGX_HTTP_LLM_KEY_MODEL },
    { ngx_string("type"), NGX_HTTP_LLM_KEY_TYPE },
    { ngx_null_string, 0 }
};


/*
 * The response observer.
 *
 * A small incremental JSON lexer reads the body (JSON) or the payload of
 * every "data:" line (SSE, events joined and reset the way the SSE
 * specification says).  It knows when a string is a key, and looks at
 * the values of a few keys: the code points of generated text are
 * counted ("content", "text", ...), the first "model" is kept, and the
 * bytes of a "usage"/"usageMetadata" object are kept until it closes,
 * then read whole (a tape).  Nothing else is held, so neither a long
 * body nor a long line costs memory, and output is never delayed.
 */

void
ngx_http_llm_usage_init(ngx_http_llm_usage_t *u, ngx_pool_t *pool,
    ngx_uint_t api, ngx_uint_t sse)
{
    /*
     * a usage object, or a body whole, is read at once and forgotten:
     * the tape's first tokens are the worker's
     */

    static ngx_http_llm_jtok_t  tok[128];

    ngx_memzero(u, offsetof(ngx_http_llm_usage_t, text));
    ngx_http_llm_estimate_init(&u->generated);

    u->pool = pool;
    u->api = api;
    u->tape.tok = tok;
    u->tape.nalloc = sizeof(tok) / sizeof(ngx_http_llm_jtok_t);
    u->sse = sse ? 1 : 0;
}


/* after an allocation error the observer stops and says so once */

ngx_int_t
ngx_http_llm_usage_feed(ngx_http_llm_usage_t *u, u_char *p, size_t len)
{
    ngx_int_t  rc;

    if (u->finished) {
        return NGX_OK;
    }

    u->fed = 1;

    if (u->sse) {
        rc = ngx_http_llm_usage_sse(u, p, p + len);

    } else {
        rc = ngx_http_llm_usage_lex(u, p, p + len);
    }

    if (rc != NGX_OK) {
        u->finished = 1;
    }

    return rc;
}


/*
 * A whole JSON body: its tape, and a walk that reads what the lexer
 * would: the first string value of a "model" key, every object value of
 * a "usage" key (not one inside another), in the document or in an
 * object of its (NGX_HTTP_LLM_USAGE_NEST).  A body the tape refuses,
 * an array, or one without a usage goes to the lexer.  A body no larger
 * than a usage object's cap cannot have a usage object the lexer would
 * drop.
 */

ngx_int_t
ngx_http_llm_usage_feed_whole(ngx_http_llm_usage_t *u, u_char *p,
    size_t len)
{
    ngx_int_t  rc;

    if (u->finished || u->fed || u->sse || len > NGX_HTTP_LLM_USAGE_CAP) {
        return ngx_http_llm_usage_feed(u, p, len);
    }

    rc = ngx_http_llm_jtape_parse(&u->tape, u->pool, p, len,
                                  NGX_HTTP_LLM_JSON_DEPTH, NULL);

    /*
     * a JSON array is a Gemini stream (streamGenerateContent without
     * alt=sse): the lexer counts its text, which may follow its usage
     */

    if (rc == NGX_OK && u->tape.tok[1].type == NGX_HTTP_LLM_JT_OBJECT) {
        rc = ngx_http_llm_usage_walk(u, 1, 0, 1);

        if (rc == NGX_OK && ngx_http_llm_usage_final(u)) {
            u->finished = 1;
            return NGX_OK;
        }
    }

    if (rc == NGX_ERROR) {
        u->finished = 1;
        return NGX_ERROR;
    }

    /* no usage, or no output's: the lexer reads it all, the text too */

    u->found = 0;
    u->told_in = 0;
    u->told_out = 0;
    u->told_input = 0;
    u->objects = 0;
    u->prompt_tokens = 0;
    u->completion_tokens = 0;
    ngx_memzero(u->input, sizeof(u->input));
    u->cache_read = 0;
    u->cache_write = 0;
    u->cache_write_1h = 0;
    ngx_str_null(&u->model);

    return ngx_http_llm_usage_feed(u, p, len);
}


static ngx_int_t
ngx_http_llm_usage_walk(ngx_http_llm_usage_t *u, ngx_uint_t v,
    ngx_uint_t in_usage, ngx_uint_t nest)
{
    u_char                 c;
    ngx_str_t              s;
    ngx_uint_t             i, kind;
    ngx_http_llm_jtok_t   *k;
    ngx_http_llm_jtape_t  *t;

    t = &u->tape;

    if (t->tok[v].type == NGX_HTTP_LLM_JT_ARRAY) {
        for (i = ngx_http_llm_jt_first(t, v); i;
             i = ngx_http_llm_jt_next(t, v, i))
        {
            if (t->tok[i].type <= NGX_HTTP_LLM_JT_ARRAY
                && ngx_http_llm_usage_walk(u, i, in_usage, nest + 1)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        return NGX_OK;
    }

    if (t->tok[v].type != NGX_HTTP_LLM_JT_OBJECT) {
        return NGX_OK;
    }

    for (i = v + 1; i < t->tok[v].next; i = t->tok[i + 1].next) {
        k = &t->tok[i];

        /*
         * only "usage", "usageMetadata", "model" and "modelVersion" matter
         * here; the lexer sees no key in one with an escape
         */

        c = t->base[k->start];

        kind = ((c == 'u' || c == 'm') && k->len >= 5 && k->len <= 13
                && !(k->flags & NGX_HTTP_LLM_JT_ESCAPED)
                && nest <= NGX_HTTP_LLM_USAGE_NEST)
               ? ngx_http_llm_usage_key(t->base + k->start, k->len)
               : NGX_HTTP_LLM_KEY_OTHER;

        k = &t->tok[i + 1];

        if (kind == NGX_HTTP_LLM_KEY_USAGE && !in_usage
            && k->type == NGX_HTTP_LLM_JT_OBJECT)
        {
            ngx_http_llm_usage_object(u, t, i + 1);

            if (ngx_http_llm_usage_walk(u, i + 1, 1, nest + 1) != NGX_OK) {
                return NGX_ERROR;
            }

            continue;
        }

        if (kind == NGX_HTTP_LLM_KEY_MODEL && u->model.data == NULL
            && k->type == NGX_HTTP_LLM_JT_STRING
            && !(k->flags & NGX_HTTP_LLM_JT_ESCAPED)
            && k->len && k->len <= NGX_HTTP_LLM_MODEL_MAX)
        {
            s.len = k->len;
            s.data = ngx_pnalloc(u->pool, s.len);
            if (s.data == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(s.data, t->base + k->start, s.len);
            u->model = s;
            continue;
        }

        if (k->type <= NGX_HTTP_LLM_JT_ARRAY
            && ngx_http_llm_usage_walk(u, i + 1, in_usage, nest + 1)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* where an SSE line ends: its '\n' or '\r' (a line is long, a '\r' rare) */

static ngx_inline u_char *
ngx_http_llm_usage_eol(u_char *p, u_char *last)
{
    u_char  *lf, *cr;

    lf = memchr(p, '\n', last - p);

    if (lf == NULL) {
        lf = last;
    }

    cr = memchr(p, '\r', lf - p);

    return cr ? cr : lf;
}


/* SSE lines: the payloads of "data:" lines go to the lexer */

static ngx_int_t
ngx_http_llm_usage_sse(ngx_http_llm_usage_t *u, u_char *p, u_char *last)
{
    u_char  *s, c;

    /* a UTF-8 BOM that opens the stream is not its first line's */

    while (!u->begun && p < last) {

        if (*p != (u_char) "\xef\xbb\xbf"[u->bom]) {
            u->begun = 1;

            if (u->bom) {
                /* a part of one starts a field that is neither */
                u->line = NGX_HTTP_LLM_SSE_FIELD;
                u->field = NGX_HTTP_LLM_SSE_F_OTHER;
            }

            break;
        }

        p++;

        if (++u->bom == 3) {
            u->begun = 1;
        }
    }

    while (p < last) {

        c = *p;

        if (u->cr) {
            u->cr = 0;

            if (c == '\n') {
                p++;
                continue;
            }
        }

        switch (u->line) {

        case NGX_HTTP_LLM_SSE_START:

            if (c == '\r' || c == '\n') {

                /* an empty line: the event ends */

                if (u->event) {
                    ngx_http_llm_usage_reset(u);
                    u->event = 0;
                }

                u->repeats = 0;

                goto eol;
            }

            if (c == ':') {
                u->line = NGX_HTTP_LLM_SSE_SKIP;    /* a comment */
                p++;
                continue;
            }

            u->line = NGX_HTTP_LLM_SSE_FIELD;
            u->field = 0;
            u->name_space = 0;

            /* fall through */

        case NGX_HTTP_LLM_SSE_FIELD:

            if (c == ':' || c == '\r' || c == '\n') {

                if (u->field == 4) {

                    /* "data": lines of one event are joined by '\n' */

                    if (u->event) {
                        if (ngx_http_llm_usage_lex(u, (u_char *) "\n",
                                                   (u_char *) "\n" + 1)
                            != NGX_OK)
                        {
                            return NGX_ERROR;
                        }
                    }

                    u->event = 1;

                    if (c == ':') {
                        u->line = NGX_HTTP_LLM_SSE_SPACE;
                        p++;
                        continue;
                    }

                    goto eol;
                }

                if (u->field == NGX_HTTP_LLM_SSE_F_EVENT) {

                    /* "event" alone names no event */

                    u->repeats = 0;

                    if (c == ':') {
                        u->line = NGX_HTTP_LLM_SSE_NAME;
                        u->name_len = 0;
                        p++;
                        continue;
                    }

                    goto eol;
                }

                if (c == ':') {
                    u->line = NGX_HTTP_LLM_SSE_SKIP;
                    p++;
                    continue;
                }

                goto eol;
            }

            /*
             * "data" matched as 1 to 4 characters, "event" as
             * NGX_HTTP_LLM_SSE_F_E + 1 to 5, any other field as _F_OTHER
             */

            if (u->field < 4 && c == "data"[u->field]) {
                u->field++;

            } else if (u->field == 0 && c == 'e') {
                u->field = NGX_HTTP_LLM_SSE_F_E + 1;

            } else if (u->field > NGX_HTTP_LLM_SSE_F_E
                       && u->field < NGX_HTTP_LLM_SSE_F_EVENT
                       && c == "event"[u->field - NGX_HTTP_LLM_SSE_F_E])
            {
                u->field++;

            } else {
                u->field = NGX_HTTP_LLM_SSE_F_OTHER;
            }

            p++;
            continue;

        case NGX_HTTP_LLM_SSE_NAME:

            /* the event's name, its first bytes (a leading ' ' dropped) */

            s = p;
            p = ngx_http_llm_usage_eol(p, last);

            for ( /* void */ ; s < p; s++) {
                if (u->name_len == 0 && *s == ' ' && !u->name_space) {
                    u->name_space = 1;
                    continue;
                }

                if (u->name_len < sizeof(u->name)) {
                    u->name[u->name_len] = *s;
                }

                u->name_len++;
            }

            if (p == last) {
                return NGX_OK;
            }

            ngx_http_llm_usage_name(u);

            c = *p;
            goto eol;

        case NGX_HTTP_LLM_SSE_SPACE:

            u->line = NGX_HTTP_LLM_SSE_DATA;

            if (c == ' ') {
                p++;
                continue;
            }

            /* fall through */

        case NGX_HTTP_LLM_SSE_DATA:

            s = p;
            p = ngx_http_llm_usage_eol(p, last);

            if (p > s && ngx_http_llm_usage_lex(u, s, p) != NGX_OK) {
                return NGX_ERROR;
            }

            if (p == last) {
                return NGX_OK;
            }

            c = *p;
            goto eol;

        default: /* NGX_HTTP_LLM_SSE_SKIP */

            p = ngx_http_llm_usage_eol(p, last);

            if (p == last) {
                return NGX_OK;
            }

            c = *p;
            goto eol;
        }

    eol:

        u->cr = (c == '\r');
        u->line = NGX_HTTP_LLM_SSE_START;
        p++;
    }

    return NGX_OK;
}


/*
 * An SSE event's name: its "event" line's, or the "type" of its data's
 * object (a proxy may send data lines alone).  Of the Responses API's
 * events ("response.*"), only those named "*.delta" carry new text: the
 * others repeat what their deltas said ("response.output_text.done", the
 * whole response in "response.completed"), and their text is not
 * counted again.  A "type" may come after the text, as a proxy that
 * writes out the OpenAI SDK's objects orders their keys: once a stream
 * is known to be the Responses API's (its first event,
 * "response.created", has no text), only its "delta" strings count.
 */

static void
ngx_http_llm_usage_name(ngx_http_llm_usage_t *u)
{
    size_t   n;
    u_char  *name;

    n = u->name_len;
    name = u->name;

    if (n > sizeof(u->name)
        || n < sizeof("response.") - 1
        || ngx_strncmp(name, "response.", sizeof("response.") - 1) != 0)
    {
        u->repeats = 0;
        return;
    }

    u->responses = 1;

    u->repeats = !(n >= sizeof(".delta") - 1
                   && ngx_strncmp(name + n - (sizeof(".delta") - 1),
                                  ".delta", sizeof(".delta") - 1)
                      == 0);
}


void
ngx_http_llm_usage_finish(ngx_http_llm_usage_t *u)
{
    /* a usage object cut short is not read */

    ngx_http_llm_usage_reset(u);

    /*
     * the generated text's estimate stands in for a usage not found, not
     * final, or told before the answer was cut short
     */

    if (!ngx_http_llm_usage_final(u) || !u->whole) {
        ngx_http_llm_usage_flush(u);
    }

    u->finished = 1;
}


static ngx_int_t
ngx_http_llm_usage_lex(ngx_http_llm_usage_t *u, u_char *p, u_char *last)
{
    u_char      *s, *cap, c;
    ngx_uint_t   n;

    /* the bytes of a usage object are kept a stretch at a time, from cap */

    cap = u->capturing ? p : NULL;

    while (p < last) {

        if (u->in_string) {

            if (u->escape) {
                c = *p++;

                if (u->role != NGX_HTTP_LLM_STR_TEXT) {
                    if (u->hex) {
                        u->hex--;

                    } else if (c == 'u') {
                        u->hex = 4;
                    }

                    u->escape = (u->hex != 0);
                    continue;
                }

                if (u->hex) {
                    u->code <<= 4;

                    if (c >= '0' && c <= '9') {
                        u->code |= c - '0';

                    } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
                        u->code |= (c | 0x20) - 'a' + 10;
                    }

                    if (--u->hex == 0) {
                        u->escape = 0;
                        ngx_http_llm_usage_code(u);
                    }

                    continue;
                }

                if (c == 'u') {
                    u->hex = 4;
                    u->code = 0;
                    continue;
                }

                u->escape = 0;

                switch (c) {

                case 'b':
                    c = '\b';
                    break;

                case 'f':
                    c = '\f';
                    break;

                case 'n':
                    c = '\n';
                    break;

                case 'r':
                    c = '\r';
                    break;

                case 't':
                    c = '\t';
                    break;

                default: /* " \ / */
                    break;
                }

                ngx_http_llm_usage_char(u, c);

                continue;
            }

            s = p;

            n = 0;
            p = ngx_http_llm_simd_quote(p, last, &n);

            if (u->role == NGX_HTTP_LLM_STR_TEXT) {
                u->streamed_chars += n;
                ngx_http_llm_usage_text(u, s, p - s);
            }

            n = p - s;

            if (n) {
                if (u->role == NGX_HTTP_LLM_STR_KEY) {

                    /* a key whole here is read here, at its quote */

                    if (u->key_len == 0 && p < last && *p == '"') {
                        /* void */

                    } else if (u->key_len + n <= sizeof(u->key)) {
                        ngx_memcpy(u->key + u->key_len, s, n);
                        u->key_len += n;

                    } else {
                        u->key_len = sizeof(u->key) + 1;
                    }

                } else if (u->role == NGX_HTTP_LLM_STR_MODEL) {
                    if (u->model.len + n <= NGX_HTTP_LLM_MODEL_MAX) {
                        ngx_memcpy(u->model_buf + u->model.len, s, n);
                        u->model.len += n;

                    } else {
                        u->model.len = 0;
                        u->role = NGX_HTTP_LLM_STR_OTHER;
                    }

                } else if (u->role == NGX_HTTP_LLM_STR_TYPE) {
                    if (u->name_len + n <= sizeof(u->name)) {
                        ngx_memcpy(u->name + u->name_len, s, n);
                    }

                    u->name_len += n;
                }
            }

            if (p == last) {
                break;
            }

            c = *p++;

            if (c == '\\') {
                u->escape = 1;

                if (u->role == NGX_HTTP_LLM_STR_KEY) {
                    u->key_len = sizeof(u->key) + 1;

                } else if (u->role == NGX_HTTP_LLM_STR_MODEL) {
                    u->model.len = 0;
                    u->role = NGX_HTTP_LLM_STR_OTHER;

                } else if (u->role == NGX_HTTP_LLM_STR_TYPE) {
                    u->name_len = sizeof(u->name) + 1;
                }

                continue;
            }

            /* the closing quote */

            u->in_string = 0;

            if (u->role == NGX_HTTP_LLM_STR_TEXT) {
                ngx_http_llm_usage_lone(u);

            } else if (u->role == NGX_HTTP_LLM_STR_KEY) {
                u->maybe_key = 1;

                if (u->key_len == 0) {
                    u->key_kind = ngx_http_llm_usage_key(s, p - 1 - s);

                } else {
                    u->key_kind = (u->key_len <= sizeof(u->key))
                                  ? ngx_http_llm_usage_key(u->key,
                                                           u->key_len)
                                  : NGX_HTTP_LLM_KEY_OTHER;
                }

            } else if (u->role == NGX_HTTP_LLM_STR_MODEL && u->model.len) {
                u->model.data = u->model_buf;

            } else if (u->role == NGX_HTTP_LLM_STR_TYPE) {
                ngx_http_llm_usage_name(u);
            }

            continue;
        }

        c = *p++;

        switch (c) {

        case ' ':
        case '\t':
        case '\r':
        case '\n':
            continue;

        case '"':
            u->in_string = 1;
            u->role = NGX_HTTP_LLM_STR_OTHER;

            if (u->call) {

                /*
                 * in a tool call's arguments every string is generated,
                 * its keys too, and none is a key of the observer's
                 */

                u->role = NGX_HTTP_LLM_STR_TEXT;

            } else if (!u->value) {
                u->role = NGX_HTTP_LLM_STR_KEY;
                u->key_len = 0;

            } else if (((u->kind == NGX_HTTP_LLM_KEY_TEXT && !u->responses)
                        || u->kind == NGX_HTTP_LLM_KEY_DELTA)
                       && !u->repeats)
            {
                u->role = NGX_HTTP_LLM_STR_TEXT;

            } else if (u->kind == NGX_HTTP_LLM_KEY_MODEL
                       && u->model.data == NULL)
            {
                if (u->model_buf == NULL) {
                    u->model_buf = ngx_pnalloc(u->pool,
                                               NGX_HTTP_LLM_MODEL_MAX);
                    if (u->model_buf == NULL) {
                        return NGX_ERROR;
                    }
                }

                u->role = NGX_HTTP_LLM_STR_MODEL;
                u->model.len = 0;

            } else if (u->kind == NGX_HTTP_LLM_KEY_TYPE) {
                u->role = NGX_HTTP_LLM_STR_TYPE;
                u->name_len = 0;
            }

            break;

        case ':':
            if (u->maybe_key) {
                u->kind = u->key_kind;

                if (u->kind != NGX_HTTP_LLM_KEY_TEXT
                    && u->kind != NGX_HTTP_LLM_KEY_DELTA
                    && u->kind != NGX_HTTP_LLM_KEY_CALL
                    && u->nest > NGX_HTTP_LLM_USAGE_NEST)
                {
                    u->kind = NGX_HTTP_LLM_KEY_OTHER;
                }

                /* the type of an SSE event's data names the event */

                if (u->kind == NGX_HTTP_LLM_KEY_TYPE
                    && (!u->sse || u->nest != 1))
                {
                    u->kind = NGX_HTTP_LLM_KEY_OTHER;
                }

                u->maybe_key = 0;
                u->value = 1;
                continue;
            }

            break;

        case '{':
            u->nest++;

            if (u->capturing) {
                u->depth++;

            } else if (u->value && u->kind == NGX_HTTP_LLM_KEY_USAGE) {
                u->capturing = 1;
                u->captured = 0;
                u->depth = 1;
                cap = p - 1;

            } else if (u->value && u->kind == NGX_HTTP_LLM_KEY_CALL
                       && u->nest > NGX_HTTP_LLM_USAGE_NEST
                       && !u->responses && !u->repeats)
            {
                /*
                 * Gemini's functionCall "args", Anthropic's tool_use
                 * "input": an object the model wrote, which an answer
                 * without usage is charged as text, as OpenAI's string
                 * "arguments" and a stream's "partial_json" are; it is
                 * in an answer's content, deeper than any usage or model
                 * of the answer's own (as the tape's walk reads them)
                 */

                u->call = u->nest;
            }

            break;

        case '[':
            if (u->nest == 0) {
                u->array = 1;
            }

            u->nest++;

            if (u->capturing) {
                u->depth++;
            }

            break;

        case '}':
        case ']':
            if (u->nest) {
                u->nest--;
            }

            if (u->call > u->nest) {
                u->call = 0;
            }

            if (u->capturing && --u->depth == 0) {
                if (ngx_http_llm_usage_keep(u, cap, p - cap) != NGX_OK) {
                    return NGX_ERROR;
                }

                ngx_http_llm_usage_read(u);
                u->capturing = 0;
                cap = NULL;
            }

            break;

        default:

            /* a number or a literal: the rest of it at once */

            while (p < last
                   && ((*p >= '0' && *p <= '9') || ((*p | 0x20) >= 'a'
                                                     && (*p | 0x20) <= 'z')
                       || *p == '.' || *p == '-' || *p == '+'))
            {
                p++;
            }

            break;
        }

        u->value = 0;
        u->maybe_key = 0;
    }

    if (u->capturing) {
        return ngx_http_llm_usage_keep(u, cap, last - cap);
    }

    return NGX_OK;
}


/*
 * A \uXXXX of generated text: one code point, or half of one.  A half
 * without its other half counts as U+FFFD, as a decoder would show it.
 */

static void
ngx_http_llm_usage_code(ngx_http_llm_usage_t *u)
{
    u_char    buf[4], *p;
    uint32_t  c;

    c = u->code;

    if (c >= 0xdc00 && c <= 0xdfff && u->high) {
        c = 0x10000 + ((u->high - 0xd800) << 10) + (c - 0xdc00);
        u->high = 0;

    } else {
        ngx_http_llm_usage_lone(u);

        if (c >= 0xd800 && c <= 0xdbff) {
            u->high = c;
            return;
        }

        if (c >= 0xdc00 && c <= 0xdfff) {
            c = 0xfffd;
        }
    }

    u->streamed_chars++;

    p = buf;

    if (c < 0x80) {
        *p++ = (u_char) c;

    } else if (c < 0x800) {
        *p++ = (u_char) (0xc0 | (c >> 6));
        *p++ = (u_char) (0x80 | (c & 0x3f));

    } else if (c < 0x10000) {
        *p++ = (u_char) (0xe0 | (c >> 12));
        *p++ = (u_char) (0x80 | ((c >> 6) & 0x3f));
        *p++ = (u_char) (0x80 | (c & 0x3f));

    } else {
        *p++ = (u_char) (0xf0 | (c >> 18));
        *p++ = (u_char) (0x80 | ((c >> 12) & 0x3f));
        *p++ = (u_char) (0x80 | ((c >> 6) & 0x3f));
        *p++ = (u_char) (0x80 | (c & 0x3f));
    }

    ngx_http_llm_usage_text(u, buf, p - buf);
}


/* one escaped character of generated text: \n, \", ... */

static void
ngx_http_llm_usage_char(ngx_http_llm_usage_t *u, u_char c)
{
    ngx_http_llm_usage_lone(u);

    u->streamed_chars++;
    ngx_http_llm_usage_text(u, &c, 1);
}


/* a first half of a pair that no second half followed */

static void
ngx_http_llm_usage_lone(ngx_http_llm_usage_t *u)
{
    if (u->high) {
        u->high = 0;
        u->streamed_chars++;
        ngx_http_llm_usage_text(u, (u_char *) "\xef\xbf\xbd", 3);
    }
}


/*
 * Generated text is estimated as one text, the strings joined (deltas
 * are pieces of words): it is estimated a buffer at a time, the buffer
 * cut before a space or, failing that, between two characters, and
 * the rest at the end of the response.
 */

static void
ngx_http_llm_usage_text(ngx_http_llm_usage_t *u, u_char *p, size_t len)
{
    u_char  *end, *cut, *q;
    size_t   n, size;

    while (len) {
        n = ngx_min(len, sizeof(u->text) - u->text_len);

        ngx_memcpy(u->text + u->text_len, p, n);
        u->text_len += n;
        p += n;
        len -= n;

        if (u->text_len < sizeof(u->text)) {
            return;
        }

        end = u->text + u->text_len;
        cut = NULL;

        for (q = end - 1; q > end - 64; q--) {
            if (*q == ' ' || *q == '\n') {
                cut = q;
                break;
            }
        }

        if (cut == NULL) {
            for (q = end - 1; q > end - 4 && (*q & 0xc0) == 0x80; q--) {
                /* void */
            }

            size = (*q < 0x80) ? 1 : (*q < 0xe0) ? 2 : (*q < 0xf0) ? 3 : 4;
            cut = (q + size > end) ? q : end;
        }

        ngx_http_llm_estimate_add(&u->generated, u->text, cut - u->text);

        u->text_len = end - cut;
        ngx_memmove(u->text, cut, u->text_len);
    }
}


static void
ngx_http_llm_usage_flush(ngx_http_llm_usage_t *u)
{
    if (u->text_len) {
        ngx_http_llm_estimate_add(&u->generated, u->text, u->text_len);
        u->text_len = 0;
    }
}


static ngx_uint_t
ngx_http_llm_usage_key(u_char *key, size_t len)
{
    size_t                    i;
    ngx_http_llm_json_key_t  *k;

    static uint32_t  lens;

    /* most keys are none of these, and their length says so */

    if (lens == 0) {
        for (k = ngx_http_llm_json_keys; k->name.len; k++) {
            lens |= (uint32_t) 1 << k->name.len;
        }
    }

    if (len >= 32 || !(lens & ((uint32_t) 1 << len))) {
        return NGX_HTTP_LLM_KEY_OTHER;
    }

    for (k = ngx_http_llm_json_keys; k->name.len; k++) {

        if (k->name.len != len || k->name.data[0] != key[0]) {
            continue;
        }

        /* keys are short: a loop beats a call to memcmp() */

        for (i = 1; i < len && k->name.data[i] == key[i]; i++) {
            /* void */
        }

        if (i == len) {
            return k->kind;
        }
    }

    return NGX_HTTP_LLM_KEY_OTHER;
}


/* the bytes of a usage object; a larger one than the cap is dropped */

static ngx_int_t
ngx_http_llm_usage_keep(ngx_http_llm_usage_t *u, u_char *p, size_t len)
{
    u_char  *buf;
    size_t   size;

    if (u->captured + len > u->capture_size) {

        if (u->captured + len > NGX_HTTP_LLM_USAGE_CAP) {
            u->captured = NGX_HTTP_LLM_USAGE_CAP + 1;
            return NGX_OK;
        }

        size = ngx_max(u->capture_size * 2, 256);

        while (size < u->captured + len) {
            size *= 2;
        }

        size = ngx_min(size, NGX_HTTP_LLM_USAGE_CAP);

        buf = ngx_pnalloc(u->pool, size);
        if (buf == NULL) {
            return NGX_ERROR;
        }

        if (u->captured) {
            ngx_memcpy(buf, u->capture, u->captured);
        }

        u->capture = buf;
        u->capture_size = size;
    }

    ngx_memcpy(u->capture + u->captured, p, len);
    u->captured += len;

    return NGX_OK;
}


/* a new document: the next SSE event, or the end of the response */

static void
ngx_http_llm_usage_reset(ngx_http_llm_usage_t *u)
{
    if (u->role == NGX_HTTP_LLM_STR_MODEL && u->in_string) {
        u->model.len = 0;
    }

    ngx_http_llm_usage_lone(u);

    u->in_string = 0;
    u->escape = 0;
    u->hex = 0;
    u->maybe_key = 0;
    u->value = 0;
    u->capturing = 0;
    u->captured = 0;
    u->depth = 0;
    u->nest = 0;
    u->call = 0;
    u->kind = NGX_HTTP_LLM_KEY_OTHER;
    u->role = NGX_HTTP_LLM_STR_OTHER;
}


/* the usage object the lexer kept */

static void
ngx_http_llm_usage_read(ngx_http_llm_usage_t *u)
{
    ngx_http_llm_jtape_t  *t;

    if (u->captured > NGX_HTTP_LLM_USAGE_CAP) {
        return;
    }

    t = &u->tape;

    if (ngx_http_llm_jtape_parse(t, u->pool, u->capture, u->captured,
                                 NGX_HTTP_LLM_JSON_DEPTH, NULL)
        != NGX_OK
        || t->tok[1].type != NGX_HTTP_LLM_JT_OBJECT)
    {
        return;
    }

    ngx_http_llm_usage_object(u, t, 1);
}


/*
 * One usage object, whatever the API: OpenAI prompt_tokens and
 * completion_tokens; Anthropic input_tokens (with the cache's tokens)
 * and output_tokens, also OpenAI responses' names; Gemini
 * promptTokenCount and candidatesTokenCount with thoughtsTokenCount.
 * What one object names replaces what an earlier one said.
 */

static void
ngx_http_llm_usage_object(ngx_http_llm_usage_t *u, ngx_http_llm_jtape_t *t,
    ngx_uint_t obj)
{
    ngx_uint_t  a, b, c, n, in, out, v[14];

    static ngx_str_t  names[] = {
        ngx_string("prompt_tokens"),                 /* 0 */
        ngx_string("completion_tokens"),
        ngx_string("input_tokens"),                  /* 2 */
        ngx_string("cache_creation_input_tokens"),
        ngx_string("cache_read_input_tokens"),
        ngx_string("output_tokens"),                 /* 5 */
        ngx_string("promptTokenCount"),
        ngx_string("toolUsePromptTokenCount"),       /* 7 */
        ngx_string("candidatesTokenCount"),
        ngx_string("thoughtsTokenCount"),            /* 9 */
        ngx_string("prompt_tokens_details"),
        ngx_string("input_tokens_details"),          /* 11 */
        ngx_string("cachedContentTokenCount"),
        ngx_string("cache_creation"),                /* 13 */
        ngx_null_string
    };

    static ngx_http_llm_jtape_keys_t  keys = ngx_http_llm_jtape_keys(names);

    ngx_http_llm_jtape_pick(t, obj, &keys, v);

    /* what this object names */

    in = 0;
    out = 0;

    /*
     * the parts of the prompt a provider's cache read or wrote, told
     * with it: OpenAI's prompt_tokens_details.cached_tokens (the
     * Responses API's input_tokens_details), Anthropic's cache counts,
     * Gemini's cachedContentTokenCount; a proxy that tells Anthropic's
     * usage in OpenAI's shape (LiteLLM) adds cache_creation_input_tokens,
     * a part of prompt_tokens
     */

    if (ngx_http_llm_usage_count(t, v[0], &n)) {
        u->prompt_tokens = n;
        u->cache_read = ngx_http_llm_usage_cached(t, v[10]);
        u->cache_write = 0;
        u->cache_write_1h = 0;
        (void) ngx_http_llm_usage_count(t, v[3], &u->cache_write);
        in = 1;
    }

    if (ngx_http_llm_usage_count(t, v[1], &n)) {
        u->completion_tokens = n;
        out = 1;
    }

    /*
     * Anthropic's input is input_tokens and the cache's two counts (of
     * what it wrote, cache_creation tells what it keeps for an hour); an
     * object that names some of them (a message_delta's input_tokens
     * alone) keeps what an earlier one told of the others
     */

    a = 0;

    for (b = 0; b < 3; b++) {
        if (ngx_http_llm_usage_count(t, v[2 + b], &n)) {
            u->input[b] = n;
            u->told_input |= (b == 0);
            a = 1;
        }
    }

    if (ngx_http_llm_usage_count(t,
                                 ngx_http_llm_jtape_get(t, v[13],
                                     "ephemeral_1h_input_tokens", 25),
                                 &n))
    {
        u->input[3] = n;
    }

    if (a && u->told_input) {
        u->prompt_tokens = u->input[0] + u->input[1] + u->input[2];
        u->cache_read = u->input[2] + ngx_http_llm_usage_cached(t, v[11]);
        u->cache_write = u->input[1];
        u->cache_write_1h = ngx_min(u->input[3], u->input[1]);
        in = 1;
    }

    if (ngx_http_llm_usage_count(t, v[5], &n)) {
        u->completion_tokens = n;
        out = 1;
    }

    if (ngx_http_llm_usage_count(t, v[6], &n)) {
        a = 0;

        (void) ngx_http_llm_usage_count(t, v[7], &a);

        u->prompt_tokens = n + a;
        u->cache_read = 0;
        u->cache_write = 0;
        u->cache_write_1h = 0;
        (void) ngx_http_llm_usage_count(t, v[12], &u->cache_read);
        in = 1;
    }

    b = 0;
    c = 0;

    if (ngx_http_llm_usage_count(t, v[8], &b)
        | ngx_http_llm_usage_count(t, v[9], &c))
    {
        u->completion_tokens = b + c;
        out = 1;
    }

    if (in || out) {
        u->found = 1;
        u->told_in |= in;
        u->told_out |= out;
    }

    /* usage objects that named the output's count (see below) */

    u->objects += out;

    if (out) {
        u->told_chars = u->streamed_chars;
    }
}


/*
 * Whether the usage told holds for the whole answer: it named the
 * output's count, that count is not only the placeholder of an
 * Anthropic stream's message_start (output_tokens 1), which its
 * message_delta replaces at the end, and no text of a stream came after
 * it (a Gemini stream, SSE or a JSON array, that told usage in its first
 * chunk only; a JSON object is a whole answer, which may name its usage
 * first, as the tape's walk reads it).
 */

ngx_uint_t
ngx_http_llm_usage_final(ngx_http_llm_usage_t *u)
{
    return u->found && u->told_out
           && !(u->sse && u->api == NGX_HTTP_LLM_API_ANTHROPIC
                && u->objects < 2)
           && !((u->sse || (u->array && u->api == NGX_HTTP_LLM_API_GEMINI))
                && u->streamed_chars > u->told_chars);
}


/* the cached_tokens of a usage's details object, else 0 */

static ngx_uint_t
ngx_http_llm_usage_cached(ngx_http_llm_jtape_t *t, ngx_uint_t obj)
{
    ngx_uint_t  n;

    if (!ngx_http_llm_usage_count(t,
                                  ngx_http_llm_jtape_get(t, obj,
                                                         "cached_tokens", 13),
                                  &n))
    {
        return 0;
    }

    return n;
}


/* a member of a usage object, if a count */

static ngx_int_t
ngx_http_llm_usage_count(ngx_http_llm_jtape_t *t, ngx_uint_t v,
    ngx_uint_t *n)
{
    int64_t  i;

    if (!ngx_http_llm_jt_is(t, v, NGX_HTTP_LLM_JT_INTEGER)) {
        return 0;
    }

    i = ngx_http_llm_jtape_int(t, v);

    if (i < 0 || i > NGX_HTTP_LLM_USAGE_MAX) {
        return 0;
    }

    *n = (ngx_uint_t) i;

    return 1;
}
