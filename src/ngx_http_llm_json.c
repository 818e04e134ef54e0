
/*
 * ngx_llm_gateway: what a request body says.
 *
 * Owns reading a request: its model, max tokens, stream flag and every
 * prompt string (OpenAI chat, completions, embeddings and responses;
 * Anthropic messages; Gemini generateContent), adding
 * stream_options.include_usage to an OpenAI request, and the canonical
 * form of a request that $llm_cache_key hashes.  A request is read
 * from its tape (ngx_http_llm_jtape.c: one pass, no tree).  jansson,
 * whose trees are malloc()ed and released before the function that
 * built them returns, is used here only to write the canonical form
 * (when $llm_cache_key is used).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <jansson.h>

#include "ngx_http_llm_json.h"
#include "ngx_http_llm_jtape.h"


/*
 * completions one request asks for are counted up to this, the range of
 * a maximum: times a maximum, it still fits 64 bits (and no window)
 */
#define NGX_HTTP_LLM_CHOICES_MAX    2147483647

/* shorthands for reading the tape "t" */
#define jt_is(v, ty)    ngx_http_llm_jt_is(t, v, NGX_HTTP_LLM_JT_##ty)
#define jt_type(v)      ngx_http_llm_jt_type(t, v)
#define jt_get(o, name) ngx_http_llm_jtape_get(t, o, name, sizeof(name) - 1)
#define jt_first(a)     ngx_http_llm_jt_first(t, a)
#define jt_next(a, i)   ngx_http_llm_jt_next(t, a, i)


static ngx_int_t ngx_http_llm_json_walk_api(ngx_http_llm_jtape_t *t,
    ngx_uint_t api, ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ngx_http_llm_json_openai(ngx_http_llm_jtape_t *t,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ngx_http_llm_json_anthropic(ngx_http_llm_jtape_t *t,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ngx_http_llm_json_messages(ngx_http_llm_jtape_t *t,
    ngx_uint_t v, ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ngx_http_llm_json_gemini(ngx_http_llm_jtape_t *t,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ngx_http_llm_json_gemini_content(ngx_http_llm_jtape_t *t,
    ngx_uint_t c, ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ngx_http_llm_json_model(ngx_http_llm_jtape_t *t,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ngx_http_llm_json_max_tokens(ngx_http_llm_jtape_t *t,
    ngx_uint_t *v, ngx_str_t *names, ngx_uint_t n,
    ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ngx_http_llm_json_stream(ngx_http_llm_jtape_t *t,
    ngx_uint_t v, ngx_http_llm_request_info_t *info, ngx_str_t *error);
static ngx_int_t ngx_http_llm_json_choices(ngx_http_llm_jtape_t *t,
    ngx_uint_t v, ngx_http_llm_request_info_t *info);
static ngx_int_t ngx_http_llm_json_content(ngx_http_llm_jtape_t *t,
    ngx_uint_t v, ngx_http_llm_request_info_t *info, ngx_str_t *error);
static void ngx_http_llm_json_part(ngx_http_llm_jtape_t *t, ngx_uint_t part,
    ngx_http_llm_request_info_t *info, ngx_uint_t nested);
static void ngx_http_llm_json_input(ngx_http_llm_jtape_t *t, ngx_uint_t v,
    ngx_http_llm_request_info_t *info, ngx_uint_t nested);
static void ngx_http_llm_json_text(ngx_http_llm_jtape_t *t, ngx_uint_t v,
    ngx_http_llm_request_info_t *info);
static void ngx_http_llm_json_walk(ngx_http_llm_jtape_t *t, ngx_uint_t v,
    ngx_http_llm_request_info_t *info);
static ngx_int_t ngx_http_llm_json_canonical(ngx_pool_t *pool, u_char *body,
    size_t len, ngx_str_t *out);
static ngx_int_t ngx_http_llm_json_dump_sorted(ngx_pool_t *pool,
    json_t *root, ngx_str_t *out);
static ngx_int_t ngx_http_llm_json_set_usage(ngx_pool_t *pool, u_char *body,
    size_t len, ngx_str_t *out);
static ngx_uint_t ngx_http_llm_json_document(ngx_http_llm_jtape_t *t,
    ngx_uint_t part, ngx_http_llm_request_info_t *info);
static ngx_uint_t ngx_http_llm_json_gemini_embed(ngx_http_llm_jtape_t *t,
    ngx_http_llm_request_info_t *info);
static ngx_uint_t ngx_http_llm_json_gemini_embedded(ngx_http_llm_jtape_t *t,
    ngx_uint_t r, ngx_http_llm_request_info_t *info);


ngx_int_t
ngx_http_llm_json_parse_request(ngx_pool_t *pool, ngx_uint_t api,
    u_char *body, size_t len, ngx_http_llm_request_info_t *info,
    ngx_str_t *canonical, ngx_str_t *error)
{
    return ngx_http_llm_json_parse_request_bpe(pool, api, body, len, info,
                                               canonical, error, NULL);
}


ngx_int_t
ngx_http_llm_json_parse_request_bpe(ngx_pool_t *pool, ngx_uint_t api,
    u_char *body, size_t len, ngx_http_llm_request_info_t *info,
    ngx_str_t *canonical, ngx_str_t *error, ngx_http_llm_bpe_t *bpe)
{
    ngx_int_t              rc;
    ngx_str_t              unused;
    ngx_uint_t             i, *order;
    ngx_http_llm_jtape_t   tape, *t;

    /* the order in which "auto" tries the three shapes */

    static ngx_uint_t      openai_first[] = {
        NGX_HTTP_LLM_API_OPENAI, NGX_HTTP_LLM_API_ANTHROPIC,
        NGX_HTTP_LLM_API_GEMINI
    };

    static ngx_uint_t      anthropic_first[] = {
        NGX_HTTP_LLM_API_ANTHROPIC, NGX_HTTP_LLM_API_OPENAI,
        NGX_HTTP_LLM_API_GEMINI
    };

    /*
     * the tape is read at once and forgotten: its first tokens are the
     * worker's, and a request's pool pays only for a larger body's
     */

    static ngx_http_llm_jtok_t  tok[512];

    ngx_memzero(info, sizeof(ngx_http_llm_request_info_t));

    info->max_tokens = -1;
    info->choices = 1;
    ngx_http_llm_estimate_init(&info->estimate);
    info->estimate.bpe = bpe;

    if (len == 0) {
        ngx_str_set(error, "request body is empty");
        return NGX_DECLINED;
    }

    t = &tape;
    ngx_memzero(t, sizeof(ngx_http_llm_jtape_t));

    t->tok = tok;
    t->nalloc = sizeof(tok) / sizeof(ngx_http_llm_jtok_t);

    rc = ngx_http_llm_jtape_parse(t, pool, body, len, NGX_HTTP_LLM_JSON_DEPTH,
                                  error);
    if (rc != NGX_OK) {
        ngx_http_llm_jtape_free(t);
        return rc;
    }

    if (!jt_is(1, OBJECT)) {
        ngx_http_llm_jtape_free(t);
        ngx_str_set(error, "request body is not a JSON object");
        return NGX_DECLINED;
    }

    info->has_members = (t->tok[1].next > 2);

    if (api == NGX_HTTP_LLM_API_AUTO) {

        /*
         * the first of the three shapes the body fits, from one tape;
         * a top-level "system" is Anthropic's alone, and a messages
         * request without its max_tokens still fits Anthropic's
         */

        order = jt_get(1, "system") ? anthropic_first : openai_first;

        for (i = 0; /* void */; i++) {
            rc = ngx_http_llm_json_walk_api(t, order[i], info, error);

            if (rc != NGX_DECLINED || info->no_max || i == 2) {
                break;
            }

            ngx_memzero(info, sizeof(ngx_http_llm_request_info_t));
            info->max_tokens = -1;
            info->choices = 1;
            info->estimate.bpe = bpe;
            info->has_members = (t->tok[1].next > 2);
        }

    } else {
        rc = ngx_http_llm_json_walk_api(t, api, info, error);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_llm_json_model(t, info, error);

    } else if (rc == NGX_DECLINED && info->no_max) {

        /* the model of a count of tokens (it needs no max_tokens) */

        if (ngx_http_llm_json_model(t, info, &unused) == NGX_ERROR) {
            rc = NGX_ERROR;
        }
    }

    /* what is kept (the model, a message) has its own copy */

    ngx_http_llm_jtape_free(t);

    if (rc == NGX_OK && canonical) {
        rc = ngx_http_llm_json_canonical(pool, body, len, canonical);
    }

    return rc;
}


static ngx_int_t
ngx_http_llm_json_walk_api(ngx_http_llm_jtape_t *t, ngx_uint_t api,
    ngx_http_llm_request_info_t *info, ngx_str_t *error)
{
    switch (api) {

    case NGX_HTTP_LLM_API_ANTHROPIC:
        return ngx_http_llm_json_anthropic(t, info, error);

    case NGX_HTTP_LLM_API_GEMINI:
        return ngx_http_llm_json_gemini(t, info, error);

    default: /* NGX_HTTP_LLM_API_OPENAI */
        return ngx_http_llm_json_openai(t, info, error);
    }
}


/*
 * OpenAI: chat completions ("messages"), completions ("prompt"),
 * embeddings and responses ("input", "instructions").
 */

static ngx_int_t
ngx_http_llm_json_openai(ngx_http_llm_jtape_t *t,
    ngx_http_llm_request_info_t *info, ngx_str_t *error)
{
    ngx_int_t   rc;
    ngx_uint_t  v, m[14];

    /* the members read, in one pass; max tokens first (json_max_tokens) */

    static ngx_str_t  names[] = {
        ngx_string("max_tokens"),            /* 0 */
        ngx_string("max_completion_tokens"),
        ngx_string("max_output_tokens"),     /* 2 */
        ngx_string("stream"),
        ngx_string("stream_options"),        /* 4 */
        ngx_string("n"),
        ngx_string("messages"),              /* 6 */
        ngx_string("prompt"),
        ngx_string("suffix"),                /* 8 */
        ngx_string("input"),
        ngx_string("instructions"),          /* 10 */
        ngx_string("tools"),
        ngx_string("functions"),             /* 12 */
        ngx_string("response_format"),
        ngx_null_string
    };

    static ngx_http_llm_jtape_keys_t  keys = ngx_http_llm_jtape_keys(names);

    ngx_http_llm_jtape_pick(t, 1, &keys, m);

    rc = ngx_http_llm_json_max_tokens(t, m, names, 3, info, error);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_llm_json_stream(t, m[3], info, error) != NGX_OK) {
        return NGX_DECLINED;
    }

    v = m[4];

    info->has_stream_options = (v != 0);

    if (jt_is(v, OBJECT) && jt_is(jt_get(v, "include_usage"), TRUE)) {
        info->has_include_usage = 1;
    }

    if (ngx_http_llm_json_choices(t, m[5], info) != NGX_OK) {
        return NGX_ERROR;
    }

    if ((v = m[6]) != 0) {
        if (ngx_http_llm_json_messages(t, v, info, error) != NGX_OK) {
            return NGX_DECLINED;
        }

    } else if ((v = m[7]) != 0) {
        ngx_http_llm_json_input(t, v, info, 0);
        ngx_http_llm_json_text(t, m[8], info);

    } else if ((v = m[9]) != 0) {
        info->input_text = jt_is(v, STRING);
        ngx_http_llm_json_input(t, v, info, 0);

    } else {
        info->no_prompt = 1;
        ngx_str_set(error,
                    "request has no \"messages\", \"prompt\" or \"input\"");
        return NGX_DECLINED;
    }

    v = m[10];

    if (jt_is(v, STRING)) {
        info->messages++;
        ngx_http_llm_json_text(t, v, info);
    }

    ngx_http_llm_json_walk(t, m[11], info);
    ngx_http_llm_json_walk(t, m[12], info);
    ngx_http_llm_json_walk(t, m[13], info);

    return NGX_OK;
}


/* Anthropic: messages, and the legacy text completions ("prompt") */

static ngx_int_t
ngx_http_llm_json_anthropic(ngx_http_llm_jtape_t *t,
    ngx_http_llm_request_info_t *info, ngx_str_t *error)
{
    ngx_int_t   rc;
    ngx_uint_t  v, m, a[7];

    static ngx_str_t  names[] = {
        ngx_string("max_tokens"),            /* 0 */
        ngx_string("max_tokens_to_sample"),
        ngx_string("stream"),                /* 2 */
        ngx_string("system"),
        ngx_string("messages"),              /* 4 */
        ngx_string("prompt"),
        ngx_string("tools"),                 /* 6 */
        ngx_null_string
    };

    static ngx_http_llm_jtape_keys_t  keys = ngx_http_llm_jtape_keys(names);

    ngx_http_llm_jtape_pick(t, 1, &keys, a);

    rc = ngx_http_llm_json_max_tokens(t, a, names, 2, info, error);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_llm_json_stream(t, a[2], info, error) != NGX_OK) {
        return NGX_DECLINED;
    }

    v = a[3];

    if (v && !jt_is(v, NULL)) {
        if (!jt_is(v, STRING) && !jt_is(v, ARRAY)) {
            ngx_str_set(error, "\"system\" must be a string or an array");
            return NGX_DECLINED;
        }

        info->messages++;
        (void) ngx_http_llm_json_content(t, v, info, error);
    }

    v = a[4];

    if (v == 0) {
        m = a[5];

        if (!jt_is(m, STRING)) {
            info->no_prompt = (m == 0);
            ngx_str_set(error, "request has no \"messages\"");
            return NGX_DECLINED;
        }

        ngx_http_llm_json_text(t, m, info);

        return NGX_OK;
    }

    if (ngx_http_llm_json_messages(t, v, info, error) != NGX_OK) {
        return NGX_DECLINED;
    }

    ngx_http_llm_json_walk(t, a[6], info);

    if (info->max_tokens == -1) {
        /*
         * the Messages API requires it; say so before the backend does
         * (the prompt is counted: a token count needs no maximum)
         */
        info->no_max = 1;
        ngx_str_set(error, "max_tokens: Field required");
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * Chat messages, OpenAI's or Anthropic's: each an object with content
 * (a string or parts); OpenAI's may also carry a name and tool calls,
 * whose names and arguments the model reads as prompt too.
 */

static ngx_int_t
ngx_http_llm_json_messages(ngx_http_llm_jtape_t *t, ngx_uint_t v,
    ngx_http_llm_request_info_t *info, ngx_str_t *error)
{
    ngx_uint_t  m, call, calls, f, k[4];

    static ngx_str_t  names[] = {
        ngx_string("content"),
        ngx_string("name"),
        ngx_string("function_call"),
        ngx_string("tool_calls"),
        ngx_null_string
    };

    static ngx_http_llm_jtape_keys_t  keys = ngx_http_llm_jtape_keys(names);

    if (!jt_is(v, ARRAY)) {
        ngx_str_set(error, "\"messages\" must be an array");
        return NGX_DECLINED;
    }

    for (m = jt_first(v); m; m = jt_next(v, m)) {

        if (!jt_is(m, OBJECT)) {
            ngx_str_set(error, "each of \"messages\" must be an object");
            return NGX_DECLINED;
        }

        info->messages++;

        ngx_http_llm_jtape_pick(t, m, &keys, k);

        if (ngx_http_llm_json_content(t, k[0], info, error) != NGX_OK) {
            return NGX_DECLINED;
        }

        ngx_http_llm_json_text(t, k[1], info);

        call = k[2];

        if (jt_is(call, OBJECT)) {
            ngx_http_llm_json_text(t, jt_get(call, "name"), info);
            ngx_http_llm_json_text(t, jt_get(call, "arguments"), info);
        }

        calls = k[3];

        for (call = jt_first(calls); call; call = jt_next(calls, call)) {
            f = jt_get(call, "function");

            if (jt_is(f, OBJECT)) {
                ngx_http_llm_json_text(t, jt_get(f, "name"), info);
                ngx_http_llm_json_text(t, jt_get(f, "arguments"), info);
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
ngx_http_llm_json_gemini(ngx_http_llm_jtape_t *t,
    ngx_http_llm_request_info_t *info, ngx_str_t *error)
{
    ngx_int_t   rc;
    ngx_uint_t  v, c, part, parts, g[4];

    static ngx_str_t  names[] = {
        ngx_string("maxOutputTokens"),
        ngx_string("max_output_tokens"),
        ngx_string("candidateCount"),
        ngx_string("candidate_count"),
        ngx_null_string
    };

    static ngx_http_llm_jtape_keys_t  keys = ngx_http_llm_jtape_keys(names);

    v = jt_get(1, "generationConfig");

    if (v == 0) {
        v = jt_get(1, "generation_config");
    }

    if (v && !jt_is(v, NULL)) {
        if (!jt_is(v, OBJECT)) {
            ngx_str_set(error, "\"generationConfig\" must be an object");
            return NGX_DECLINED;
        }

        ngx_http_llm_jtape_pick(t, v, &keys, g);

        rc = ngx_http_llm_json_max_tokens(t, g, names, 2, info, error);
        if (rc != NGX_OK) {
            return rc;
        }

        if (ngx_http_llm_json_choices(t, g[2], info) != NGX_OK
            || ngx_http_llm_json_choices(t, g[3], info) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    v = jt_get(1, "systemInstruction");

    if (v == 0) {
        v = jt_get(1, "system_instruction");
    }

    if (jt_is(v, OBJECT)) {
        info->messages++;

        parts = jt_get(v, "parts");

        for (part = jt_first(parts); part; part = jt_next(parts, part)) {
            ngx_http_llm_json_part(t, part, info, 0);
        }

    } else if (jt_is(v, STRING)) {
        info->messages++;
        ngx_http_llm_json_text(t, v, info);
    }

    v = jt_get(1, "contents");

    if (jt_is(v, OBJECT)) {
        return ngx_http_llm_json_gemini_content(t, v, info, error);
    }

    if (v == 0 && ngx_http_llm_json_gemini_embed(t, info)) {
        return NGX_OK;
    }

    if (!jt_is(v, ARRAY)) {
        info->no_prompt = (v == 0);
        ngx_str_set(error, "request has no \"contents\" array");
        return NGX_DECLINED;
    }

    for (c = jt_first(v); c; c = jt_next(v, c)) {
        if (ngx_http_llm_json_gemini_content(t, c, info, error) != NGX_OK) {
            return NGX_DECLINED;
        }
    }

    ngx_http_llm_json_walk(t, jt_get(1, "tools"), info);

    return NGX_OK;
}


/*
 * embedContent's "content", batchEmbedContents' "requests" of them:
 * their parts and titles are the prompt.  0: neither is there.
 */

static ngx_uint_t
ngx_http_llm_json_gemini_embed(ngx_http_llm_jtape_t *t,
    ngx_http_llm_request_info_t *info)
{
    ngx_uint_t  v, r, found;

    if (ngx_http_llm_json_gemini_embedded(t, 1, info)) {
        return 1;
    }

    found = 0;
    v = jt_get(1, "requests");

    for (r = jt_first(v); r; r = jt_next(v, r)) {
        found |= ngx_http_llm_json_gemini_embedded(t, r, info);
    }

    return found;
}


/* one EmbedContentRequest's content (parts) and title; 0: none */

static ngx_uint_t
ngx_http_llm_json_gemini_embedded(ngx_http_llm_jtape_t *t, ngx_uint_t r,
    ngx_http_llm_request_info_t *info)
{
    ngx_uint_t  c, parts, part;

    c = jt_get(r, "content");

    if (!jt_is(c, OBJECT)) {
        return 0;
    }

    parts = jt_get(c, "parts");

    for (part = jt_first(parts); part; part = jt_next(parts, part)) {
        ngx_http_llm_json_part(t, part, info, 0);
    }

    ngx_http_llm_json_text(t, jt_get(r, "title"), info);

    return 1;
}


/* one Content: a role and parts */

static ngx_int_t
ngx_http_llm_json_gemini_content(ngx_http_llm_jtape_t *t, ngx_uint_t c,
    ngx_http_llm_request_info_t *info, ngx_str_t *error)
{
    ngx_uint_t  parts, part;

    if (!jt_is(c, OBJECT)) {
        ngx_str_set(error, "each of \"contents\" must be an object");
        return NGX_DECLINED;
    }

    info->messages++;

    parts = jt_get(c, "parts");

    if (parts && !jt_is(parts, ARRAY) && !jt_is(parts, NULL)) {
        ngx_str_set(error, "\"parts\" must be an array");
        return NGX_DECLINED;
    }

    for (part = jt_first(parts); part; part = jt_next(parts, part)) {
        ngx_http_llm_json_part(t, part, info, 0);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_json_model(ngx_http_llm_jtape_t *t,
    ngx_http_llm_request_info_t *info, ngx_str_t *error)
{
    size_t      i;
    ngx_str_t   s;
    ngx_uint_t  v;

    v = jt_get(1, "model");

    if (v == 0 || jt_is(v, NULL)) {
        return NGX_OK;
    }

    if (!jt_is(v, STRING)) {
        ngx_str_set(error, "\"model\" must be a string");
        return NGX_DECLINED;
    }

    (void) ngx_http_llm_jtape_str(t, v, &s);

    /* a control character (CR LF) would go into a header with $llm_model */

    for (i = 0; i < s.len; i++) {
        if (s.data[i] < 0x20 || s.data[i] == 0x7f) {
            break;
        }
    }

    if (s.len > NGX_HTTP_LLM_MODEL_MAX || i < s.len) {
        ngx_str_set(error, "\"model\" is not a valid model name");
        return NGX_DECLINED;
    }

    if (s.len == 0) {
        return NGX_OK;
    }

    info->model.data = ngx_pnalloc(t->pool, s.len);
    if (info->model.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(info->model.data, s.data, s.len);
    info->model.len = s.len;

    return NGX_OK;
}


/*
 * Each of the first "count" of "names" present ("values": where, from
 * ngx_http_llm_jtape_pick()) must be an integer from 1 to 2^31 - 1; a
 * number written with a fraction or an exponent counts if its value is
 * such an integer (100.0, 1e3).  null is the same as absent.  The
 * largest wins.
 */

static ngx_int_t
ngx_http_llm_json_max_tokens(ngx_http_llm_jtape_t *t, ngx_uint_t *values,
    ngx_str_t *names, ngx_uint_t count, ngx_http_llm_request_info_t *info,
    ngx_str_t *error)
{
    u_char      *p;
    double       d;
    int64_t      n;
    ngx_uint_t   i, v;

    for (i = 0; i < count; i++) {

        v = values[i];

        if (v == 0 || jt_is(v, NULL)) {
            continue;
        }

        if (jt_is(v, INTEGER)) {
            n = ngx_http_llm_jtape_int(t, v);

        } else if (jt_is(v, REAL)) {
            if (ngx_http_llm_jtape_real(t, v, &d) != NGX_OK) {
                return NGX_ERROR;
            }

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

    p = ngx_pnalloc(t->pool, names[i].len
                             + sizeof("\"\" must be an integer from 1 to ")
                             + NGX_INT32_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    error->data = p;
    error->len = ngx_sprintf(p, "\"%V\" must be an integer from 1 to %D",
                             &names[i], (int32_t) NGX_HTTP_LLM_MAX_TOKENS_MAX)
                 - p;

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_llm_json_stream(ngx_http_llm_jtape_t *t, ngx_uint_t v,
    ngx_http_llm_request_info_t *info, ngx_str_t *error)
{
    if (v == 0 || jt_is(v, NULL)) {
        return NGX_OK;
    }

    if (!jt_is(v, TRUE) && !jt_is(v, FALSE)) {
        ngx_str_set(error, "\"stream\" must be true or false");
        return NGX_DECLINED;
    }

    info->stream = jt_is(v, TRUE);

    return NGX_OK;
}


/*
 * how many completions a request asks for, however many (3, 3.0, or
 * an integer beyond 64 bits): what is not a positive integer the backend
 * judges (and refuses)
 */

static ngx_int_t
ngx_http_llm_json_choices(ngx_http_llm_jtape_t *t, ngx_uint_t v,
    ngx_http_llm_request_info_t *info)
{
    double   d;
    int64_t  n;

    if (jt_is(v, INTEGER)) {
        n = ngx_http_llm_jtape_int(t, v);

    } else if (jt_is(v, REAL)) {
        if (ngx_http_llm_jtape_real(t, v, &d) != NGX_OK) {
            return NGX_ERROR;
        }

        if (!(d >= 1)) {
            return NGX_OK;
        }

        if (d >= (double) NGX_HTTP_LLM_CHOICES_MAX) {
            n = NGX_HTTP_LLM_CHOICES_MAX;

        } else if (d == (double) (int64_t) d) {
            n = (int64_t) d;

        } else {
            return NGX_OK;
        }

    } else {
        return NGX_OK;
    }

    if (n >= 1) {
        info->choices = (ngx_uint_t) ngx_min(n, NGX_HTTP_LLM_CHOICES_MAX);
    }

    return NGX_OK;
}


/* a message's content: a string, an array of parts, or null */

static ngx_int_t
ngx_http_llm_json_content(ngx_http_llm_jtape_t *t, ngx_uint_t v,
    ngx_http_llm_request_info_t *info, ngx_str_t *error)
{
    ngx_uint_t  part;

    if (v == 0 || jt_is(v, NULL)) {
        return NGX_OK;
    }

    if (jt_is(v, STRING)) {
        ngx_http_llm_json_text(t, v, info);
        return NGX_OK;
    }

    if (!jt_is(v, ARRAY)) {
        ngx_str_set(error, "message content must be a string or an array");
        return NGX_DECLINED;
    }

    for (part = jt_first(v); part; part = jt_next(v, part)) {
        ngx_http_llm_json_part(t, part, info, 0);
    }

    return NGX_OK;
}


/*
 * One part of a content array, in any of the three shapes: text, an
 * image or file (a fixed cost, once however it is given), an Anthropic
 * document of text (its text), a tool call or its result.
 */

static void
ngx_http_llm_json_part(ngx_http_llm_jtape_t *t, ngx_uint_t part,
    ngx_http_llm_request_info_t *info, ngx_uint_t nested)
{
    ngx_str_t    type;
    ngx_uint_t   v, p, i, media;

    static ngx_str_t  media_types[] = {
        ngx_string("image_url"), ngx_string("image"),
        ngx_string("input_image"), ngx_string("input_audio"),
        ngx_string("input_file"), ngx_string("file"),
        ngx_string("document")
    };

    if (jt_is(part, STRING)) {
        ngx_http_llm_json_text(t, part, info);
        return;
    }

    if (!jt_is(part, OBJECT)) {
        return;
    }

    ngx_http_llm_json_text(t, jt_get(part, "text"), info);
    ngx_http_llm_json_text(t, jt_get(part, "thinking"), info);

    media = (jt_get(part, "inlineData") || jt_get(part, "inline_data")
             || jt_get(part, "fileData") || jt_get(part, "file_data"));

    if (ngx_http_llm_jtape_str(t, jt_get(part, "type"), &type) == NGX_OK) {
        for (i = 0; i < sizeof(media_types) / sizeof(ngx_str_t); i++) {
            if (type.len == media_types[i].len
                && ngx_memcmp(type.data, media_types[i].data, type.len) == 0)
            {
                media = 1;
                break;
            }
        }

        if (type.len == 8 && ngx_memcmp(type.data, "document", 8) == 0
            && ngx_http_llm_json_document(t, part, info))
        {
            media = 0;
        }
    }

    if (media) {
        ngx_http_llm_estimate_add_tokens(&info->estimate,
                                         NGX_HTTP_LLM_TOKENS_PER_IMAGE);
    }

    /* Anthropic tool_use, Gemini function calls and responses */

    ngx_http_llm_json_walk(t, jt_get(part, "input"), info);
    ngx_http_llm_json_walk(t, jt_get(part, "functionCall"), info);
    ngx_http_llm_json_walk(t, jt_get(part, "function_call"), info);
    ngx_http_llm_json_walk(t, jt_get(part, "functionResponse"), info);
    ngx_http_llm_json_walk(t, jt_get(part, "function_response"), info);

    /* Anthropic tool_result: its content is a string or parts */

    v = jt_get(part, "content");

    if (jt_is(v, STRING)) {
        ngx_http_llm_json_text(t, v, info);

    } else if (!nested) {
        for (p = jt_first(v); p; p = jt_next(v, p)) {
            ngx_http_llm_json_part(t, p, info, 1);
        }
    }
}


/*
 * An Anthropic document: 1 if it is text, whose words count (a "text"
 * source's data, a "content" source's blocks; its title and context),
 * 0 if it is a file (a PDF, base64 or by URL: a fixed cost).
 */

static ngx_uint_t
ngx_http_llm_json_document(ngx_http_llm_jtape_t *t, ngx_uint_t part,
    ngx_http_llm_request_info_t *info)
{
    ngx_str_t   type;
    ngx_uint_t  src, v, p;

    src = jt_get(part, "source");

    if (ngx_http_llm_jtape_str(t, jt_get(src, "type"), &type) != NGX_OK) {
        return 0;
    }

    if (type.len == 4 && ngx_memcmp(type.data, "text", 4) == 0) {
        ngx_http_llm_json_text(t, jt_get(src, "data"), info);

    } else if (type.len == 7 && ngx_memcmp(type.data, "content", 7) == 0) {
        v = jt_get(src, "content");

        if (jt_is(v, STRING)) {
            ngx_http_llm_json_text(t, v, info);

        } else {
            for (p = jt_first(v); p; p = jt_next(v, p)) {
                ngx_http_llm_json_part(t, p, info, 1);
            }
        }

    } else {
        return 0;
    }

    ngx_http_llm_json_text(t, jt_get(part, "title"), info);
    ngx_http_llm_json_text(t, jt_get(part, "context"), info);

    return 1;
}


/*
 * OpenAI "prompt" and "input": a string, strings, token ids, arrays of
 * token ids, or (responses) message items.  A number is a token id,
 * whatever it is written as.
 */

static void
ngx_http_llm_json_input(ngx_http_llm_jtape_t *t, ngx_uint_t v,
    ngx_http_llm_request_info_t *info, ngx_uint_t nested)
{
    ngx_str_t   ignored;
    ngx_uint_t  item;

    switch (jt_type(v)) {

    case NGX_HTTP_LLM_JT_STRING:
        ngx_http_llm_json_text(t, v, info);
        break;

    case NGX_HTTP_LLM_JT_INTEGER:
    case NGX_HTTP_LLM_JT_REAL:
        ngx_http_llm_estimate_add_tokens(&info->estimate, 1);
        break;

    case NGX_HTTP_LLM_JT_ARRAY:
        for (item = jt_first(v); item; item = jt_next(v, item)) {
            if (!nested) {
                ngx_http_llm_json_input(t, item, info, 1);

            } else if (jt_is(item, INTEGER) || jt_is(item, REAL)) {
                ngx_http_llm_estimate_add_tokens(&info->estimate, 1);
            }
        }

        break;

    case NGX_HTTP_LLM_JT_OBJECT:

        /* a responses item: a message, a function call or its output */

        if (nested) {
            info->messages++;
            (void) ngx_http_llm_json_content(t, jt_get(v, "content"), info,
                                             &ignored);
            ngx_http_llm_json_text(t, jt_get(v, "arguments"), info);
            ngx_http_llm_json_text(t, jt_get(v, "output"), info);
        }

        break;

    default:
        break;
    }
}


static void
ngx_http_llm_json_text(ngx_http_llm_jtape_t *t, ngx_uint_t v,
    ngx_http_llm_request_info_t *info)
{
    ngx_str_t  s;

    if (ngx_http_llm_jtape_str(t, v, &s) == NGX_OK) {
        ngx_http_llm_estimate_add(&info->estimate, s.data, s.len);
    }
}


/*
 * Every key and string of a tool definition or a call's arguments; a
 * key repeated in one object counts each time (jansson kept the last).
 */

static void
ngx_http_llm_json_walk(ngx_http_llm_jtape_t *t, ngx_uint_t v,
    ngx_http_llm_request_info_t *info)
{
    ngx_uint_t  i, end;

    switch (jt_type(v)) {

    case NGX_HTTP_LLM_JT_OBJECT:
        end = t->tok[v].next;

        for (i = v + 1; i < end; i = t->tok[i + 1].next) {
            ngx_http_llm_json_text(t, i, info);
            ngx_http_llm_json_walk(t, i + 1, info);
        }

        break;

    case NGX_HTTP_LLM_JT_ARRAY:
        for (i = jt_first(v); i; i = jt_next(v, i)) {
            ngx_http_llm_json_walk(t, i, info);
        }

        break;

    case NGX_HTTP_LLM_JT_STRING:
        ngx_http_llm_json_text(t, v, info);
        break;

    default:
        break;
    }
}


/*
 * The body with "stream_options":{"include_usage":true}, the rest of it
 * byte for byte as the client wrote it.  Without stream_options the
 * member is inserted first; otherwise stream_options is set in place
 * (ngx_http_llm_json_set_usage()).
 */

ngx_int_t
ngx_http_llm_json_include_usage(ngx_pool_t *pool, u_char *body, size_t len,
    ngx_http_llm_request_info_t *info, ngx_str_t *out)
{
    u_char                *p, *last;
    ngx_int_t              rc;
    ngx_uint_t             v, members, ready;
    ngx_http_llm_jtape_t   tape, *t;

    static u_char  member[] = "\"stream_options\":{\"include_usage\":true}";

    if (info) {
        /* what parse_request() read */
        v = info->has_stream_options;
        members = info->has_members;
        ready = info->has_include_usage;

    } else {
        t = &tape;
        ngx_memzero(t, sizeof(ngx_http_llm_jtape_t));

        rc = ngx_http_llm_jtape_parse(t, pool, body, len,
                                      NGX_HTTP_LLM_JSON_DEPTH, NULL);
        if (rc != NGX_OK) {
            ngx_http_llm_jtape_free(t);
            return rc;
        }

        if (!jt_is(1, OBJECT)) {
            ngx_http_llm_jtape_free(t);
            return NGX_DECLINED;
        }

        v = jt_get(1, "stream_options");
        members = (t->tok[1].next > 2);
        ready = jt_is(v, OBJECT) && jt_is(jt_get(v, "include_usage"), TRUE);

        ngx_http_llm_jtape_free(t);
    }

    if (v == 0) {

        /* the member goes first; the rest stays as the client wrote it */

        last = body + len;

        for (p = body; p < last && *p != '{'; p++) { /* void */ }

        p++;

        out->len = len + sizeof(member) - 1 + members;
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

    if (ready) {
        out->data = ngx_pnalloc(pool, len);
        if (out->data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(out->data, body, len);
        out->len = len;

        return NGX_OK;
    }

    return ngx_http_llm_json_set_usage(pool, body, len, out);
}


/*
 * A body whose stream_options (the last, if repeated: the one a backend
 * reads) is not {"include_usage":true} yet: its include_usage becomes
 * true, or is added first to it, or, if it is not an object, the object
 * takes its place.  Only those bytes change.
 */

static ngx_int_t
ngx_http_llm_json_set_usage(ngx_pool_t *pool, u_char *body, size_t len,
    ngx_str_t *out)
{
    u_char                *p;
    size_t                 from, to;
    ngx_int_t              rc;
    ngx_str_t              with;
    ngx_uint_t             so, v;
    ngx_http_llm_jtok_t   *tok;
    ngx_http_llm_jtape_t   tape, *t;

    t = &tape;
    ngx_memzero(t, sizeof(ngx_http_llm_jtape_t));

    rc = ngx_http_llm_jtape_parse(t, pool, body, len,
                                  NGX_HTTP_LLM_JSON_DEPTH, NULL);
    if (rc != NGX_OK) {
        ngx_http_llm_jtape_free(t);
        return rc;
    }

    so = jt_get(1, "stream_options");

    if (so == 0) {
        ngx_http_llm_jtape_free(t);
        return NGX_DECLINED;
    }

    v = jt_is(so, OBJECT) ? jt_get(so, "include_usage") : so;

    if (v == 0) {
        /* stream_options is an object without include_usage */

        from = t->tok[so].start + 1;
        to = from;

        if (t->tok[so].next > so + 1) {
            ngx_str_set(&with, "\"include_usage\":true,");

        } else {
            ngx_str_set(&with, "\"include_usage\":true");
        }

    } else {
        tok = &t->tok[v];

        from = tok->start;
        to = from + tok->len;

        if (tok->type == NGX_HTTP_LLM_JT_STRING) {
            from--;
            to++;
        }

        if (v == so) {
            ngx_str_set(&with, "{\"include_usage\":true}");

        } else {
            ngx_str_set(&with, "true");
        }
    }

    ngx_http_llm_jtape_free(t);

    out->len = len - (to - from) + with.len;
    out->data = ngx_pnalloc(pool, out->len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(out->data, body, from);
    p = ngx_cpymem(p, with.data, with.len);
    ngx_memcpy(p, body + to, len - to);

    return NGX_OK;
}


/*
 * The canonical form of a request: its JSON with keys sorted and no
 * insignificant whitespace, so that requests that differ only in key
 * order or spacing have one $llm_cache_key.  A body with an integer
 * beyond 64 bits, which jansson cannot hold, is its own canonical form:
 * as a double, two such integers could be one.
 */

static ngx_int_t
ngx_http_llm_json_canonical(ngx_pool_t *pool, u_char *body, size_t len,
    ngx_str_t *out)
{
    json_t        *root;
    ngx_int_t      rc;
    json_error_t   err;

    root = json_loadb((char *) body, len, JSON_DECODE_ANY|JSON_ALLOW_NUL,
                      &err);
    if (root == NULL) {
        /* the tape has checked the body: the rest is out of memory */

        if (json_error_code(&err) != json_error_numeric_overflow) {
            return NGX_ERROR;
        }

        out->data = body;
        out->len = len;

        return NGX_OK;
    }

    rc = ngx_http_llm_json_dump_sorted(pool, root, out);

    json_decref(root);

    return rc;
}


static ngx_int_t
ngx_http_llm_json_dump_sorted(ngx_pool_t *pool, json_t *root,
    ngx_str_t *out)
{
    size_t  n;

    n = json_dumpb(root, NULL, 0, JSON_COMPACT|JSON_SORT_KEYS);

    out->data = n ? ngx_pnalloc(pool, n) : NULL;

    if (out->data == NULL
        || json_dumpb(root, (char *) out->data, n,
                      JSON_COMPACT|JSON_SORT_KEYS)
           != n)
    {
        return NGX_ERROR;
    }

    out->len = n;

    return NGX_OK;
}
