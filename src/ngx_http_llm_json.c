
/*
 * ngx_llm_gateway: the only door to jansson.
 *
 * Owns what the gateway reads in bodies: a request's model, max tokens,
 * stream flag and every prompt string (OpenAI chat, completions,
 * embeddings and responses; Anthropic messages; Gemini
 * generateContent), adding stream_options.include_usage to an OpenAI
 * request, and the response observer that finds the usage a backend
 * reports and counts the text it generates, in JSON bodies and SSE
 * streams, without holding them.  No other file includes jansson.h.
 *
 * jansson allocates with malloc(); every tree is released before the
 * function that built it returns, and what is kept is copied into the
 * caller's pool.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <jansson.h>

#include "ngx_http_llm_json.h"


/* the longest model name kept */
#define NGX_HTTP_LLM_MODEL_MAX      256

/* the most completions one request may ask for */
#define NGX_HTTP_LLM_CHOICES_MAX    128

/* a token count above this in a response is not believed */
#define NGX_HTTP_LLM_USAGE_MAX      ((int64_t) 1 << 40)

/* what a key in a response announces */
#define NGX_HTTP_LLM_KEY_OTHER      0
#define NGX_HTTP_LLM_KEY_TEXT       1     /* generated text */
#define NGX_HTTP_LLM_KEY_USAGE      2     /* a usage object */
#define NGX_HTTP_LLM_KEY_MODEL      3

/* the string being read in a response */
#define NGX_HTTP_LLM_STR_KEY        0     /* perhaps a key, kept */
#define NGX_HTTP_LLM_STR_OTHER      1
#define NGX_HTTP_LLM_STR_TEXT       2     /* counted */
#define NGX_HTTP_LLM_STR_MODEL      3     /* kept as the model */

/* where an SSE line is */
#define NGX_HTTP_LLM_SSE_START      0
#define NGX_HTTP_LLM_SSE_FIELD      1
#define NGX_HTTP_LLM_SSE_SPACE      2     /* after "data:" */
#define NGX_HTTP_LLM_SSE_DATA       3
#define NGX_HTTP_LLM_SSE_SKIP       4     /* not a data line */


typedef struct {
    ngx_str_t                   name;
    ngx_uint_t                  kind;
} ngx_http_llm_json_key_t;


static ngx_int_t ngx_http_llm_json_error(ngx_pool_t *pool, json_error_t *err,
    ngx_str_t *error);
static ngx_int_t ngx_http_llm_json_openai(ngx_pool_t *pool, json_t *root,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ngx_http_llm_json_anthropic(ngx_pool_t *pool, json_t *root,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ngx_http_llm_json_gemini(ngx_pool_t *pool, json_t *root,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ngx_http_llm_json_gemini_content(json_t *c,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ngx_http_llm_json_model(ngx_pool_t *pool, json_t *root,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ngx_http_llm_json_max_tokens(ngx_pool_t *pool, json_t *obj,
    char **names, ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ngx_http_llm_json_stream(json_t *root,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static void ngx_http_llm_json_choices(json_t *obj, char *name,
    ngx_http_llm_request_info_t *info);
static ngx_int_t ngx_http_llm_json_content(json_t *v,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static void ngx_http_llm_json_part(json_t *part,
    ngx_http_llm_request_info_t *info, ngx_uint_t nested);
static void ngx_http_llm_json_input(json_t *v,
    ngx_http_llm_request_info_t *info, ngx_uint_t nested);
static void ngx_http_llm_json_text(json_t *v,
    ngx_http_llm_request_info_t *info);
static void ngx_http_llm_json_walk(json_t *v,
    ngx_http_llm_request_info_t *info);
static ngx_uint_t ngx_http_llm_json_precision(json_t *v);

static ngx_int_t ngx_http_llm_usage_sse(ngx_http_llm_usage_t *u, u_char *p,
    u_char *last);
static ngx_int_t ngx_http_llm_usage_lex(ngx_http_llm_usage_t *u, u_char *p,
    u_char *last);
static ngx_int_t ngx_http_llm_usage_keep(ngx_http_llm_usage_t *u, u_char *p,
    size_t len);
static void ngx_http_llm_usage_reset(ngx_http_llm_usage_t *u);
static void ngx_http_llm_usage_code(ngx_http_llm_usage_t *u);
static void ngx_http_llm_usage_char(ngx_http_llm_usage_t *u, u_char c);
static void ngx_http_llm_usage_text(ngx_http_llm_usage_t *u, u_char *p,
    size_t len);
static void ngx_http_llm_usage_lone(ngx_http_llm_usage_t *u);
static void ngx_http_llm_usage_flush(ngx_http_llm_usage_t *u);
static ngx_uint_t ngx_http_llm_usage_key(ngx_http_llm_usage_t *u);
static void ngx_http_llm_usage_read(ngx_http_llm_usage_t *u);
static ngx_int_t ngx_http_llm_usage_count(json_t *obj, char *name,
    ngx_uint_t *n);


/* keys whose values a response observer looks at */
static ngx_http_llm_json_key_t  ngx_http_llm_json_keys[] = {
    { ngx_string("content"), NGX_HTTP_LLM_KEY_TEXT },
    { ngx_string("text"), NGX_HTTP_LLM_KEY_TEXT },
    { ngx_string("arguments"), NGX_HTTP_LLM_KEY_TEXT },
    { ngx_string("partial_json"), NGX_HTTP_LLM_KEY_TEXT },
    { ngx_string("thinking"), NGX_HTTP_LLM_KEY_TEXT },
    { ngx_string("reasoning"), NGX_HTTP_LLM_KEY_TEXT },
    { ngx_string("reasoning_content"), NGX_HTTP_LLM_KEY_TEXT },
    { ngx_string("refusal"), NGX_HTTP_LLM_KEY_TEXT },
    { ngx_string("usage"), NGX_HTTP_LLM_KEY_USAGE },
    { ngx_string("usageMetadata"), NGX_HTTP_LLM_KEY_USAGE },
    { ngx_string("model"), NGX_HTTP_LLM_KEY_MODEL },
    { ngx_string("modelVersion"), NGX_HTTP_LLM_KEY_MODEL },
    { ngx_null_string, 0 }
};


ngx_int_t
ngx_http_llm_json_parse_request(ngx_pool_t *pool, ngx_uint_t api,
    u_char *body, size_t len, ngx_http_llm_request_info_t *info,
    ngx_str_t *error)
{
    json_t        *root;
    ngx_int_t      rc;
    json_error_t   err;

    ngx_memzero(info, sizeof(ngx_http_llm_request_info_t));

    info->max_tokens = -1;
    info->choices = 1;
    ngx_http_llm_estimate_init(&info->estimate);

    if (len == 0) {
        ngx_str_set(error, "request body is empty");
        return NGX_DECLINED;
    }

    if (!ngx_http_llm_utf8_valid(body, len)) {
        ngx_str_set(error, "request body is not valid UTF-8");
        return NGX_DECLINED;
    }

    if (!ngx_http_llm_json_depth_ok(body, len, NGX_HTTP_LLM_JSON_DEPTH)) {
        ngx_str_set(error, "request body is nested more than 64 levels deep");
        return NGX_DECLINED;
    }

    root = json_loadb((char *) body, len, JSON_DECODE_ANY|JSON_ALLOW_NUL,
                      &err);
    if (root == NULL) {
        return ngx_http_llm_json_error(pool, &err, error);
    }

    if (!json_is_object(root)) {
        json_decref(root);
        ngx_str_set(error, "request body is not a JSON object");
        return NGX_DECLINED;
    }

    switch (api) {

    case NGX_HTTP_LLM_API_ANTHROPIC:
        rc = ngx_http_llm_json_anthropic(pool, root, info, error);
        break;

    case NGX_HTTP_LLM_API_GEMINI:
        rc = ngx_http_llm_json_gemini(pool, root, info, error);
        break;

    default: /* NGX_HTTP_LLM_API_OPENAI */
        rc = ngx_http_llm_json_openai(pool, root, info, error);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_llm_json_model(pool, root, info, error);
    }

    json_decref(root);

    return rc;
}


/*
 * Refuses what nests deeper than "max" without building anything, so a
 * hostile body is refused in one pass of the bytes.  Brackets in strings
 * do not count.
 */

ngx_int_t
ngx_http_llm_json_depth_ok(u_char *p, size_t len, ngx_uint_t max)
{
    u_char      *last;
    ngx_uint_t   depth;

    last = p + len;
    depth = 0;

    while (p < last) {

        switch (*p++) {

        case '"':
            while (p < last) {
                if (*p == '\\') {
                    if (last - p < 2) {
                        return 1;
                    }

                    p += 2;
                    continue;
                }

                if (*p++ == '"') {
                    break;
                }
            }

            break;

        case '[':
        case '{':
            if (++depth > max) {
                return 0;
            }

            break;

        case ']':
        case '}':
            if (depth) {
                depth--;
            }

            break;

        default:
            break;
        }
    }

    return 1;
}


static ngx_int_t
ngx_http_llm_json_error(ngx_pool_t *pool, json_error_t *err,
    ngx_str_t *error)
{
    u_char  *p;
    size_t   len;

    switch (json_error_code(err)) {

    case json_error_out_of_memory:
        return NGX_ERROR;

    case json_error_numeric_overflow:
        ngx_str_set(error, "a number in the request body is out of range");
        return NGX_DECLINED;

    default:
        break;
    }

    len = ngx_strlen(err->text);

    if (!ngx_http_llm_utf8_valid((u_char *) err->text, len)) {
        ngx_str_set(error, "request body is not valid JSON");
        return NGX_DECLINED;
    }

    p = ngx_pnalloc(pool, len + sizeof("request body is not valid JSON: "
                                       " at byte ") + NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    error->data = p;
    error->len = ngx_sprintf(p, "request body is not valid JSON: "
                             "%s at byte %uz", err->text,
                             (size_t) err->position)
                 - p;

    return NGX_DECLINED;
}


/*
 * OpenAI: chat completions ("messages"), completions ("prompt"),
 * embeddings and responses ("input", "instructions").
 */

static ngx_int_t
ngx_http_llm_json_openai(ngx_pool_t *pool, json_t *root,
    ngx_http_llm_request_info_t *info, ngx_str_t *error)
{
    size_t      i, j;
    json_t     *v, *m, *call, *f;
    ngx_int_t   rc;

    static char  *max[] = { "max_tokens", "max_completion_tokens",
                            "max_output_tokens", NULL };

    rc = ngx_http_llm_json_max_tokens(pool, root, max, info, error);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_llm_json_stream(root, info, error) != NGX_OK) {
        return NGX_DECLINED;
    }

    v = json_object_get(root, "stream_options");

    if (json_is_object(v) && json_is_true(json_object_get(v, "include_usage")))
    {
        info->has_include_usage = 1;
    }

    ngx_http_llm_json_choices(root, "n", info);

    v = json_object_get(root, "messages");

    if (v != NULL) {
        if (!json_is_array(v)) {
            ngx_str_set(error, "\"messages\" must be an array");
            return NGX_DECLINED;
        }

        json_array_foreach(v, i, m) {

            if (!json_is_object(m)) {
                ngx_str_set(error, "each of \"messages\" must be an object");
                return NGX_DECLINED;
            }

            info->messages++;

            if (ngx_http_llm_json_content(json_object_get(m, "content"), info,
                                          error)
                != NGX_OK)
            {
                return NGX_DECLINED;
            }

            ngx_http_llm_json_text(json_object_get(m, "name"), info);

            call = json_object_get(m, "function_call");

            if (json_is_object(call)) {
                ngx_http_llm_json_text(json_object_get(call, "name"), info);
                ngx_http_llm_json_text(json_object_get(call, "arguments"),
                                       info);
            }

            json_array_foreach(json_object_get(m, "tool_calls"), j, call) {
                f = json_object_get(call, "function");

                if (json_is_object(f)) {
                    ngx_http_llm_json_text(json_object_get(f, "name"), info);
                    ngx_http_llm_json_text(json_object_get(f, "arguments"),
                                           info);
                }
            }
        }

    } else if ((v = json_object_get(root, "prompt")) != NULL) {
        ngx_http_llm_json_input(v, info, 0);
        ngx_http_llm_json_text(json_object_get(root, "suffix"), info);

    } else if ((v = json_object_get(root, "input")) != NULL) {
        ngx_http_llm_json_input(v, info, 0);

    } else {
        ngx_str_set(error,
                    "request has no \"messages\", \"prompt\" or \"input\"");
        return NGX_DECLINED;
    }

    v = json_object_get(root, "instructions");

    if (json_is_string(v)) {
        info->messages++;
        ngx_http_llm_json_text(v, info);
    }

    ngx_http_llm_json_walk(json_object_get(root, "tools"), info);
    ngx_http_llm_json_walk(json_object_get(root, "functions"), info);
    ngx_http_llm_json_walk(json_object_get(root, "response_format"), info);

    return NGX_OK;
}


/* Anthropic: messages, and the legacy text completions ("prompt") */

static ngx_int_t
ngx_http_llm_json_anthropic(ngx_pool_t *pool, json_t *root,
    ngx_http_llm_request_info_t *info, ngx_str_t *error)
{
    size_t      i;
    json_t     *v, *m;
    ngx_int_t   rc;

    static char  *max[] = { "max_tokens", "max_tokens_to_sample", NULL };

    rc = ngx_http_llm_json_max_tokens(pool, root, max, info, error);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_llm_json_stream(root, info, error) != NGX_OK) {
        return NGX_DECLINED;
    }

    v = json_object_get(root, "system");

    if (v != NULL && !json_is_null(v)) {
        if (!json_is_string(v) && !json_is_array(v)) {
            ngx_str_set(error, "\"system\" must be a string or an array");
            return NGX_DECLINED;
        }

        info->messages++;
        (void) ngx_http_llm_json_content(v, info, error);
    }

    v = json_object_get(root, "messages");

    if (v == NULL) {
        m = json_object_get(root, "prompt");

        if (!json_is_string(m)) {
            ngx_str_set(error, "request has no \"messages\"");
            return NGX_DECLINED;
        }

        ngx_http_llm_json_text(m, info);

        return NGX_OK;
    }

    if (!json_is_array(v)) {
        ngx_str_set(error, "\"messages\" must be an array");
        return NGX_DECLINED;
    }

    json_array_foreach(v, i, m) {

        if (!json_is_object(m)) {
            ngx_str_set(error, "each of \"messages\" must be an object");
            return NGX_DECLINED;
        }

        info->messages++;

        if (ngx_http_llm_json_content(json_object_get(m, "content"), info,
                                      error)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }
    }

    ngx_http_llm_json_walk(json_object_get(root, "tools"), info);

    return NGX_OK;
}


/*
 * Gemini generateContent: the stream flag is in the URI, not the body.
 * The protobuf JSON mapping accepts field names in lowerCamelCase and
 * in snake_case: both are read.
 */

static ngx_int_t
ngx_http_llm_json_gemini(ngx_pool_t *pool, json_t *root,
    ngx_http_llm_request_info_t *info, ngx_str_t *error)
{
    size_t      i;
    json_t     *v, *c, *part;
    ngx_int_t   rc;

    static char  *max[] = { "maxOutputTokens", "max_output_tokens", NULL };

    v = json_object_get(root, "generationConfig");

    if (v == NULL) {
        v = json_object_get(root, "generation_config");
    }

    if (v != NULL && !json_is_null(v)) {
        if (!json_is_object(v)) {
            ngx_str_set(error, "\"generationConfig\" must be an object");
            return NGX_DECLINED;
        }

        rc = ngx_http_llm_json_max_tokens(pool, v, max, info, error);
        if (rc != NGX_OK) {
            return rc;
        }

        ngx_http_llm_json_choices(v, "candidateCount", info);
        ngx_http_llm_json_choices(v, "candidate_count", info);
    }

    v = json_object_get(root, "systemInstruction");

    if (v == NULL) {
        v = json_object_get(root, "system_instruction");
    }

    if (json_is_object(v)) {
        info->messages++;

        json_array_foreach(json_object_get(v, "parts"), i, part) {
            ngx_http_llm_json_part(part, info, 0);
        }

    } else if (json_is_string(v)) {
        info->messages++;
        ngx_http_llm_json_text(v, info);
    }

    v = json_object_get(root, "contents");

    if (json_is_object(v)) {
        return ngx_http_llm_json_gemini_content(v, info, error);
    }

    if (!json_is_array(v)) {
        ngx_str_set(error, "request has no \"contents\" array");
        return NGX_DECLINED;
    }

    json_array_foreach(v, i, c) {
        if (ngx_http_llm_json_gemini_content(c, info, error) != NGX_OK) {
            return NGX_DECLINED;
        }
    }

    ngx_http_llm_json_walk(json_object_get(root, "tools"), info);

    return NGX_OK;
}


/* one Content: a role and parts */

static ngx_int_t
ngx_http_llm_json_gemini_content(json_t *c, ngx_http_llm_request_info_t *info,
    ngx_str_t *error)
{
    size_t   i;
    json_t  *parts, *part;

    if (!json_is_object(c)) {
        ngx_str_set(error, "each of \"contents\" must be an object");
        return NGX_DECLINED;
    }

    info->messages++;

    parts = json_object_get(c, "parts");

    if (parts != NULL && !json_is_array(parts) && !json_is_null(parts)) {
        ngx_str_set(error, "\"parts\" must be an array");
        return NGX_DECLINED;
    }

    json_array_foreach(parts, i, part) {
        ngx_http_llm_json_part(part, info, 0);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_json_model(ngx_pool_t *pool, json_t *root,
    ngx_http_llm_request_info_t *info, ngx_str_t *error)
{
    size_t       len;
    json_t      *v;
    const char  *s;

    v = json_object_get(root, "model");

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    if (!json_is_string(v)) {
        ngx_str_set(error, "\"model\" must be a string");
        return NGX_DECLINED;
    }

    s = json_string_value(v);
    len = json_string_length(v);

    if (len > NGX_HTTP_LLM_MODEL_MAX || ngx_strlen(s) != len) {
        ngx_str_set(error, "\"model\" is not a valid model name");
        return NGX_DECLINED;
    }

    if (len == 0) {
        return NGX_OK;
    }

    info->model.data = ngx_pnalloc(pool, len);
    if (info->model.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(info->model.data, s, len);
    info->model.len = len;

    return NGX_OK;
}


/*
 * Each of "names" present must be an integer from 1 to 2^31 - 1; a
 * number written with a fraction or an exponent counts if its value is
 * such an integer (100.0, 1e3).  null is the same as absent.  The
 * largest wins.
 */

static ngx_int_t
ngx_http_llm_json_max_tokens(ngx_pool_t *pool, json_t *obj, char **names,
    ngx_http_llm_request_info_t *info, ngx_str_t *error)
{
    u_char   *p;
    double    d;
    json_t   *v;
    int64_t   n;

    for ( /* void */ ; *names; names++) {

        v = json_object_get(obj, *names);

        if (v == NULL || json_is_null(v)) {
            continue;
        }

        if (json_is_integer(v)) {
            n = json_integer_value(v);

        } else if (json_is_real(v)) {
            d = json_real_value(v);

            if (!(d >= 1 && d <= (double) NGX_HTTP_LLM_MAX_TOKENS_MAX)
                || d != (double) (int64_t) d)
            {
                goto invalid;
            }

            n = (int64_t) d;

        } else {
            goto invalid;
        }

        if (n < 1 || n > NGX_HTTP_LLM_MAX_TOKENS_MAX) {
            goto invalid;
        }

        if (n > info->max_tokens) {
            info->max_tokens = n;
        }
    }

    return NGX_OK;

invalid:

    p = ngx_pnalloc(pool, ngx_strlen(*names)
                          + sizeof("\"\" must be an integer from 1 to ")
                          + NGX_INT32_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    error->data = p;
    error->len = ngx_sprintf(p, "\"%s\" must be an integer from 1 to %D",
                             *names, (int32_t) NGX_HTTP_LLM_MAX_TOKENS_MAX)
                 - p;

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_llm_json_stream(json_t *root, ngx_http_llm_request_info_t *info,
    ngx_str_t *error)
{
    json_t  *v;

    v = json_object_get(root, "stream");

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    if (!json_is_boolean(v)) {
        ngx_str_set(error, "\"stream\" must be true or false");
        return NGX_DECLINED;
    }

    info->stream = json_is_true(v);

    return NGX_OK;
}


/* how many completions a request asks for; the backend judges the rest */

static void
ngx_http_llm_json_choices(json_t *obj, char *name,
    ngx_http_llm_request_info_t *info)
{
    json_t      *v;
    json_int_t   n;

    v = json_object_get(obj, name);

    if (!json_is_integer(v)) {
        return;
    }

    n = json_integer_value(v);

    if (n >= 1 && n <= NGX_HTTP_LLM_CHOICES_MAX) {
        info->choices = (ngx_uint_t) n;
    }
}


/* a message's content: a string, an array of parts, or null */

static ngx_int_t
ngx_http_llm_json_content(json_t *v, ngx_http_llm_request_info_t *info,
    ngx_str_t *error)
{
    size_t   i;
    json_t  *part;

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    if (json_is_string(v)) {
        ngx_http_llm_json_text(v, info);
        return NGX_OK;
    }

    if (!json_is_array(v)) {
        ngx_str_set(error, "message content must be a string or an array");
        return NGX_DECLINED;
    }

    json_array_foreach(v, i, part) {
        ngx_http_llm_json_part(part, info, 0);
    }

    return NGX_OK;
}


/*
 * One part of a content array, in any of the three shapes: text, an
 * image or file (a fixed cost), a tool call or its result.
 */

static void
ngx_http_llm_json_part(json_t *part, ngx_http_llm_request_info_t *info,
    ngx_uint_t nested)
{
    size_t       i;
    json_t      *v, *p;
    const char  *type;

    if (json_is_string(part)) {
        ngx_http_llm_json_text(part, info);
        return;
    }

    if (!json_is_object(part)) {
        return;
    }

    ngx_http_llm_json_text(json_object_get(part, "text"), info);
    ngx_http_llm_json_text(json_object_get(part, "thinking"), info);

    type = json_string_value(json_object_get(part, "type"));

    if (type != NULL
        && (ngx_strcmp(type, "image_url") == 0
            || ngx_strcmp(type, "image") == 0
            || ngx_strcmp(type, "input_image") == 0
            || ngx_strcmp(type, "input_audio") == 0
            || ngx_strcmp(type, "input_file") == 0
            || ngx_strcmp(type, "file") == 0
            || ngx_strcmp(type, "document") == 0))
    {
        ngx_http_llm_estimate_add_tokens(&info->estimate,
                                         NGX_HTTP_LLM_TOKENS_PER_IMAGE);
    }

    if (json_object_get(part, "inlineData") != NULL
        || json_object_get(part, "inline_data") != NULL
        || json_object_get(part, "fileData") != NULL
        || json_object_get(part, "file_data") != NULL)
    {
        ngx_http_llm_estimate_add_tokens(&info->estimate,
                                         NGX_HTTP_LLM_TOKENS_PER_IMAGE);
    }

    /* Anthropic tool_use, Gemini function calls and responses */

    ngx_http_llm_json_walk(json_object_get(part, "input"), info);
    ngx_http_llm_json_walk(json_object_get(part, "functionCall"), info);
    ngx_http_llm_json_walk(json_object_get(part, "function_call"), info);
    ngx_http_llm_json_walk(json_object_get(part, "functionResponse"), info);
    ngx_http_llm_json_walk(json_object_get(part, "function_response"), info);

    /* Anthropic tool_result: its content is a string or parts */

    v = json_object_get(part, "content");

    if (json_is_string(v)) {
        ngx_http_llm_json_text(v, info);

    } else if (!nested) {
        json_array_foreach(v, i, p) {
            ngx_http_llm_json_part(p, info, 1);
        }
    }
}


/*
 * OpenAI "prompt" and "input": a string, strings, token ids, arrays of
 * token ids, or (responses) message items.
 */

static void
ngx_http_llm_json_input(json_t *v, ngx_http_llm_request_info_t *info,
    ngx_uint_t nested)
{
    size_t      i;
    json_t     *item;
    ngx_str_t   ignored;

    if (v == NULL) {
        return;
    }

    switch (json_typeof(v)) {

    case JSON_STRING:
        ngx_http_llm_json_text(v, info);
        break;

    case JSON_INTEGER:
        ngx_http_llm_estimate_add_tokens(&info->estimate, 1);
        break;

    case JSON_ARRAY:
        if (nested) {
            json_array_foreach(v, i, item) {
                if (json_is_integer(item)) {
                    ngx_http_llm_estimate_add_tokens(&info->estimate, 1);
                }
            }

            break;
        }

        json_array_foreach(v, i, item) {
            ngx_http_llm_json_input(item, info, 1);
        }

        break;

    case JSON_OBJECT:

        /* a responses item: a message, a function call or its output */

        if (nested) {
            info->messages++;
            (void) ngx_http_llm_json_content(json_object_get(v, "content"),
                                             info, &ignored);
            ngx_http_llm_json_text(json_object_get(v, "arguments"), info);
            ngx_http_llm_json_text(json_object_get(v, "output"), info);
        }

        break;

    default:
        break;
    }
}


static void
ngx_http_llm_json_text(json_t *v, ngx_http_llm_request_info_t *info)
{
    if (json_is_string(v)) {
        ngx_http_llm_estimate_add(&info->estimate,
                                  (u_char *) json_string_value(v),
                                  json_string_length(v));
    }
}


/* every key and string of a tool definition or a call's arguments */

static void
ngx_http_llm_json_walk(json_t *v, ngx_http_llm_request_info_t *info)
{
    size_t       i;
    json_t      *item;
    const char  *key;

    if (v == NULL) {
        return;
    }

    switch (json_typeof(v)) {

    case JSON_OBJECT:
        json_object_foreach(v, key, item) {
            ngx_http_llm_estimate_add(&info->estimate, (u_char *) key,
                                      ngx_strlen(key));
            ngx_http_llm_json_walk(item, info);
        }

        break;

    case JSON_ARRAY:
        json_array_foreach(v, i, item) {
            ngx_http_llm_json_walk(item, info);
        }

        break;

    case JSON_STRING:
        ngx_http_llm_json_text(v, info);
        break;

    default:
        break;
    }
}


/*
 * The body with "stream_options":{"include_usage":true}.  Without
 * stream_options the member is inserted first and the rest is left
 * byte for byte as the client wrote it; otherwise the body is
 * re-serialized compactly, with 15 significant digits for numbers with
 * a fraction if all of them survive that (0.7 stays 0.7), 17 if not.
 */

ngx_int_t
ngx_http_llm_json_include_usage(ngx_pool_t *pool, u_char *body, size_t len,
    ngx_str_t *out)
{
    u_char        *p, *last;
    size_t         size, flags;
    json_t        *root, *so;
    ngx_uint_t     members;
    json_error_t   err;

    static u_char  member[] = "\"stream_options\":{\"include_usage\":true}";

    if (!ngx_http_llm_json_depth_ok(body, len, NGX_HTTP_LLM_JSON_DEPTH)) {
        return NGX_DECLINED;
    }

    root = json_loadb((char *) body, len, JSON_ALLOW_NUL, &err);
    if (root == NULL) {
        return json_error_code(&err) == json_error_out_of_memory
               ? NGX_ERROR : NGX_DECLINED;
    }

    if (!json_is_object(root)) {
        json_decref(root);
        return NGX_DECLINED;
    }

    so = json_object_get(root, "stream_options");

    if (so == NULL) {
        members = json_object_size(root);
        json_decref(root);

        last = body + len;

        for (p = body; p < last && *p != '{'; p++) { /* void */ }

        if (p == last) {
            return NGX_DECLINED;
        }

        p++;

        out->len = len + sizeof(member) - 1 + (members ? 1 : 0);
        out->data = ngx_pnalloc(pool, out->len);
        if (out->data == NULL) {
            return NGX_ERROR;
        }

        last = ngx_cpymem(out->data, body, p - body);
        last = ngx_cpymem(last, member, sizeof(member) - 1);

        if (members) {
            *last++ = ',';
        }

        ngx_memcpy(last, p, len - (p - body));

        return NGX_OK;
    }

    if (json_is_object(so)) {
        if (json_is_true(json_object_get(so, "include_usage"))) {
            json_decref(root);

            out->data = ngx_pnalloc(pool, len);
            if (out->data == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(out->data, body, len);
            out->len = len;

            return NGX_OK;
        }

        if (json_object_set_new(so, "include_usage", json_true()) != 0) {
            goto failed;
        }

    } else {
        so = json_object();

        if (so == NULL
            || json_object_set_new(so, "include_usage", json_true()) != 0
            || json_object_set_new(root, "stream_options", so) != 0)
        {
            goto failed;
        }
    }

    flags = JSON_COMPACT
            | JSON_REAL_PRECISION(ngx_http_llm_json_precision(root));

    size = json_dumpb(root, NULL, 0, flags);
    if (size == 0) {
        goto failed;
    }

    out->data = ngx_pnalloc(pool, size);
    if (out->data == NULL) {
        goto failed;
    }

    out->len = json_dumpb(root, (char *) out->data, size, flags);

    json_decref(root);

    return out->len == size ? NGX_OK : NGX_ERROR;

failed:

    json_decref(root);

    return NGX_ERROR;
}


/* 15 if every real of the tree prints back to itself in 15 digits */

static ngx_uint_t
ngx_http_llm_json_precision(json_t *v)
{
    char        buf[32];
    size_t      i;
    double      d;
    json_t     *item;
    const char  *key;

    if (v == NULL) {
        return 15;
    }

    switch (json_typeof(v)) {

    case JSON_REAL:
        d = json_real_value(v);
        (void) snprintf(buf, sizeof(buf), "%.15g", d);

        return strtod(buf, NULL) == d ? 15 : 17;

    case JSON_OBJECT:
        json_object_foreach(v, key, item) {
            if (ngx_http_llm_json_precision(item) == 17) {
                return 17;
            }
        }

        return 15;

    case JSON_ARRAY:
        json_array_foreach(v, i, item) {
            if (ngx_http_llm_json_precision(item) == 17) {
                return 17;
            }
        }

        return 15;

    default:
        return 15;
    }
}


/*
 * The response observer.
 *
 * A small incremental JSON lexer reads the body (JSON) or the payload of
 * every "data:" line (SSE, events joined and reset the way the SSE
 * specification says).  It knows when a string is a key, and looks at
 * the values of a few keys: the code points of generated text are
 * counted ("content", "text", ...), the first "model" is kept, and the
 * bytes of a "usage"/"usageMetadata" object are kept until it closes,
 * then parsed with jansson.  Nothing else is held, so neither a long
 * body nor a long line costs memory, and output is never delayed.
 */

void
ngx_http_llm_usage_init(ngx_http_llm_usage_t *u, ngx_pool_t *pool,
    ngx_uint_t api, ngx_uint_t sse)
{
    ngx_memzero(u, sizeof(ngx_http_llm_usage_t));
    ngx_http_llm_estimate_init(&u->generated);

    u->pool = pool;
    u->api = api;
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


/* SSE lines: the payloads of "data:" lines go to the lexer */

static ngx_int_t
ngx_http_llm_usage_sse(ngx_http_llm_usage_t *u, u_char *p, u_char *last)
{
    u_char  *s, c;

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

                goto eol;
            }

            if (c == ':') {
                u->line = NGX_HTTP_LLM_SSE_SKIP;    /* a comment */
                p++;
                continue;
            }

            u->line = NGX_HTTP_LLM_SSE_FIELD;
            u->field = 0;

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

                if (c == ':') {
                    u->line = NGX_HTTP_LLM_SSE_SKIP;
                    p++;
                    continue;
                }

                goto eol;
            }

            u->field = (u->field < 4 && c == "data"[u->field])
                       ? u->field + 1 : 5;
            p++;
            continue;

        case NGX_HTTP_LLM_SSE_SPACE:

            u->line = NGX_HTTP_LLM_SSE_DATA;

            if (c == ' ') {
                p++;
                continue;
            }

            /* fall through */

        case NGX_HTTP_LLM_SSE_DATA:

            for (s = p; p < last && *p != '\n' && *p != '\r'; p++) {
                /* void */
            }

            if (p > s && ngx_http_llm_usage_lex(u, s, p) != NGX_OK) {
                return NGX_ERROR;
            }

            if (p == last) {
                return NGX_OK;
            }

            c = *p;
            goto eol;

        default: /* NGX_HTTP_LLM_SSE_SKIP */

            for ( /* void */ ; p < last && *p != '\n' && *p != '\r'; p++) {
                /* void */
            }

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


void
ngx_http_llm_usage_finish(ngx_http_llm_usage_t *u)
{
    /* a usage object cut short is not read */

    ngx_http_llm_usage_reset(u);
    ngx_http_llm_usage_flush(u);

    u->finished = 1;
}


static ngx_int_t
ngx_http_llm_usage_lex(ngx_http_llm_usage_t *u, u_char *p, u_char *last)
{
    u_char      *s, c;
    ngx_uint_t   n;

    while (p < last) {

        if (u->in_string) {

            if (u->escape) {
                c = *p++;

                if (u->capturing
                    && ngx_http_llm_usage_keep(u, &c, 1) != NGX_OK)
                {
                    return NGX_ERROR;
                }

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

            if (u->role == NGX_HTTP_LLM_STR_TEXT) {
                n = 0;

                while (p < last && *p != '"' && *p != '\\') {
                    n += ((*p++ & 0xc0) != 0x80);
                }

                u->streamed_chars += n;
                ngx_http_llm_usage_text(u, s, p - s);

            } else {
                while (p < last && *p != '"' && *p != '\\') {
                    p++;
                }
            }

            n = p - s;

            if (n) {
                if (u->role == NGX_HTTP_LLM_STR_KEY) {
                    if (u->key_len + n <= sizeof(u->key)) {
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
                }

                if (u->capturing
                    && ngx_http_llm_usage_keep(u, s, n) != NGX_OK)
                {
                    return NGX_ERROR;
                }
            }

            if (p == last) {
                break;
            }

            c = *p++;

            if (u->capturing && ngx_http_llm_usage_keep(u, &c, 1) != NGX_OK) {
                return NGX_ERROR;
            }

            if (c == '\\') {
                u->escape = 1;

                if (u->role == NGX_HTTP_LLM_STR_KEY) {
                    u->key_len = sizeof(u->key) + 1;

                } else if (u->role == NGX_HTTP_LLM_STR_MODEL) {
                    u->model.len = 0;
                    u->role = NGX_HTTP_LLM_STR_OTHER;
                }

                continue;
            }

            /* the closing quote */

            u->in_string = 0;

            if (u->role == NGX_HTTP_LLM_STR_TEXT) {
                ngx_http_llm_usage_lone(u);

            } else if (u->role == NGX_HTTP_LLM_STR_KEY) {
                u->maybe_key = 1;

            } else if (u->role == NGX_HTTP_LLM_STR_MODEL && u->model.len) {
                u->model.data = u->model_buf;
            }

            continue;
        }

        c = *p++;

        if (u->capturing && ngx_http_llm_usage_keep(u, &c, 1) != NGX_OK) {
            return NGX_ERROR;
        }

        switch (c) {

        case ' ':
        case '\t':
        case '\r':
        case '\n':
            continue;

        case '"':
            u->in_string = 1;
            u->role = NGX_HTTP_LLM_STR_OTHER;

            if (!u->value) {
                u->role = NGX_HTTP_LLM_STR_KEY;
                u->key_len = 0;

            } else if (u->kind == NGX_HTTP_LLM_KEY_TEXT) {
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
            }

            break;

        case ':':
            if (u->maybe_key) {
                u->kind = ngx_http_llm_usage_key(u);
                u->maybe_key = 0;
                u->value = 1;
                continue;
            }

            break;

        case '{':
            if (u->capturing) {
                u->depth++;

            } else if (u->value && u->kind == NGX_HTTP_LLM_KEY_USAGE) {
                u->capturing = 1;
                u->captured = 0;
                u->depth = 1;

                if (ngx_http_llm_usage_keep(u, &c, 1) != NGX_OK) {
                    return NGX_ERROR;
                }
            }

            break;

        case '[':
            if (u->capturing) {
                u->depth++;
            }

            break;

        case '}':
        case ']':
            if (u->capturing && --u->depth == 0) {
                ngx_http_llm_usage_read(u);
                u->capturing = 0;
            }

            break;

        default:
            break;
        }

        u->value = 0;
        u->maybe_key = 0;
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
ngx_http_llm_usage_key(ngx_http_llm_usage_t *u)
{
    ngx_http_llm_json_key_t  *k;

    for (k = ngx_http_llm_json_keys; k->name.len; k++) {
        if (k->name.len == u->key_len
            && ngx_memcmp(k->name.data, u->key, u->key_len) == 0)
        {
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
    u->kind = NGX_HTTP_LLM_KEY_OTHER;
    u->role = NGX_HTTP_LLM_STR_OTHER;
}


/*
 * One usage object, whatever the API: OpenAI prompt_tokens and
 * completion_tokens; Anthropic input_tokens (with the cache's tokens)
 * and output_tokens, also OpenAI responses' names; Gemini
 * promptTokenCount and candidatesTokenCount with thoughtsTokenCount.
 * What one object names replaces what an earlier one said.
 */

static void
ngx_http_llm_usage_read(ngx_http_llm_usage_t *u)
{
    json_t      *root;
    ngx_uint_t   a, b, c, n;

    if (u->captured > NGX_HTTP_LLM_USAGE_CAP) {
        return;
    }

    root = json_loadb((char *) u->capture, u->captured, 0, NULL);
    if (root == NULL) {
        return;
    }

    if (!json_is_object(root)) {
        json_decref(root);
        return;
    }

    if (ngx_http_llm_usage_count(root, "prompt_tokens", &n)) {
        u->prompt_tokens = n;
        u->found = 1;
    }

    if (ngx_http_llm_usage_count(root, "completion_tokens", &n)) {
        u->completion_tokens = n;
        u->found = 1;
    }

    if (ngx_http_llm_usage_count(root, "input_tokens", &n)) {
        a = b = 0;

        (void) ngx_http_llm_usage_count(root, "cache_creation_input_tokens",
                                        &a);
        (void) ngx_http_llm_usage_count(root, "cache_read_input_tokens", &b);

        u->prompt_tokens = n + a + b;
        u->found = 1;
    }

    if (ngx_http_llm_usage_count(root, "output_tokens", &n)) {
        u->completion_tokens = n;
        u->found = 1;
    }

    if (ngx_http_llm_usage_count(root, "promptTokenCount", &n)) {
        a = 0;

        (void) ngx_http_llm_usage_count(root, "toolUsePromptTokenCount", &a);

        u->prompt_tokens = n + a;
        u->found = 1;
    }

    b = 0;
    c = 0;

    if (ngx_http_llm_usage_count(root, "candidatesTokenCount", &b)
        | ngx_http_llm_usage_count(root, "thoughtsTokenCount", &c))
    {
        u->completion_tokens = b + c;
        u->found = 1;
    }

    json_decref(root);
}


static ngx_int_t
ngx_http_llm_usage_count(json_t *obj, char *name, ngx_uint_t *n)
{
    json_t      *v;
    json_int_t   i;

    v = json_object_get(obj, name);

    if (!json_is_integer(v)) {
        return 0;
    }

    i = json_integer_value(v);

    if (i < 0 || i > NGX_HTTP_LLM_USAGE_MAX) {
        return 0;
    }

    *n = (ngx_uint_t) i;

    return 1;
}
