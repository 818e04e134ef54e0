
/*
 * ngx_llm_gateway: the provider key pool, per request.
 *
 * The balancer's init_peer/get/free, and what each attempt carries.
 * nginx builds the upstream request head once (the proxy module's
 * create_request, before init_peer) and re-sends the same buffers on a
 * retry.  init_peer therefore turns that head into a template without
 * any credential (the client's Authorization, x-api-key, api-key and
 * x-goog-api-key, and
 * the pool's own header or argument, are dropped), and each get() writes
 * template + the chosen key's credential into the head buffer, so every
 * attempt carries its own key.  The proxy module's debug log of the head
 * happened before: no secret is ever in it.
 *
 * The header filter names the key that served a response
 * (X-LLM-Provider-Key) and turns what must not reach a client as such --
 * a provider's 401/402/403/429 for a pool key, nginx's 502 when no pair
 * was left -- into 502 provider_unavailable in the location's API shape.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_llm_module.h"
#include "ngx_http_llm_reply.h"
#include "ngx_http_llm_pool.h"


/*
 * Anthropic's figures, per dimension: requests, tokens, input-tokens,
 * output-tokens
 */

#define NGX_HTTP_LLM_POOL_DIMS  4


/* the longest wait a provider's Retry-After is taken for, in seconds */

#define NGX_HTTP_LLM_POOL_RETRY_MAX  ((off_t) 30 * 86400)


typedef struct {
    uint64_t                    left[NGX_HTTP_LLM_POOL_DIMS];
    uint64_t                    limit[NGX_HTTP_LLM_POOL_DIMS];
    ngx_msec_t                  reset[NGX_HTTP_LLM_POOL_DIMS];
    ngx_uint_t                  known;      /* a bit per dimension */
} ngx_http_llm_pool_figures_t;


static ngx_int_t ngx_http_llm_pool_get_peer(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_llm_pool_free_peer(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t state);
static ngx_int_t ngx_http_llm_pool_template(ngx_http_request_t *r,
    ngx_http_llm_pool_peer_data_t *pd);
static u_char *ngx_http_llm_pool_eol(u_char *p, u_char *last);
static u_char *ngx_http_llm_pool_copy_args(u_char *p, u_char *args,
    u_char *last, ngx_str_t *drop);
static void ngx_http_llm_pool_wipe_head(void *data);
static ngx_uint_t ngx_http_llm_pool_credential(ngx_str_t *name,
    ngx_http_llm_pool_srv_conf_t *pscf);
static void ngx_http_llm_pool_outcome(ngx_http_llm_pool_peer_data_t *pd,
    ngx_http_llm_pool_outcome_t *o);
static void ngx_http_llm_pool_anthropic(ngx_table_elt_t *h,
    ngx_http_llm_pool_figures_t *f);
static void ngx_http_llm_pool_figures(ngx_http_llm_pool_figures_t *f,
    ngx_http_llm_pool_outcome_t *o);
static ngx_msec_t ngx_http_llm_pool_duration(ngx_str_t *s);
static ngx_msec_t ngx_http_llm_pool_rfc3339(ngx_str_t *s);
static ngx_int_t ngx_http_llm_pool_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_pool_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_llm_pool_replace(ngx_http_request_t *r,
    ngx_http_llm_pool_peer_data_t *pd);
static ngx_int_t ngx_http_llm_pool_log_handler(ngx_http_request_t *r);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;

static ngx_int_t  ngx_http_llm_pool_tokens_index = NGX_ERROR;


ngx_int_t
ngx_http_llm_pool_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    size_t                          n;
    ngx_http_upstream_t            *u;
    ngx_http_llm_pool_srv_conf_t   *pscf;
    ngx_http_llm_pool_peer_data_t  *pd;

    pscf = ngx_http_conf_upstream_srv_conf(us, ngx_http_llm_pool_module);

    pd = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_pool_peer_data_t));
    if (pd == NULL) {
        return NGX_ERROR;
    }

    n = (pscf->npairs + (8 * sizeof(uintptr_t) - 1))
        / (8 * sizeof(uintptr_t));

    pd->tried = ngx_pcalloc(r->pool, n * sizeof(uintptr_t));
    if (pd->tried == NULL) {
        return NGX_ERROR;
    }

    pd->conf = pscf;
    pd->request = r;
    pd->current = NGX_HTTP_LLM_POOL_NONE;
    pd->served = NGX_HTTP_LLM_POOL_NONE;

    u = r->upstream;

    if (pscf->keys.nelts && ngx_http_llm_pool_template(r, pd) != NGX_OK) {
        return NGX_ERROR;
    }

    u->peer.data = pd;
    u->peer.get = ngx_http_llm_pool_get_peer;
    u->peer.free = ngx_http_llm_pool_free_peer;
    u->peer.tries = pscf->npairs;

    ngx_http_set_ctx(r, pd, ngx_http_llm_pool_module);

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_pool_get_peer(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_llm_pool_peer_data_t *pd = data;

    u_char                        *p;
    ngx_uint_t                     i;
    ngx_http_llm_pool_key_t       *key;
    ngx_http_llm_pool_pair_t      *pair;
    ngx_http_llm_pool_server_t    *ps;
    ngx_http_llm_pool_srv_conf_t  *pscf;

    pscf = pd->conf;

    pd->current = NGX_HTTP_LLM_POOL_NONE;

    if (ngx_http_llm_pool_state_pick(pd, &i) != NGX_OK) {
        pd->retry_at = ngx_http_llm_pool_state_soonest(pscf);
        pc->name = &pscf->name;

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                       "llm pool \"%V\": no pair left", &pscf->name);

        return NGX_BUSY;
    }

    pd->tried[i / (8 * sizeof(uintptr_t))]
        |= (uintptr_t) 1 << i % (8 * sizeof(uintptr_t));

    pd->current = i;
    pd->accounted = 0;
    pd->started = ngx_current_msec;

    pair = &pscf->pairs[i];
    ps = &pscf->servers[pair->server];

    pc->sockaddr = ps->sockaddr;
    pc->socklen = ps->socklen;
    pc->name = &ps->name;

    if (pair->key == NGX_HTTP_LLM_POOL_NO_KEY) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                       "llm pool \"%V\": server %V",
                       &pscf->name, &ps->name);
        return NGX_OK;
    }

    key = &((ngx_http_llm_pool_key_t *) pscf->keys.elts)[pair->key];

    pd->served = pair->key;

    /* this attempt's head: the template with the key's credential */

    p = ngx_cpymem(pd->head->start, pd->tmpl, pd->tmpl_at);
    p = ngx_cpymem(p, key->auth.data, key->auth.len);
    p = ngx_cpymem(p, pd->tmpl + pd->tmpl_at, pd->tmpl_len - pd->tmpl_at);

    pd->head->pos = pd->head->start;
    pd->head->last = p;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "llm pool \"%V\": key \"%V\", server %V",
                   &pscf->name, &key->name, &ps->name);

    return NGX_OK;
}


static void
ngx_http_llm_pool_free_peer(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state)
{
    ngx_http_llm_pool_peer_data_t *pd = data;

    ngx_uint_t                   i, s;
    ngx_http_llm_pool_outcome_t  o;

    if (pd->current == NGX_HTTP_LLM_POOL_NONE) {
        return;
    }

    if (pd->accounted) {
        ngx_http_llm_pool_state_done(pd, NULL, 1);

    } else {
        ngx_http_llm_pool_outcome(pd, &o);
        o.failed = (state & NGX_PEER_FAILED) ? 1 : 0;
        ngx_http_llm_pool_state_done(pd, &o, 1);

        /*
         * The server failed (error, timeout, 5xx): another key would
         * not help there, so this request tries the server's other
         * pairs no more.
         */

        if (o.status >= NGX_HTTP_INTERNAL_SERVER_ERROR
            || (o.status == 0 && o.failed))
        {
            s = pd->conf->pairs[pd->current].server;

            for (i = 0; i < pd->conf->npairs; i++) {
                if (pd->conf->pairs[i].server == s) {
                    pd->tried[i / (8 * sizeof(uintptr_t))]
                        |= (uintptr_t) 1 << i % (8 * sizeof(uintptr_t));
                }
            }
        }
    }

    pd->current = NGX_HTTP_LLM_POOL_NONE;

    if (pc->tries) {
        pc->tries--;
    }
}


/*
 * The head the proxy module built: "METHOD URI HTTP/1.x\r\n", header
 * lines, "\r\n", and the body when proxy_set_body put it there.  The
 * template is the same less every credential, and the place where a
 * key's credential goes: after the request line, or for query=NAME at
 * the end of the URI's arguments.
 */

static ngx_int_t
ngx_http_llm_pool_template(ngx_http_request_t *r,
    ngx_http_llm_pool_peer_data_t *pd)
{
    u_char                        *p, *q, *last, *eol, *colon, *sp1, *sp2;
    u_char                        *args, *t, sep;
    ngx_str_t                      name, drop[2];
    ngx_buf_t                     *b, *nb;
    ngx_chain_t                   *cl;
    ngx_pool_cleanup_t            *cln;
    ngx_http_llm_pool_srv_conf_t  *pscf;

    pscf = pd->conf;
    cl = r->upstream->request_bufs;

    if (cl == NULL || !ngx_buf_in_memory(cl->buf)) {
        goto invalid;
    }

    b = cl->buf;
    p = b->pos;
    last = b->last;

    eol = ngx_http_llm_pool_eol(p, last);

    if (eol == NULL || eol - p < 14
        || ngx_strncmp(eol - 9, " HTTP/1.", 8) != 0)
    {
        goto invalid;
    }

    /* the query argument adds at most "?" */

    t = ngx_pnalloc(r->pool, (last - p) + 1);
    if (t == NULL) {
        return NGX_ERROR;
    }

    pd->tmpl = t;

    /* the request line, less the client's "key" argument */

    sp1 = ngx_strlchr(p, eol, ' ');
    sp2 = eol - 9;

    if (sp1 == NULL || sp1 >= sp2) {
        goto invalid;
    }

    args = ngx_strlchr(sp1, sp2, '?');

    ngx_str_set(&drop[0], "key");
    drop[1] = pscf->auth_name;

    t = ngx_cpymem(t, p, (args ? args : sp2) - p);
    q = t;

    if (args) {
        *t++ = '?';
        t = ngx_http_llm_pool_copy_args(t, args + 1, sp2, drop);

        if (t == q + 1) {
            t = q;
        }
    }

    if (pscf->auth == NGX_HTTP_LLM_POOL_AUTH_QUERY) {
        sep = (t == q) ? '?' : '&';
        *t++ = sep;
        pd->tmpl_at = t - pd->tmpl;
        t = ngx_cpymem(t, sp2, eol + 2 - sp2);

    } else {
        t = ngx_cpymem(t, sp2, eol + 2 - sp2);
        pd->tmpl_at = t - pd->tmpl;
    }

    /* header lines, less credentials, up to the empty line */

    for (p = eol + 2; p < last; p = eol + 2) {

        eol = ngx_http_llm_pool_eol(p, last);
        if (eol == NULL) {
            goto invalid;
        }

        if (eol == p) {
            break;
        }

        colon = ngx_strlchr(p, eol, ':');
        if (colon == NULL) {
            goto invalid;
        }

        name.data = p;
        name.len = colon - p;

        if (ngx_http_llm_pool_credential(&name, pscf)) {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "llm pool: \"%V\" not sent upstream", &name);
            continue;
        }

        t = ngx_cpymem(t, p, eol + 2 - p);
    }

    if (p >= last) {
        goto invalid;
    }

    /* "\r\n" and what follows */

    t = ngx_cpymem(t, p, last - p);

    pd->tmpl_len = t - pd->tmpl;

    nb = ngx_create_temp_buf(r->pool, pd->tmpl_len + pscf->auth_max);
    if (nb == NULL) {
        return NGX_ERROR;
    }

    nb->flush = b->flush;
    nb->last_buf = b->last_buf;
    nb->last_in_chain = b->last_in_chain;
    nb->tag = b->tag;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_llm_pool_wipe_head;
    cln->data = nb;

    pd->head = nb;
    cl->buf = nb;

    return NGX_OK;

invalid:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "llm_pool \"%V\" with keys needs an HTTP/1 proxy_pass",
                  &pscf->name);

    return NGX_ERROR;
}


/* the CR of the line's CRLF */

static u_char *
ngx_http_llm_pool_eol(u_char *p, u_char *last)
{
    u_char  *lf;

    lf = ngx_strlchr(p, last, LF);

    if (lf == NULL || lf == p || lf[-1] != CR) {
        return NULL;
    }

    return lf - 1;
}


/* the request's copy of a secret goes with the request */

static void
ngx_http_llm_pool_wipe_head(void *data)
{
    ngx_buf_t *b = data;

    ngx_explicit_memzero(b->start, b->end - b->start);
}


/* arguments "a=1&b=2" less those named in drop[0..1] */

static u_char *
ngx_http_llm_pool_copy_args(u_char *p, u_char *args, u_char *last,
    ngx_str_t *drop)
{
    u_char      *a, *end, *eq;
    size_t       len;
    ngx_uint_t   i, first, skip;

    first = 1;

    for (a = args; a < last; a = end + 1) {

        end = ngx_strlchr(a, last, '&');
        if (end == NULL) {
            end = last;
        }

        eq = ngx_strlchr(a, end, '=');
        len = (eq ? eq : end) - a;

        skip = (end == a);

        for (i = 0; i < 2 && !skip; i++) {
            if (len == drop[i].len
                && ngx_strncasecmp(a, drop[i].data, len) == 0)
            {
                skip = 1;
            }
        }

        if (skip) {
            continue;
        }

        if (!first) {
            *p++ = '&';
        }

        p = ngx_cpymem(p, a, end - a);
        first = 0;
    }

    return p;
}


static ngx_uint_t
ngx_http_llm_pool_credential(ngx_str_t *name,
    ngx_http_llm_pool_srv_conf_t *pscf)
{
    ngx_uint_t  i;

    static ngx_str_t  names[] = {
        ngx_string("Authorization"),
        ngx_string("x-api-key"),
        ngx_string("api-key"),
        ngx_string("x-goog-api-key"),
        ngx_null_string
    };

    for (i = 0; names[i].len; i++) {
        if (name->len == names[i].len
            && ngx_strncasecmp(name->data, names[i].data, name->len) == 0)
        {
            return 1;
        }
    }

    return pscf->auth == NGX_HTTP_LLM_POOL_AUTH_HEADER
           && name->len == pscf->auth_name.len
           && ngx_strncasecmp(name->data, pscf->auth_name.data, name->len)
              == 0;
}


/*
 * What this attempt's response says: its status, the time to its
 * header, and the provider's figures for the key: OpenAI's
 * x-ratelimit-remaining- and -limit- and -reset- of requests and
 * tokens, Anthropic's anthropic-ratelimit-requests-, -tokens-,
 * -input-tokens- and -output-tokens- -remaining, -limit and -reset (an
 * RFC 3339 time; the tightest of the token figures counts),
 * retry-after-ms, Retry-After in seconds or as an HTTP date.
 */

static void
ngx_http_llm_pool_outcome(ngx_http_llm_pool_peer_data_t *pd,
    ngx_http_llm_pool_outcome_t *o)
{
    u_char                       *n;
    off_t                         v;
    time_t                        t;
    ngx_uint_t                    i;
    ngx_list_part_t              *part;
    ngx_table_elt_t              *h;
    ngx_http_upstream_t          *u;
    ngx_http_llm_pool_figures_t   f;

    ngx_memzero(o, sizeof(ngx_http_llm_pool_outcome_t));
    ngx_memzero(&f, sizeof(ngx_http_llm_pool_figures_t));

    u = pd->request->upstream;

    if (u == NULL || u->headers_in.status_n == 0) {
        return;
    }

    o->status = u->headers_in.status_n;

    if (u->state && u->state->header_time != (ngx_msec_t) -1) {
        o->latency = ngx_max(u->state->header_time, 1);
    }

    part = &u->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len < 11) {
            continue;
        }

        n = h[i].lowcase_key;

        if (ngx_strncmp(n, "retry-after", 11) == 0) {

            /* a wait beyond 30 days is taken as 30 days */

            if (h[i].key.len == 14 && ngx_strncmp(n + 11, "-ms", 3) == 0) {
                v = ngx_atoof(h[i].value.data, h[i].value.len);
                if (v > 0) {
                    o->retry = ngx_min(v, NGX_HTTP_LLM_POOL_RETRY_MAX * 1000);
                }

            } else if (h[i].key.len == 11 && o->retry == 0) {
                v = ngx_atoof(h[i].value.data, h[i].value.len);
                if (v > 0) {
                    o->retry = ngx_min(v, NGX_HTTP_LLM_POOL_RETRY_MAX) * 1000;

                } else if (v == NGX_ERROR) {
                    t = ngx_parse_http_time(h[i].value.data,
                                            h[i].value.len);
                    if (t != NGX_ERROR && t > ngx_time()) {
                        o->retry = ngx_min(t - ngx_time(),
                                           NGX_HTTP_LLM_POOL_RETRY_MAX)
                                   * 1000;
                    }
                }
            }

            continue;
        }

        if (h[i].key.len > 20
            && ngx_strncmp(n, "anthropic-ratelimit-", 20) == 0)
        {
            ngx_http_llm_pool_anthropic(&h[i], &f);
            continue;
        }

        if (h[i].key.len < 22 || ngx_strncmp(n, "x-ratelimit-", 12) != 0) {
            continue;
        }

        n += 12;

        if (h[i].key.len == 30
            && ngx_strncmp(n, "remaining-requests", 18) == 0)
        {
            v = ngx_atoof(h[i].value.data, h[i].value.len);
            if (v >= 0) {
                o->req_left = v;
                o->req_known = 1;
            }

        } else if (h[i].key.len == 26
                   && ngx_strncmp(n, "limit-requests", 14) == 0)
        {
            v = ngx_atoof(h[i].value.data, h[i].value.len);
            o->req_limit = (v > 0) ? v : 0;

        } else if (h[i].key.len == 26
                   && ngx_strncmp(n, "reset-requests", 14) == 0)
        {
            o->req_reset = ngx_http_llm_pool_duration(&h[i].value);

        } else if (h[i].key.len == 28
                   && ngx_strncmp(n, "remaining-tokens", 16) == 0)
        {
            v = ngx_atoof(h[i].value.data, h[i].value.len);
            if (v >= 0) {
                o->tok_left = v;
                o->tok_known = 1;
            }

        } else if (h[i].key.len == 24
                   && ngx_strncmp(n, "limit-tokens", 12) == 0)
        {
            v = ngx_atoof(h[i].value.data, h[i].value.len);
            o->tok_limit = (v > 0) ? v : 0;

        } else if (h[i].key.len == 24
                   && ngx_strncmp(n, "reset-tokens", 12) == 0)
        {
            o->tok_reset = ngx_http_llm_pool_duration(&h[i].value);
        }
    }

    if (f.known) {
        ngx_http_llm_pool_figures(&f, o);
    }

    /* without a reset time, a figure is trusted for a minute */

    if (o->req_known && o->req_reset == 0) {
        o->req_reset = 60000;
    }

    if (o->tok_known && o->tok_reset == 0) {
        o->tok_reset = 60000;
    }
}


/* "anthropic-ratelimit-DIMENSION-FIELD" */

static void
ngx_http_llm_pool_anthropic(ngx_table_elt_t *h,
    ngx_http_llm_pool_figures_t *f)
{
    u_char      *n, *last;
    off_t        v;
    size_t       len;
    ngx_uint_t   d;

    static ngx_str_t  dims[] = {
        ngx_string("requests-"),
        ngx_string("tokens-"),
        ngx_string("input-tokens-"),
        ngx_string("output-tokens-")
    };

    n = h->lowcase_key + 20;
    last = h->lowcase_key + h->key.len;

    for (d = 0; d < NGX_HTTP_LLM_POOL_DIMS; d++) {
        if ((size_t) (last - n) > dims[d].len
            && ngx_strncmp(n, dims[d].data, dims[d].len) == 0)
        {
            break;
        }
    }

    if (d == NGX_HTTP_LLM_POOL_DIMS) {
        return;
    }

    n += dims[d].len;
    len = last - n;

    if (len == 9 && ngx_strncmp(n, "remaining", 9) == 0) {
        v = ngx_atoof(h->value.data, h->value.len);
        if (v >= 0) {
            f->left[d] = v;
            f->known |= 1 << d;
        }

    } else if (len == 5 && ngx_strncmp(n, "limit", 5) == 0) {
        v = ngx_atoof(h->value.data, h->value.len);
        f->limit[d] = (v > 0) ? v : 0;

    } else if (len == 5 && ngx_strncmp(n, "reset", 5) == 0) {
        f->reset[d] = ngx_http_llm_pool_rfc3339(&h->value);
    }
}


/*
 * Anthropic's figures as the outcome's, unless OpenAI's were there:
 * requests as they are; of tokens, input and output tokens the one with
 * the least left for its limit.
 */

static void
ngx_http_llm_pool_figures(ngx_http_llm_pool_figures_t *f,
    ngx_http_llm_pool_outcome_t *o)
{
    ngx_uint_t  d, best;

    if (!o->req_known && (f->known & 1)) {
        o->req_known = 1;
        o->req_left = f->left[0];
        o->req_limit = f->limit[0];
        o->req_reset = f->reset[0];
    }

    if (o->tok_known) {
        return;
    }

    best = 0;

    for (d = 1; d < NGX_HTTP_LLM_POOL_DIMS; d++) {

        if (!(f->known & (1 << d))) {
            continue;
        }

        /* left/limit below best's: compared as cross products */

        if (best == 0
            || (f->limit[d] && f->limit[best]
                ? f->left[d] * f->limit[best] < f->left[best] * f->limit[d]
                : f->left[d] < f->left[best]))
        {
            best = d;
        }
    }

    if (best) {
        o->tok_known = 1;
        o->tok_left = f->left[best];
        o->tok_limit = f->limit[best];
        o->tok_reset = f->reset[best];
    }
}


/*
 * Anthropic's resets: an RFC 3339 time, "2025-01-01T00:00:30Z" or with a
 * fraction and an offset; ms from now, at least 1; 0 when unreadable.
 */

static ngx_msec_t
ngx_http_llm_pool_rfc3339(ngx_str_t *s)
{
    u_char      *p, *last;
    int64_t      y, m, d, hh, mm, ss, off, days, at, now;
    ngx_uint_t   i, ms, scale;
    ngx_time_t  *tp;

    p = s->data;
    last = p + s->len;

    if (s->len < 20 || p[4] != '-' || p[7] != '-'
        || (p[10] != 'T' && p[10] != 't' && p[10] != ' ')
        || p[13] != ':' || p[16] != ':')
    {
        return 0;
    }

    for (i = 0; i < 19; i++) {
        if (i != 4 && i != 7 && i != 10 && i != 13 && i != 16
            && (p[i] < '0' || p[i] > '9'))
        {
            return 0;
        }
    }

    y = (p[0] - '0') * 1000 + (p[1] - '0') * 100 + (p[2] - '0') * 10
        + (p[3] - '0');
    m = (p[5] - '0') * 10 + (p[6] - '0');
    d = (p[8] - '0') * 10 + (p[9] - '0');
    hh = (p[11] - '0') * 10 + (p[12] - '0');
    mm = (p[14] - '0') * 10 + (p[15] - '0');
    ss = (p[17] - '0') * 10 + (p[18] - '0');

    if (m < 1 || m > 12 || d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 60)
    {
        return 0;
    }

    p += 19;
    ms = 0;

    if (p < last && *p == '.') {
        scale = 100;

        for (p++; p < last && *p >= '0' && *p <= '9'; p++) {
            ms += (*p - '0') * scale;
            scale /= 10;
        }
    }

    off = 0;

    if (p < last && (*p == 'Z' || *p == 'z')) {
        p++;

    } else if (last - p == 6 && (*p == '+' || *p == '-') && p[3] == ':'
               && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9'
               && p[4] >= '0' && p[4] <= '9' && p[5] >= '0' && p[5] <= '9')
    {
        off = ((p[1] - '0') * 10 + (p[2] - '0')) * 3600
              + ((p[4] - '0') * 10 + (p[5] - '0')) * 60;

        if (*p == '-') {
            off = -off;
        }

        p += 6;

    } else {
        return 0;
    }

    if (p != last) {
        return 0;
    }

    /* days since 1970-01-01 (Howard Hinnant's days_from_civil) */

    y -= (m <= 2);
    days = (y / 400) * 146097
           + (365 * (y % 400) + (y % 400) / 4 - (y % 400) / 100)
           + (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
           - 719468;

    at = ((days * 86400 + hh * 3600 + mm * 60 + ss) - off) * 1000 + ms;

    tp = ngx_timeofday();
    now = (int64_t) tp->sec * 1000 + tp->msec;

    return (at > now) ? (ngx_msec_t) (at - now) : 1;
}


/* OpenAI's reset durations: "20ms", "1s", "6m0s", "1h2m3.5s"; ms */

static ngx_msec_t
ngx_http_llm_pool_duration(ngx_str_t *s)
{
    u_char      *p, *last;
    uint64_t     n, frac, scale, total;

    p = s->data;
    last = p + s->len;
    total = 0;

    while (p < last) {
        n = 0;
        frac = 0;
        scale = 1;

        if (*p < '0' || *p > '9') {
            return 0;
        }

        while (p < last && *p >= '0' && *p <= '9' && n < 100000000) {
            n = n * 10 + (*p++ - '0');
        }

        if (p < last && *p == '.') {
            for (p++; p < last && *p >= '0' && *p <= '9'; p++) {
                if (scale < 1000) {
                    frac = frac * 10 + (*p - '0');
                    scale *= 10;
                }
            }
        }

        /* n + frac / scale units */

        if (p + 1 < last && p[0] == 'm' && p[1] == 's') {
            total += n;
            p += 2;

        } else if (p < last && *p == 's') {
            total += n * 1000 + frac * 1000 / scale;
            p++;

        } else if (p < last && *p == 'm') {
            total += n * 60000 + frac * 60000 / scale;
            p++;

        } else if (p < last && *p == 'h') {
            total += n * 3600000 + frac * 3600000 / scale;
            p++;

        } else if (p == last) {
            total += n * 1000 + frac * 1000 / scale;   /* seconds */

        } else {
            return 0;
        }
    }

    return total;
}


ngx_int_t
ngx_http_llm_pool_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_llm_pool_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_llm_pool_body_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_pool_header_filter(ngx_http_request_t *r)
{
    ngx_uint_t                      status, replace;
    ngx_http_upstream_t            *u;
    ngx_http_llm_pool_key_t        *key;
    ngx_http_llm_loc_conf_t        *llcf;
    ngx_http_llm_pool_outcome_t     o;
    ngx_http_llm_pool_peer_data_t  *pd;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    pd = ngx_http_get_module_ctx(r, ngx_http_llm_pool_module);

    if (pd == NULL || pd->replacing) {
        return ngx_http_next_header_filter(r);
    }

    u = r->upstream;

    /* the response of this attempt goes to the client: account it now */

    if (pd->current != NGX_HTTP_LLM_POOL_NONE && !pd->accounted
        && u && u->headers_in.status_n)
    {
        ngx_http_llm_pool_outcome(pd, &o);
        ngx_http_llm_pool_state_done(pd, &o, 0);
        pd->accounted = 1;
    }

    replace = 0;

    if (r->err_status) {
        /* nginx's own: no pair left, or every try failed */

        status = r->err_status;

        replace = (status == NGX_HTTP_BAD_GATEWAY
                   || (status == NGX_HTTP_TOO_MANY_REQUESTS
                       && pd->conf->keys.nelts));

    } else if (pd->served != NGX_HTTP_LLM_POOL_NONE) {
        status = r->headers_out.status;

        replace = (status == NGX_HTTP_UNAUTHORIZED || status == 402
                   || status == NGX_HTTP_FORBIDDEN
                   || status == NGX_HTTP_TOO_MANY_REQUESTS);
    }

    if (replace) {
        return ngx_http_llm_pool_replace(r, pd);
    }

    if (pd->served == NGX_HTTP_LLM_POOL_NONE || r->err_status) {
        return ngx_http_next_header_filter(r);
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_gateway_module);

    if (llcf->headers) {
        key = &((ngx_http_llm_pool_key_t *) pd->conf->keys.elts)[pd->served];

        if (ngx_http_llm_add_header(r, "X-LLM-Provider-Key",
                                         key->name.data, key->name.len)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_next_header_filter(r);
}


/*
 * The response becomes 502 provider_unavailable: headers cleared as for
 * an error page (the provider's, which may name its account, go too),
 * Retry-After when every key is cooling down, and the API-shaped body;
 * the body filter then drops what the upstream or nginx sends after it.
 */

static ngx_int_t
ngx_http_llm_pool_replace(ngx_http_request_t *r,
    ngx_http_llm_pool_peer_data_t *pd)
{
    ngx_int_t                 rc;
    ngx_str_t                *msg;
    ngx_msec_t                now;
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_loc_conf_t  *llcf;

    static ngx_str_t          none = ngx_string(
        "The provider is unavailable: every key of the pool failed, "
        "is cooling down or is out of budget.");
    static ngx_str_t          refused = ngx_string(
        "The provider refused the gateway's key for it; "
        "this is not about your key.");

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "llm pool: %ui becomes provider_unavailable",
                   r->err_status ? r->err_status : r->headers_out.status);

    msg = (r->err_status == 0
           && r->headers_out.status != NGX_HTTP_TOO_MANY_REQUESTS)
          ? &refused : &none;

    ngx_memzero(&r->headers_out.status,
                sizeof(ngx_http_headers_out_t)
                - offsetof(ngx_http_headers_out_t, status));

    r->headers_out.headers.part.nelts = 0;
    r->headers_out.headers.part.next = NULL;
    r->headers_out.headers.last = &r->headers_out.headers.part;
    r->headers_out.content_length_n = -1;
    r->headers_out.last_modified_time = -1;

    r->err_status = 0;

    now = ngx_current_msec;

    if (pd->retry_at == 0) {
        pd->retry_at = ngx_http_llm_pool_state_soonest(pd->conf);
    }

    if (pd->retry_at > now
        && ngx_http_llm_retry_after(r, pd->retry_at - now) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ctx = ngx_http_llm_find_ctx(r);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_ctx_t));
        if (ctx == NULL) {
            return NGX_ERROR;
        }

        llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_gateway_module);
        ctx->api = ngx_http_llm_api(r, llcf->api);
    }

    pd->replacing = 1;

    rc = ngx_http_llm_send_error(r, ctx, NGX_HTTP_LLM_ERR_PROVIDER, msg);

    pd->replacing = 0;
    pd->replaced = 1;

    return (rc == NGX_ERROR) ? NGX_ERROR : NGX_OK;
}


static ngx_int_t
ngx_http_llm_pool_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_chain_t                    *cl;
    ngx_http_llm_pool_peer_data_t  *pd;

    if (r != r->main) {
        return ngx_http_next_body_filter(r, in);
    }

    pd = ngx_http_get_module_ctx(r, ngx_http_llm_pool_module);

    if (pd == NULL || !pd->replaced || pd->replacing) {
        return ngx_http_next_body_filter(r, in);
    }

    /* the replaced response's own body: consumed, never sent */

    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;

        if (cl->buf->in_file) {
            cl->buf->file_pos = cl->buf->file_last;
        }
    }

    return ngx_http_next_body_filter(r, NULL);
}


/* $llm_pool_key: the name of the key of the last attempt */

ngx_int_t
ngx_http_llm_pool_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_llm_pool_key_t        *key;
    ngx_http_llm_pool_peer_data_t  *pd;

    pd = ngx_http_get_module_ctx(r, ngx_http_llm_pool_module);

    if (pd == NULL || pd->served == NGX_HTTP_LLM_POOL_NONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    key = &((ngx_http_llm_pool_key_t *) pd->conf->keys.elts)[pd->served];

    v->len = key->name.len;
    v->data = key->name.data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * tokens= budgets count what each response used, as the gateway's
 * $llm_total_tokens reports it; the gateway is told to read usage from
 * every answer even where nothing else of its own needs it.
 */

ngx_int_t
ngx_http_llm_pool_log_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_llm_main_conf_t   *lmcf;
    ngx_http_core_main_conf_t  *cmcf;

    static ngx_str_t            name = ngx_string("llm_total_tokens");

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    lmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_llm_gateway_module);

    ngx_http_llm_pool_tokens_index = ngx_http_get_variable_index(cf, &name);

    if (ngx_http_llm_pool_tokens_index == NGX_ERROR) {
        return NGX_ERROR;
    }

    lmcf->want_usage = 1;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_llm_pool_log_handler;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_pool_log_handler(ngx_http_request_t *r)
{
    off_t                           n;
    ngx_http_variable_value_t      *vv;
    ngx_http_llm_pool_peer_data_t  *pd;

    pd = ngx_http_get_module_ctx(r, ngx_http_llm_pool_module);

    if (pd == NULL || pd->served == NGX_HTTP_LLM_POOL_NONE
        || !pd->conf->tokens)
    {
        return NGX_OK;
    }

    vv = ngx_http_get_indexed_variable(r, ngx_http_llm_pool_tokens_index);

    if (vv == NULL || vv->not_found || vv->len == 0) {
        return NGX_OK;
    }

    n = ngx_atoof(vv->data, vv->len);

    if (n > 0) {
        ngx_http_llm_pool_state_tokens(pd->conf, pd->served, n);
    }

    return NGX_OK;
}
