
/*
 * ngx_llm_gateway: the reference request parser for differential
 * fuzzing.  This is the jansson-based ngx_http_llm_json_parse_request()
 * that src/ngx_http_llm_json.c had before the tape
 * (src/ngx_http_llm_jtape.c) replaced it, kept verbatim but for names:
 * fuzz_request.c checks that both read every body the same way.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <jansson.h>

#include "ngx_http_llm_json.h"


ngx_int_t ref_parse_request(ngx_pool_t *pool, ngx_uint_t api, u_char *body,
    size_t len, ngx_http_llm_request_info_t *info, ngx_str_t *error);


/* completions one request asks for are counted up to this */
#define NGX_HTTP_LLM_CHOICES_MAX    2147483647


static ngx_int_t ref_json_depth_ok(u_char *p, size_t len, ngx_uint_t max);
static ngx_int_t ref_json_error(ngx_pool_t *pool, json_error_t *err,
    ngx_str_t *error);
static ngx_int_t ref_json_openai(ngx_pool_t *pool, json_t *root,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ref_json_anthropic(ngx_pool_t *pool, json_t *root,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ref_json_messages(json_t *v,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ref_json_gemini(ngx_pool_t *pool, json_t *root,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ref_json_gemini_content(json_t *c,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ref_json_model(ngx_pool_t *pool, json_t *root,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ref_json_max_tokens(ngx_pool_t *pool, json_t *obj,
    char **names, ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ref_json_stream(json_t *root,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static void ref_json_choices(json_t *obj, char *name,
    ngx_http_llm_request_info_t *info);
static ngx_int_t ref_json_content(json_t *v,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static void ref_json_part(json_t *part,
    ngx_http_llm_request_info_t *info, ngx_uint_t nested);
static void ref_json_input(json_t *v,
    ngx_http_llm_request_info_t *info, ngx_uint_t nested);
static void ref_json_text(json_t *v,
    ngx_http_llm_request_info_t *info);
static void ref_json_walk(json_t *v,
    ngx_http_llm_request_info_t *info);
static ngx_uint_t ref_json_gemini_embed(json_t *root,
    ngx_http_llm_request_info_t *info);


ngx_int_t
ref_parse_request(ngx_pool_t *pool, ngx_uint_t api,
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

    if (!ref_json_depth_ok(body, len, NGX_HTTP_LLM_JSON_DEPTH)) {
        ngx_str_set(error, "request body is nested more than 64 levels deep");
        return NGX_DECLINED;
    }

    root = json_loadb((char *) body, len, JSON_DECODE_ANY|JSON_ALLOW_NUL,
                      &err);

    if (root == NULL && json_error_code(&err) == json_error_numeric_overflow) {
        /* an integer beyond 64 bits: numbers as reals, as the tape has it */
        root = json_loadb((char *) body, len,
                          JSON_DECODE_ANY|JSON_ALLOW_NUL
                          |JSON_DECODE_INT_AS_REAL, &err);
    }

    if (root == NULL) {
        return ref_json_error(pool, &err, error);
    }

    if (!json_is_object(root)) {
        json_decref(root);
        ngx_str_set(error, "request body is not a JSON object");
        return NGX_DECLINED;
    }

    switch (api) {

    case NGX_HTTP_LLM_API_ANTHROPIC:
        rc = ref_json_anthropic(pool, root, info, error);
        break;

    case NGX_HTTP_LLM_API_GEMINI:
        rc = ref_json_gemini(pool, root, info, error);
        break;

    default: /* NGX_HTTP_LLM_API_OPENAI */
        rc = ref_json_openai(pool, root, info, error);
    }

    if (rc == NGX_OK) {
        rc = ref_json_model(pool, root, info, error);
    }

    json_decref(root);

    return rc;
}


/*
 * Refuses what nests deeper than "max" without building anything, so a
 * hostile body is refused in one pass of the bytes.  Brackets in strings
 * do not count.
 */

static ngx_int_t
ref_json_depth_ok(u_char *p, size_t len, ngx_uint_t max)
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
ref_json_error(ngx_pool_t *pool, json_error_t *err,
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
ref_json_openai(ngx_pool_t *pool, json_t *root,
    ngx_http_llm_request_info_t *info, ngx_str_t *error)
{
    json_t     *v;
    ngx_int_t   rc;

    static char  *max[] = { "max_tokens", "max_completion_tokens",
                            "max_output_tokens", NULL };

    rc = ref_json_max_tokens(pool, root, max, info, error);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ref_json_stream(root, info, error) != NGX_OK) {
        return NGX_DECLINED;
    }

    v = json_object_get(root, "stream_options");

    if (json_is_object(v) && json_is_true(json_object_get(v, "include_usage")))
    {
        info->has_include_usage = 1;
    }

    ref_json_choices(root, "n", info);

    v = json_object_get(root, "messages");

    if (v != NULL) {
        if (ref_json_messages(v, info, error) != NGX_OK) {
            return NGX_DECLINED;
        }

    } else if ((v = json_object_get(root, "prompt")) != NULL) {
        ref_json_input(v, info, 0);
        ref_json_text(json_object_get(root, "suffix"), info);

    } else if ((v = json_object_get(root, "input")) != NULL) {
        ref_json_input(v, info, 0);

    } else {
        ngx_str_set(error,
                    "request has no \"messages\", \"prompt\" or \"input\"");
        return NGX_DECLINED;
    }

    v = json_object_get(root, "instructions");

    if (json_is_string(v)) {
        info->messages++;
        ref_json_text(v, info);
    }

    ref_json_walk(json_object_get(root, "tools"), info);
    ref_json_walk(json_object_get(root, "functions"), info);
    ref_json_walk(json_object_get(root, "response_format"), info);

    return NGX_OK;
}


/* Anthropic: messages, and the legacy text completions ("prompt") */

static ngx_int_t
ref_json_anthropic(ngx_pool_t *pool, json_t *root,
    ngx_http_llm_request_info_t *info, ngx_str_t *error)
{
    json_t     *v, *m;
    ngx_int_t   rc;

    static char  *max[] = { "max_tokens", "max_tokens_to_sample", NULL };

    rc = ref_json_max_tokens(pool, root, max, info, error);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ref_json_stream(root, info, error) != NGX_OK) {
        return NGX_DECLINED;
    }

    v = json_object_get(root, "system");

    if (v != NULL && !json_is_null(v)) {
        if (!json_is_string(v) && !json_is_array(v)) {
            ngx_str_set(error, "\"system\" must be a string or an array");
            return NGX_DECLINED;
        }

        info->messages++;
        (void) ref_json_content(v, info, error);
    }

    v = json_object_get(root, "messages");

    if (v == NULL) {
        m = json_object_get(root, "prompt");

        if (!json_is_string(m)) {
            ngx_str_set(error, "request has no \"messages\"");
            return NGX_DECLINED;
        }

        ref_json_text(m, info);

        return NGX_OK;
    }

    if (ref_json_messages(v, info, error) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (info->max_tokens == -1) {
        /* the Messages API requires it; say so before the backend does */
        ngx_str_set(error, "max_tokens: Field required");
        return NGX_DECLINED;
    }

    ref_json_walk(json_object_get(root, "tools"), info);

    return NGX_OK;
}


/*
 * Chat messages, OpenAI's or Anthropic's: each an object with content
 * (a string or parts); OpenAI's may also carry a name and tool calls,
 * whose names and arguments the model reads as prompt too.
 */

static ngx_int_t
ref_json_messages(json_t *v, ngx_http_llm_request_info_t *info,
    ngx_str_t *error)
{
    size_t   i, j;
    json_t  *m, *call, *f;

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

        if (ref_json_content(json_object_get(m, "content"), info,
                                      error)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }

        ref_json_text(json_object_get(m, "name"), info);

        call = json_object_get(m, "function_call");

        if (json_is_object(call)) {
            ref_json_text(json_object_get(call, "name"), info);
            ref_json_text(json_object_get(call, "arguments"), info);
        }

        json_array_foreach(json_object_get(m, "tool_calls"), j, call) {
            f = json_object_get(call, "function");

            if (json_is_object(f)) {
                ref_json_text(json_object_get(f, "name"), info);
                ref_json_text(json_object_get(f, "arguments"), info);
            }
        }
    }

    return NGX_OK;
}


/*
 * Gemini generateContent: the stream flag is in the URI, not the body.
 * The protobuf JSON mapping accepts field names in lowerCamelCase and
 * in snake_case: both are read.
 */

static ngx_int_t
ref_json_gemini(ngx_pool_t *pool, json_t *root,
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

        rc = ref_json_max_tokens(pool, v, max, info, error);
        if (rc != NGX_OK) {
            return rc;
        }

        ref_json_choices(v, "candidateCount", info);
        ref_json_choices(v, "candidate_count", info);
    }

    v = json_object_get(root, "systemInstruction");

    if (v == NULL) {
        v = json_object_get(root, "system_instruction");
    }

    if (json_is_object(v)) {
        info->messages++;

        json_array_foreach(json_object_get(v, "parts"), i, part) {
            ref_json_part(part, info, 0);
        }

    } else if (json_is_string(v)) {
        info->messages++;
        ref_json_text(v, info);
    }

    v = json_object_get(root, "contents");

    if (json_is_object(v)) {
        return ref_json_gemini_content(v, info, error);
    }

    if (v == NULL && ref_json_gemini_embed(root, info)) {
        return NGX_OK;
    }

    if (!json_is_array(v)) {
        ngx_str_set(error, "request has no \"contents\" array");
        return NGX_DECLINED;
    }

    json_array_foreach(v, i, c) {
        if (ref_json_gemini_content(c, info, error) != NGX_OK) {
            return NGX_DECLINED;
        }
    }

    ref_json_walk(json_object_get(root, "tools"), info);

    return NGX_OK;
}


/* one EmbedContentRequest's content (parts) and title; 0: none */

static ngx_uint_t
ref_json_gemini_embedded(json_t *r, ngx_http_llm_request_info_t *info)
{
    size_t   i;
    json_t  *c, *part;

    c = json_object_get(r, "content");

    if (!json_is_object(c)) {
        return 0;
    }

    json_array_foreach(json_object_get(c, "parts"), i, part) {
        ref_json_part(part, info, 0);
    }

    ref_json_text(json_object_get(r, "title"), info);

    return 1;
}


/* embedContent's "content", batchEmbedContents' "requests" of them */

static ngx_uint_t
ref_json_gemini_embed(json_t *root, ngx_http_llm_request_info_t *info)
{
    size_t      i;
    json_t     *r;
    ngx_uint_t  found;

    if (ref_json_gemini_embedded(root, info)) {
        return 1;
    }

    found = 0;

    json_array_foreach(json_object_get(root, "requests"), i, r) {
        found |= ref_json_gemini_embedded(r, info);
    }

    return found;
}


/* one Content: a role and parts */

static ngx_int_t
ref_json_gemini_content(json_t *c, ngx_http_llm_request_info_t *info,
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
        ref_json_part(part, info, 0);
    }

    return NGX_OK;
}


static ngx_int_t
ref_json_model(ngx_pool_t *pool, json_t *root,
    ngx_http_llm_request_info_t *info, ngx_str_t *error)
{
    size_t       len, i;
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

    for (i = 0; i < len; i++) {
        if ((u_char) s[i] < 0x20 || s[i] == 0x7f) {
            break;
        }
    }

    /* a NUL or CR LF (a header through $llm_model) is no model's name */

    if (len > NGX_HTTP_LLM_MODEL_MAX || i < len) {
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
ref_json_max_tokens(ngx_pool_t *pool, json_t *obj, char **names,
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
ref_json_stream(json_t *root, ngx_http_llm_request_info_t *info,
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


/* how many completions a request asks for, however many */

static void
ref_json_choices(json_t *obj, char *name,
    ngx_http_llm_request_info_t *info)
{
    double       d;
    json_t      *v;
    json_int_t   n;

    v = json_object_get(obj, name);

    if (json_is_integer(v)) {
        n = json_integer_value(v);

    } else if (json_is_real(v)) {
        d = json_real_value(v);

        if (!(d >= 1)) {
            return;
        }

        if (d >= (double) NGX_HTTP_LLM_CHOICES_MAX) {
            n = NGX_HTTP_LLM_CHOICES_MAX;

        } else if (d == (double) (json_int_t) d) {
            n = (json_int_t) d;

        } else {
            return;
        }

    } else {
        return;
    }

    if (n >= 1) {
        info->choices = (ngx_uint_t) (n < NGX_HTTP_LLM_CHOICES_MAX
                                      ? n : NGX_HTTP_LLM_CHOICES_MAX);
    }
}


/* a message's content: a string, an array of parts, or null */

static ngx_int_t
ref_json_content(json_t *v, ngx_http_llm_request_info_t *info,
    ngx_str_t *error)
{
    size_t   i;
    json_t  *part;

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    if (json_is_string(v)) {
        ref_json_text(v, info);
        return NGX_OK;
    }

    if (!json_is_array(v)) {
        ngx_str_set(error, "message content must be a string or an array");
        return NGX_DECLINED;
    }

    json_array_foreach(v, i, part) {
        ref_json_part(part, info, 0);
    }

    return NGX_OK;
}


/* a string's value, or NULL: not a string, or one with a NUL in it */

static const char *
ref_string(json_t *v)
{
    const char  *s;

    s = json_string_value(v);

    return (s && strlen(s) == json_string_length(v)) ? s : NULL;
}


/*
 * One part of a content array, in any of the three shapes: text, an
 * image or file (a fixed cost, once however it is given), an Anthropic
 * document of text (its text), a tool call or its result.
 */

static void
ref_json_part(json_t *part, ngx_http_llm_request_info_t *info,
    ngx_uint_t nested)
{
    size_t       i;
    json_t      *v, *p, *src;
    ngx_uint_t   media;
    const char  *type, *stype;

    if (json_is_string(part)) {
        ref_json_text(part, info);
        return;
    }

    if (!json_is_object(part)) {
        return;
    }

    ref_json_text(json_object_get(part, "text"), info);
    ref_json_text(json_object_get(part, "thinking"), info);

    media = (json_object_get(part, "inlineData") != NULL
             || json_object_get(part, "inline_data") != NULL
             || json_object_get(part, "fileData") != NULL
             || json_object_get(part, "file_data") != NULL);

    type = ref_string(json_object_get(part, "type"));

    if (type != NULL
        && (ngx_strcmp(type, "image_url") == 0
            || ngx_strcmp(type, "image") == 0
            || ngx_strcmp(type, "input_image") == 0
            || ngx_strcmp(type, "input_audio") == 0
            || ngx_strcmp(type, "input_file") == 0
            || ngx_strcmp(type, "file") == 0
            || ngx_strcmp(type, "document") == 0))
    {
        media = 1;
    }

    if (type != NULL && ngx_strcmp(type, "document") == 0) {
        src = json_object_get(part, "source");
        stype = ref_string(json_object_get(src, "type"));

        if (stype != NULL && ngx_strcmp(stype, "text") == 0) {
            ref_json_text(json_object_get(src, "data"), info);
            media = 0;

        } else if (stype != NULL && ngx_strcmp(stype, "content") == 0) {
            v = json_object_get(src, "content");

            if (json_is_string(v)) {
                ref_json_text(v, info);

            } else {
                json_array_foreach(v, i, p) {
                    ref_json_part(p, info, 1);
                }
            }

            media = 0;
        }

        if (!media) {
            ref_json_text(json_object_get(part, "title"), info);
            ref_json_text(json_object_get(part, "context"), info);
        }
    }

    if (media) {
        ngx_http_llm_estimate_add_tokens(&info->estimate,
                                         NGX_HTTP_LLM_TOKENS_PER_IMAGE);
    }

    /* Anthropic tool_use, Gemini function calls and responses */

    ref_json_walk(json_object_get(part, "input"), info);
    ref_json_walk(json_object_get(part, "functionCall"), info);
    ref_json_walk(json_object_get(part, "function_call"), info);
    ref_json_walk(json_object_get(part, "functionResponse"), info);
    ref_json_walk(json_object_get(part, "function_response"), info);

    /* Anthropic tool_result: its content is a string or parts */

    v = json_object_get(part, "content");

    if (json_is_string(v)) {
        ref_json_text(v, info);

    } else if (!nested) {
        json_array_foreach(v, i, p) {
            ref_json_part(p, info, 1);
        }
    }
}


/*
 * OpenAI "prompt" and "input": a string, strings, token ids, arrays of
 * token ids, or (responses) message items.
 */

static void
ref_json_input(json_t *v, ngx_http_llm_request_info_t *info,
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
        ref_json_text(v, info);
        break;

    case JSON_INTEGER:
    case JSON_REAL:
        ngx_http_llm_estimate_add_tokens(&info->estimate, 1);
        break;

    case JSON_ARRAY:
        if (nested) {
            json_array_foreach(v, i, item) {
                if (json_is_number(item)) {
                    ngx_http_llm_estimate_add_tokens(&info->estimate, 1);
                }
            }

            break;
        }

        json_array_foreach(v, i, item) {
            ref_json_input(item, info, 1);
        }

        break;

    case JSON_OBJECT:

        /* a responses item: a message, a function call or its output */

        if (nested) {
            info->messages++;
            (void) ref_json_content(json_object_get(v, "content"),
                                             info, &ignored);
            ref_json_text(json_object_get(v, "arguments"), info);
            ref_json_text(json_object_get(v, "output"), info);
        }

        break;

    default:
        break;
    }
}


static void
ref_json_text(json_t *v, ngx_http_llm_request_info_t *info)
{
    if (json_is_string(v)) {
        ngx_http_llm_estimate_add(&info->estimate,
                                  (u_char *) json_string_value(v),
                                  json_string_length(v));
    }
}


/* every key and string of a tool definition or a call's arguments */

static void
ref_json_walk(json_t *v, ngx_http_llm_request_info_t *info)
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
            ref_json_walk(item, info);
        }

        break;

    case JSON_ARRAY:
        json_array_foreach(v, i, item) {
            ref_json_walk(item, info);
        }

        break;

    case JSON_STRING:
        ref_json_text(v, info);
        break;

    default:
        break;
    }
}


