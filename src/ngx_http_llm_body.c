
/*
 * ngx_llm_gateway: the request body, read in the access phase.
 *
 * Owns when a gateway request's body is read before the call (a tier
 * with token or cost windows, "llm_stream_usage on", or a $llm_model /
 * $llm_stream / $llm_cache_key in the configuration), reading it with
 * nginx's request body API and resuming the phases when it is complete
 * (in memory up to client_body_buffer_size, else from its temporary
 * file), and what is learned from it: the model, the stream flag, the
 * prompt estimate (exact with llm_tokenizer) and the answer's maximum
 * that the token windows reserve, the body with
 * stream_options.include_usage added, and the $llm_cache_key of the
 * canonical request.
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_body.h"
#include "ngx_http_llm_crypto.h"
#include "ngx_http_llm_tally.h"
#include "ngx_http_llm_reply.h"


static void ngx_http_llm_body_reading(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_body_unread(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_int_t rc);
static void ngx_http_llm_body_refuse(ngx_http_llm_ctx_t *ctx,
    ngx_uint_t err, ngx_str_t *text);
static void ngx_http_llm_body_handler(ngx_http_request_t *r);
static ngx_uint_t ngx_http_llm_body_uri_ends(ngx_http_request_t *r,
    ngx_str_t *names);
static void ngx_http_llm_body_path(ngx_http_request_t *r,
    ngx_http_llm_tally_t *t, ngx_uint_t api);
static void ngx_http_llm_body_name(ngx_http_llm_tally_t *t, u_char *p,
    u_char *last);
static ngx_int_t ngx_http_llm_body_replace(ngx_http_request_t *r,
    ngx_str_t *body);
static ngx_int_t ngx_http_llm_body_cache_key(ngx_http_request_t *r,
    ngx_http_llm_tally_t *t, ngx_str_t *canonical);
static ngx_int_t ngx_http_llm_body_encoded(ngx_http_request_t *r,
    ngx_str_t *error);


/* where each API generates, by NGX_HTTP_LLM_API_* */

static ngx_str_t  ngx_http_llm_openai_generates[] = {
    ngx_string("/completions"), ngx_string("/responses"),
    ngx_string("/embeddings"), ngx_null_string
};

static ngx_str_t  ngx_http_llm_anthropic_generates[] = {
    ngx_string("/messages"), ngx_string("/complete"),
    ngx_string(":rawPredict"), ngx_string(":streamRawPredict"),
    ngx_null_string
};

static ngx_str_t  ngx_http_llm_gemini_generates[] = {
    ngx_string(":generateContent"), ngx_string(":streamGenerateContent"),
    ngx_null_string
};

static ngx_str_t  *ngx_http_llm_generates[] = {
    ngx_http_llm_openai_generates, ngx_http_llm_openai_generates,
    ngx_http_llm_anthropic_generates, ngx_http_llm_gemini_generates
};


ngx_uint_t
ngx_http_llm_body_wanted(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_loc_conf_t *llcf)
{
    ngx_str_t                 *type, *u;
    ngx_http_llm_main_conf_t  *lmcf;

    /*
     * file uploads (audio, images, documents, batch files; multipart or
     * raw, as Gemini's "upload/v1beta/files") are not prompts to read;
     * what goes to a generation endpoint is, whatever it says it is (a
     * chat request sent as application/octet-stream, which llama.cpp's
     * server and Ollama read as JSON all the same)
     */

    static ngx_str_t           uploads[] = {
        ngx_string("multipart/"),
        ngx_string("application/octet-stream"),
        ngx_string("application/pdf"),
        ngx_string("application/zip"),
        ngx_string("image/"),
        ngx_string("audio/"),
        ngx_string("video/"),
        ngx_null_string
    };

    if (!(r->method & (NGX_HTTP_POST|NGX_HTTP_PUT|NGX_HTTP_PATCH))) {
        return 0;
    }

    if (r->headers_in.content_type
        && !ngx_http_llm_body_uri_ends(r, ngx_http_llm_generates[ctx->api]))
    {
        type = &r->headers_in.content_type->value;

        for (u = uploads; u->len; u++) {

            /* "image/png", "application/pdf; x=y", not "application/zipx" */

            if (type->len >= u->len
                && ngx_strncasecmp(type->data, u->data, u->len) == 0
                && (u->data[u->len - 1] == '/' || type->len == u->len
                    || type->data[u->len] == ';'
                    || type->data[u->len] == ' '
                    || type->data[u->len] == '\t'))
            {
                return 0;
            }
        }
    }

    if (ctx->tier && (ctx->tier->dims & NGX_HTTP_LLM_TOKEN_DIMS)) {
        return 1;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);

    return llcf->stream_usage || lmcf->want_body;
}


/*
 * Starts reading the body; the phases resume when it is complete, with
 * ctx->step at NGX_HTTP_LLM_STEP_READ, or when nginx refuses it, at
 * NGX_HTTP_LLM_STEP_REFUSED.  Returns NGX_DONE; NGX_DECLINED for a body
 * refused at once (ngx_http_llm_body_refuse()); or a status to finalize
 * the request with (500).
 */

ngx_int_t
ngx_http_llm_body_read(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    ngx_int_t  rc;

    ctx->step = NGX_HTTP_LLM_STEP_BODY;

    rc = ngx_http_read_client_request_body(r, ngx_http_llm_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return ngx_http_llm_body_unread(r, ctx, rc);
    }

    /*
     * the rest comes in later reads, which nginx's handler would end
     * with the request itself on an error: ours reads on as it does,
     * and takes a refusal to the windows first (HTTP/2 reads a body in
     * the connection's handler, and refuses it there)
     */

    if (rc == NGX_AGAIN
#if (NGX_HTTP_V2)
        && r->stream == NULL
#endif
       )
    {
        r->read_event_handler = ngx_http_llm_body_reading;
    }

    ngx_http_finalize_request(r, NGX_DONE);

    return NGX_DONE;
}


static void
ngx_http_llm_body_reading(ngx_http_request_t *r)
{
    ngx_int_t            rc;
    ngx_http_llm_ctx_t  *ctx;

    /*
     * nginx's own ngx_http_read_client_request_body_handler() without
     * its finalization: for a buffered body, this reads on, calls the
     * body handler when the body is complete, and returns nginx's
     * status for a timeout (408) or a refused body.  The body handler
     * may finalize the request, and on a keep-alive connection free it,
     * before nginx's function returns and writes to it: the request is
     * held for that time.
     */

    r->main->count++;

    rc = ngx_http_read_unbuffered_request_body(r);

    if (rc < NGX_HTTP_SPECIAL_RESPONSE) {
        ngx_http_finalize_request(r, NGX_DONE);
        return;
    }

    /* refused before the body was complete: nothing finalized it */

    r->main->count--;

    ctx = ngx_http_llm_find_ctx(r);

    rc = ngx_http_llm_body_unread(r, ctx, rc);

    if (rc != NGX_DECLINED) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    ctx->step = NGX_HTTP_LLM_STEP_REFUSED;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


/*
 * nginx's status for a body it did not read to its end: NGX_DECLINED
 * for a refusal of the body itself (over client_max_body_size, a
 * chunked encoding or a length that does not hold), which is the
 * request's error (the connection then carries no other request, as
 * after nginx's own 400 and 413); the status else (a client gone, a
 * timeout, 500).
 */

static ngx_int_t
ngx_http_llm_body_unread(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_int_t rc)
{
    ngx_str_t          text;
    ngx_connection_t  *c;

    c = r->connection;

    if (c->error) {
        return rc;
    }

    /* no more of it is read (a later read left client_body_timeout set) */

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    switch (rc) {

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        ctx->unread = 1;

        if (ngx_http_llm_too_large_text(r, &text) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        r->keepalive = 0;

        ngx_http_llm_body_refuse(ctx, NGX_HTTP_LLM_ERR_TOO_LARGE, &text);

        return NGX_DECLINED;

    case NGX_HTTP_BAD_REQUEST:
        ctx->unread = 1;

        text = ngx_http_llm_unreadable_text;

        r->keepalive = 0;
        r->lingering_close = 0;

        ngx_http_llm_body_refuse(ctx, NGX_HTTP_LLM_ERR_INVALID_REQUEST,
                                 &text);

        return NGX_DECLINED;

    default:
        return rc;
    }
}


/*
 * The body is refused: the request asks the windows for one request
 * (ngx_http_llm_tally_reserve()), and "err" is its answer if they let
 * it in.
 */

static void
ngx_http_llm_body_refuse(ngx_http_llm_ctx_t *ctx, ngx_uint_t err,
    ngx_str_t *text)
{
    ctx->refused = 1;
    ctx->refusal = err;
    ctx->refusal_text = *text;
}


static void
ngx_http_llm_body_handler(ngx_http_request_t *r)
{
    ngx_http_llm_ctx_t  *ctx;

    ctx = ngx_http_llm_find_ctx(r);

    ctx->step = NGX_HTTP_LLM_STEP_READ;

    r->preserve_body = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


/*
 * Reads what the body says.  NGX_OK (also for a body, at another
 * endpoint than a generation's, that has no prompt: only the answer's
 * maximum is reserved); NGX_DECLINED for a body refused as a 400
 * invalid_request_error (ngx_http_llm_body_refuse()); NGX_ERROR.
 */

ngx_int_t
ngx_http_llm_body_parse(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_loc_conf_t *llcf)
{
    ngx_int_t                     rc;
    ngx_str_t                     body, with, canonical, error;
    ngx_uint_t                    out;
    ngx_http_llm_tally_t         *t;
    ngx_http_llm_main_conf_t     *lmcf;
    ngx_http_llm_request_info_t   info;

    static ngx_str_t  embeddings[] = {
        ngx_string("/embeddings"), ngx_string(":embedContent"),
        ngx_string(":batchEmbedContents"), ngx_null_string
    };

    /*
     * Claude on Vertex AI counts at ".../models/count-tokens:rawPredict",
     * OpenAI at "/v1/responses/input_tokens"
     */

    static ngx_str_t  counts[] = {
        ngx_string("/count_tokens"), ngx_string(":countTokens"),
        ngx_string("/count-tokens:rawPredict"),
        ngx_string("/responses/input_tokens"), ngx_null_string
    };

    static ngx_str_t  responses[] = {
        ngx_string("/responses"), ngx_null_string
    };

    t = ctx->tally;

    rc = ngx_http_llm_body_bytes(r, &body);
    if (rc != NGX_OK) {
        return rc;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);

    rc = ngx_http_llm_json_parse_request_bpe(r->pool, ctx->api, body.data,
                                             body.len, &info,
                                             lmcf->cache_key ? &canonical
                                                             : NULL,
                                             &error, lmcf->bpe);

    if (rc == NGX_DECLINED && (info.no_prompt || info.no_max)
        && (!ngx_http_llm_body_uri_ends(r, ngx_http_llm_generates[ctx->api])
            || ngx_http_llm_body_uri_ends(r, counts)))
    {
        /*
         * a body of the API's that prompts nothing (batches, token
         * counting, embedContent, an assistant's run): what it starts
         * may still generate, and reserves the default answer
         */

        t->parsed = 1;
        t->model = info.model;
        t->stream = info.stream;
        t->count = ngx_http_llm_body_uri_ends(r, counts);
        t->output = t->count ? 0 : llcf->max_tokens_default;

        return NGX_OK;
    }

    if (rc == NGX_DECLINED) {
        if (ngx_http_llm_body_encoded(r, &error) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_http_llm_body_refuse(ctx, NGX_HTTP_LLM_ERR_INVALID_REQUEST,
                                 &error);
        return NGX_DECLINED;
    }

    if (rc != NGX_OK) {
        return rc;
    }

    t->parsed = 1;
    t->model = info.model;
    t->stream = info.stream;

    ngx_http_llm_body_path(r, t, ctx->api);

    t->prompt = ngx_http_llm_body_prompt(r, &info);

    /* an embedding answers with numbers; a token count costs nothing */

    if (ngx_http_llm_body_uri_ends(r, counts)) {
        t->count = 1;
        t->prompt = 0;
        out = 0;

    } else if (ngx_http_llm_body_uri_ends(r, embeddings)) {
        out = 0;

    } else {
        out = info.max_tokens >= 0 ? (ngx_uint_t) info.max_tokens
                                   : llcf->max_tokens_default;
    }

    t->output = (uint64_t) out * info.choices;

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "llm body: model \"%V\" stream:%d prompt:%ui "
                   "output:%uL in %uz bytes",
                   &t->model, t->stream, t->prompt, t->output, body.len);

    /*
     * the Responses API tells its usage in response.completed, and its
     * stream_options takes no include_usage
     */

    if (llcf->stream_usage && info.stream && !info.has_include_usage
        && ctx->api == NGX_HTTP_LLM_API_OPENAI
        && !ngx_http_llm_body_uri_ends(r, responses))
    {
        rc = ngx_http_llm_json_include_usage(r->pool, body.data, body.len,
                                             &info, &with);
        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_OK && ngx_http_llm_body_replace(r, &with) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (lmcf->cache_key) {
        return ngx_http_llm_body_cache_key(r, t, &canonical);
    }

    return NGX_OK;
}


/*
 * A body refused as unreadable that the client compressed: the reason
 * given is that, not the JSON error of its first byte (nginx does not
 * decode request bodies).  Looked for only then: no cost per request.
 */

static ngx_int_t
ngx_http_llm_body_encoded(ngx_http_request_t *r, ngx_str_t *error)
{
    u_char           *p;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NGX_OK;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("Content-Encoding") - 1
            && ngx_strcasecmp(h[i].key.data, (u_char *) "Content-Encoding")
               == 0
            && h[i].value.len
            && ngx_strcasecmp(h[i].value.data, (u_char *) "identity") != 0)
        {
            break;
        }
    }

    p = ngx_pnalloc(r->pool, sizeof("request body is encoded "
                                    "(Content-Encoding: ): the gateway "
                                    "reads it uncompressed")
                             + ngx_min(h[i].value.len, 32));
    if (p == NULL) {
        return NGX_ERROR;
    }

    error->data = p;
    error->len = ngx_sprintf(p, "request body is encoded (Content-Encoding: "
                             "%*s): the gateway reads it uncompressed",
                             ngx_min(h[i].value.len, 32), h[i].value.data)
                 - p;

    return NGX_OK;
}


/*
 * The prompt's tokens as a call reserves them: its text, 4 per message
 * and 3 per request.  llm_token_info counts a POSTed request with it
 * too, so that its count is what the call would reserve.
 */

ngx_uint_t
ngx_http_llm_body_prompt(ngx_http_request_t *r,
    ngx_http_llm_request_info_t *info)
{
    ngx_uint_t  messages;

    static ngx_str_t  responses[] = {
        ngx_string("/responses"), ngx_null_string
    };

    messages = info->messages;

    /* the Responses API takes a string "input" as the user's message */

    if (info->input_text && ngx_http_llm_body_uri_ends(r, responses)) {
        messages++;
    }

    return ngx_http_llm_estimate_tokens(&info->estimate)
           + messages * NGX_HTTP_LLM_TOKENS_PER_MESSAGE
           + (messages ? NGX_HTTP_LLM_TOKENS_PER_REQUEST : 0);
}


/* one trailing '/' does not count: "/v1/responses/" is "/v1/responses" */

static ngx_uint_t
ngx_http_llm_body_uri_ends(ngx_http_request_t *r, ngx_str_t *names)
{
    size_t  len;

    len = r->uri.len;

    if (len > 1 && r->uri.data[len - 1] == '/') {
        len--;
    }

    for ( /* void */ ; names->len; names++) {
        if (len >= names->len
            && ngx_strncmp(r->uri.data + len - names->len, names->data,
                           names->len)
               == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * The body in one piece: its only buffer, or its pieces joined.  They
 * are joined in the worker's own buffer, kept from one request to the
 * next, and good until the next call: the body is read at once, and a
 * request's pool would otherwise grow by a copy of it.  A body larger
 * than NGX_HTTP_LLM_BODY_JOIN_MAX is joined in the pool.
 */

#define NGX_HTTP_LLM_BODY_JOIN_MAX  65536

static u_char  *ngx_http_llm_body_join;
static size_t   ngx_http_llm_body_join_size;


ngx_int_t
ngx_http_llm_body_bytes(ngx_http_request_t *r, ngx_str_t *body)
{
    off_t         len;
    u_char       *p;
    size_t        size;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    ngx_str_null(body);

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && !cl->buf->in_file) {
        body->data = cl->buf->pos;
        body->len = cl->buf->last - cl->buf->pos;
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    if (len >= NGX_HTTP_LLM_BODY_JOIN_MAX) {
        p = ngx_pnalloc(r->pool, (size_t) len + 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

    } else {
        if (ngx_http_llm_body_join_size < (size_t) len + 1) {
            size = ngx_max(ngx_align((size_t) len + 1, 4096), 16384);

            p = ngx_alloc(size, r->connection->log);
            if (p == NULL) {
                return NGX_ERROR;
            }

            if (ngx_http_llm_body_join) {
                ngx_free(ngx_http_llm_body_join);
            }

            ngx_http_llm_body_join = p;
            ngx_http_llm_body_join_size = size;
        }

        p = ngx_http_llm_body_join;
    }

    body->data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (!b->in_file) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }

        /* spooled to a temporary file that nginx has just written */

        size = (size_t) (b->file_last - b->file_pos);

        n = ngx_read_file(b->file, p, size, b->file_pos);

        if (n != (ssize_t) size) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "llm: cannot read the request body back from "
                          "\"%V\"", &b->file->name);
            return NGX_ERROR;
        }

        p += size;
    }

    body->len = p - body->data;

    return NGX_OK;
}


/*
 * What the path names, for a body that names no model: Gemini's and
 * Vertex AI's ".../models/NAME:METHOD" (and Gemini's streaming), Azure
 * OpenAI's ".../deployments/NAME/..."
 */

static void
ngx_http_llm_body_path(ngx_http_request_t *r, ngx_http_llm_tally_t *t,
    ngx_uint_t api)
{
    u_char  *p, *last, *colon;

    p = r->uri.data;
    last = p + r->uri.len;

    if (api == NGX_HTTP_LLM_API_OPENAI) {
        if (t->model.len) {
            return;
        }

        p = ngx_strlcasestrn(p, last, (u_char *) "/deployments/",
                             sizeof("/deployments/") - 1 - 1);

        if (p != NULL) {
            p += sizeof("/deployments/") - 1;
            ngx_http_llm_body_name(t, p, ngx_strlchr(p, last, '/'));
        }

        return;
    }

    /*
     * the method follows the last segment's last colon, as
     * ngx_http_llm_api() reads it: a model's name may have colons of
     * its own (an OpenAI fine-tune "ft:gpt-4o-mini:org::id", Ollama's
     * "llama3:8b")
     */

    for (colon = last; colon > p && colon[-1] != ':' && colon[-1] != '/';
         colon--)
    {
        /* void */
    }

    if (colon == p || colon[-1] != ':') {
        return;
    }

    colon--;

    if (api == NGX_HTTP_LLM_API_GEMINI
        && (size_t) (last - colon) >= sizeof(":streamGenerateContent") - 1
        && ngx_strncmp(colon, ":streamGenerateContent",
                       sizeof(":streamGenerateContent") - 1)
           == 0)
    {
        t->stream = 1;
    }

    if (t->model.len) {
        return;
    }

    for (p = colon; p > r->uri.data && p[-1] != '/'; p--) {
        /* void */
    }

    ngx_http_llm_body_name(t, p, colon);
}


/* the URI is decoded: %0D%0A is no part of a model's name */

static void
ngx_http_llm_body_name(ngx_http_llm_tally_t *t, u_char *p, u_char *last)
{
    u_char  *c;

    if (last == NULL || last - p <= 0 || last - p > NGX_HTTP_LLM_MODEL_MAX) {
        return;
    }

    for (c = p; c < last; c++) {
        if (*c < 0x20 || *c == 0x7f) {
            return;
        }
    }

    t->model.data = p;
    t->model.len = last - p;
}


static ngx_int_t
ngx_http_llm_body_replace(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char           *p;
    ngx_buf_t        *b;
    ngx_chain_t      *cl;
    ngx_table_elt_t  *h;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->start = b->pos;
    b->end = b->last;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    cl->buf = b;
    cl->next = NULL;

    r->request_body->bufs = cl;
    r->headers_in.content_length_n = body->len;

    /*
     * $content_length is the header's text while there is one: uwsgi and
     * FastCGI params (CONTENT_LENGTH) and "proxy_set_header" read it
     */

    h = r->headers_in.content_length;

    if (h) {
        p = ngx_pnalloc(r->pool, NGX_SIZE_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        h->value.len = ngx_sprintf(p, "%uz", body->len) - p;
        h->value.data = p;
    }

    return NGX_OK;
}


/*
 * $llm_cache_key of a request whose body was not read: without a body
 * (GET), of the method and the URI alone; with a body the gateway does
 * not read (a multipart upload), a key no other request has, so that
 * proxy_cache never answers one with another's answer.
 */

ngx_int_t
ngx_http_llm_body_unread_cache_key(ngx_http_request_t *r,
    ngx_http_llm_tally_t *t)
{
    ngx_str_t  unique;
    u_char     buf[NGX_INT64_LEN * 5 + 8];

    ngx_str_null(&unique);

    if (r->headers_in.content_length_n > 0 || r->headers_in.chunked) {
        unique.data = buf;
        unique.len = ngx_sprintf(buf, "%P %uA %ui %T.%M", ngx_pid,
                                 r->connection->number,
                                 r->connection->requests, r->start_sec,
                                 r->start_msec)
                     - buf;
    }

    return ngx_http_llm_body_cache_key(r, t, &unique);
}


/*
 * $llm_cache_key: the first half of a BLAKE2b-256 digest, in hex, of
 * the method, the URI with its arguments and the canonical JSON.
 */

static ngx_int_t
ngx_http_llm_body_cache_key(ngx_http_request_t *r, ngx_http_llm_tally_t *t,
    ngx_str_t *canonical)
{
    u_char     *p;
    ngx_str_t   all;
    u_char      digest[NGX_HTTP_LLM_DIGEST_LEN];

    all.len = r->method_name.len + 1 + r->uri.len + 1 + r->args.len + 1
              + canonical->len;

    all.data = ngx_pnalloc(r->pool, all.len);
    if (all.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(all.data, r->method_name.data, r->method_name.len);
    *p++ = ' ';
    p = ngx_cpymem(p, r->uri.data, r->uri.len);
    *p++ = '?';
    p = ngx_cpymem(p, r->args.data, r->args.len);
    *p++ = '\n';
    ngx_memcpy(p, canonical->data, canonical->len);

    ngx_http_llm_digest(digest, all.data, all.len);

    ngx_hex_dump(t->cache_key, digest, sizeof(t->cache_key) / 2);
    t->has_cache_key = 1;

    return NGX_OK;
}
