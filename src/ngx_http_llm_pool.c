
/*
 * ngx_llm_gateway: the provider key pool, configuration side.
 *
 * Owns the upstream-context directives "llm_pool", "llm_pool_auth" and
 * "llm_pool_key", reading each key's secret (env:, file: or a literal)
 * at configuration time, and the balancer's init_upstream: the peers are
 * the (server, key) pairs of the upstream block, each key's credential
 * is prepared once as the exact bytes an attempt will carry.
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_pool.h"


#define NGX_HTTP_LLM_POOL_SECRET_MAX  4096


static ngx_int_t ngx_http_llm_pool_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_llm_pool_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_llm_pool_create_srv_conf(ngx_conf_t *cf);
static char *ngx_http_llm_pool(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_llm_pool_auth(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_llm_pool_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_llm_pool_budget(ngx_conf_t *cf, ngx_str_t *value,
    size_t skip, ngx_http_llm_pool_budget_t *budget);
static ngx_int_t ngx_http_llm_pool_secret(ngx_conf_t *cf, ngx_str_t *name,
    ngx_str_t *src, ngx_str_t *secret);
static ngx_int_t ngx_http_llm_pool_init_upstream(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_llm_pool_init_pairs(ngx_conf_t *cf,
    ngx_http_llm_pool_srv_conf_t *pscf);
static ngx_int_t ngx_http_llm_pool_init_auth(ngx_conf_t *cf,
    ngx_http_llm_pool_srv_conf_t *pscf);
static void ngx_http_llm_pool_wipe(void *data);


static ngx_command_t  ngx_http_llm_pool_commands[] = {

    { ngx_string("llm_pool"),
      NGX_HTTP_UPS_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE12,
      ngx_http_llm_pool,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_pool_auth"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_pool_auth,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_pool_key"),
      NGX_HTTP_UPS_CONF|NGX_CONF_2MORE,
      ngx_http_llm_pool_key,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_llm_pool_module_ctx = {
    ngx_http_llm_pool_add_variables,       /* preconfiguration */
    ngx_http_llm_pool_postconfiguration,   /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    ngx_http_llm_pool_create_srv_conf,     /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_llm_pool_module = {
    NGX_MODULE_V1,
    &ngx_http_llm_pool_module_ctx,         /* module context */
    ngx_http_llm_pool_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_llm_pool_sync_init_process,   /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_http_llm_pool_key_var = ngx_string("llm_pool_key");


static ngx_int_t
ngx_http_llm_pool_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var;

    var = ngx_http_add_variable(cf, &ngx_http_llm_pool_key_var,
                                NGX_HTTP_VAR_NOCACHEABLE);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_llm_pool_variable;

    return NGX_OK;
}


static void *
ngx_http_llm_pool_create_srv_conf(ngx_conf_t *cf)
{
    ngx_http_llm_pool_srv_conf_t  *pscf;

    pscf = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_pool_srv_conf_t));
    if (pscf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     pscf->keys = { NULL };     (created by the first llm_pool_key)
     *     pscf->servers = NULL;
     *     pscf->pairs = NULL;
     *     pscf->auth = NGX_HTTP_LLM_POOL_AUTH_BEARER;
     *     pscf->auth_name = { 0, NULL };
     *     pscf->shm_zone = NULL;
     *     pscf->sh = NULL;
     *     pscf->enabled = 0;
     *     pscf->auth_set = 0;
     *     pscf->tokens = 0;
     *     pscf->shared = 0;
     *     pscf->byname = NULL;
     *     pscf->rkey = { 0, NULL };
     */

    pscf->cooldown = NGX_CONF_UNSET_MSEC;
    pscf->sync = NGX_CONF_UNSET_MSEC;

    return pscf;
}


/* llm_pool [cooldown=TIME] [sync=TIME]; */

static char *
ngx_http_llm_pool(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_pool_srv_conf_t *pscf = conf;

    ngx_str_t                     *value, s;
    ngx_msec_t                     ms, *field;
    ngx_uint_t                     i;
    ngx_http_upstream_srv_conf_t  *uscf;

    if (pscf->enabled) {
        return "is duplicate";
    }

    value = cf->args->elts;

    pscf->cooldown = 30000;
    pscf->sync = 1000;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "cooldown=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;
            field = &pscf->cooldown;

        } else if (ngx_strncmp(value[i].data, "sync=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;
            field = &pscf->sync;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        ms = ngx_parse_time(&s, 0);

        if (ms == (ngx_msec_t) NGX_ERROR || ms == 0
            || (field == &pscf->sync && (ms < 10 || ms > 60000)))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        *field = ms;
    }

    uscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_upstream_module);

    if (uscf->peer.init_upstream) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "load balancing method redefined");
    }

    uscf->peer.init_upstream = ngx_http_llm_pool_init_upstream;

    uscf->flags = NGX_HTTP_UPSTREAM_CREATE
                  |NGX_HTTP_UPSTREAM_WEIGHT
                  |NGX_HTTP_UPSTREAM_MAX_CONNS
                  |NGX_HTTP_UPSTREAM_MAX_FAILS
                  |NGX_HTTP_UPSTREAM_FAIL_TIMEOUT
                  |NGX_HTTP_UPSTREAM_DOWN;

    pscf->enabled = 1;
    pscf->name = uscf->host;
    pscf->conf_file = cf->conf_file->file.name;
    pscf->conf_line = cf->conf_file->line;

    return NGX_CONF_OK;
}


/* llm_pool_auth bearer | header=NAME | query=NAME; */

static char *
ngx_http_llm_pool_auth(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_pool_srv_conf_t *pscf = conf;

    u_char     *p;
    ngx_str_t  *value, name;

    if (pscf->auth_set) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "bearer") == 0) {
        pscf->auth = NGX_HTTP_LLM_POOL_AUTH_BEARER;
        pscf->auth_set = 1;
        return NGX_CONF_OK;
    }

    if (ngx_strncmp(value[1].data, "header=", 7) == 0) {
        pscf->auth = NGX_HTTP_LLM_POOL_AUTH_HEADER;
        name.data = value[1].data + 7;
        name.len = value[1].len - 7;

    } else if (ngx_strncmp(value[1].data, "query=", 6) == 0) {
        pscf->auth = NGX_HTTP_LLM_POOL_AUTH_QUERY;
        name.data = value[1].data + 6;
        name.len = value[1].len - 6;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    /* a header name is a token; an argument name needs no escaping */

    for (p = name.data; p < name.data + name.len; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
            || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_')
        {
            continue;
        }

        name.len = 0;
        break;
    }

    if (name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid name in \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    pscf->auth_name = name;
    pscf->auth_set = 1;

    return NGX_CONF_OK;
}


/*
 * llm_pool_key NAME secret=env:VAR|file:PATH|LITERAL [requests=N/PERIOD]
 *              [tokens=N/PERIOD] [weight=N] [server=ADDRESS];
 *
 * Messages about the secret never quote it.
 */

static char *
ngx_http_llm_pool_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_pool_srv_conf_t *pscf = conf;

    u_char                   *p;
    ngx_int_t                 n;
    ngx_str_t                *value, s;
    ngx_uint_t                i, has_secret;
    ngx_http_llm_pool_key_t  *key, *k;

    value = cf->args->elts;

    if (pscf->keys.elts == NULL
        && ngx_array_init(&pscf->keys, cf->pool, 4,
                          sizeof(ngx_http_llm_pool_key_t))
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    for (p = value[1].data; p < value[1].data + value[1].len; p++) {
        if (*p <= ' ' || *p >= 0x7f || *p == '"' || *p == '\\') {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid key name \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (value[1].len == 0 || value[1].len > 64) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid key name \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    k = pscf->keys.elts;

    for (i = 0; i < pscf->keys.nelts; i++) {
        if (k[i].name.len == value[1].len
            && ngx_strncmp(k[i].name.data, value[1].data, value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate llm_pool_key \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    key = ngx_array_push(&pscf->keys);
    if (key == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(key, sizeof(ngx_http_llm_pool_key_t));

    key->name = value[1];
    key->weight = 1;
    key->hash = ngx_hash_key(value[1].data, value[1].len)
                ^ ((uint64_t) value[1].len << 40);

    has_secret = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "secret=", 7) == 0) {

            if (has_secret) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "duplicate secret of llm_pool_key \"%V\"",
                                   &key->name);
                return NGX_CONF_ERROR;
            }

            s.data = value[i].data + 7;
            s.len = value[i].len - 7;

            if (ngx_http_llm_pool_secret(cf, &key->name, &s, &key->auth)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            has_secret = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "requests=", 9) == 0) {
            if (ngx_http_llm_pool_budget(cf, &value[i], 9, &key->requests)
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "tokens=", 7) == 0) {
            if (ngx_http_llm_pool_budget(cf, &value[i], 7, &key->tokens)
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            pscf->tokens = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "weight=", 7) == 0) {
            n = ngx_atoi(value[i].data + 7, value[i].len - 7);

            if (n == NGX_ERROR || n == 0 || n > 1000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid parameter \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            key->weight = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "server=", 7) == 0
            && value[i].len > 7)
        {
            key->server.data = value[i].data + 7;
            key->server.len = value[i].len - 7;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (!has_secret) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_pool_key \"%V\" has no \"secret=\"",
                           &key->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* "requests=100/m", "tokens=40000/m": PERIOD is s, m, h or d */

static char *
ngx_http_llm_pool_budget(ngx_conf_t *cf, ngx_str_t *value, size_t skip,
    ngx_http_llm_pool_budget_t *budget)
{
    u_char     *p, *last, *slash;
    ngx_int_t   n;

    p = value->data + skip;
    last = value->data + value->len;

    slash = ngx_strlchr(p, last, '/');

    if (slash == NULL || slash + 2 != last) {
        goto invalid;
    }

    n = ngx_atoi(p, slash - p);
    if (n == NGX_ERROR || n == 0) {
        goto invalid;
    }

    switch (slash[1]) {
    case 's':
        budget->period = 1000;
        break;
    case 'm':
        budget->period = 60 * 1000;
        break;
    case 'h':
        budget->period = 3600 * 1000;
        break;
    case 'd':
        budget->period = 86400 * 1000;
        break;
    default:
        goto invalid;
    }

    budget->limit = n;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", value);
    return NGX_CONF_ERROR;
}


/*
 * env:VAR (an "env VAR=value;" line, else the environment nginx started
 * with), file:PATH (its content less trailing white space; relative to
 * the configuration prefix) or the literal.  The secret must be printable
 * ASCII without spaces: it goes into a header line or a query argument.
 */

static ngx_int_t
ngx_http_llm_pool_secret(ngx_conf_t *cf, ngx_str_t *name, ngx_str_t *src,
    ngx_str_t *secret)
{
    u_char           *p, *v;
    char             *env;
    size_t            len;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_str_t         path, *var;
    ngx_uint_t        i;
    ngx_core_conf_t  *ccf;
    u_char            buf[NGX_HTTP_LLM_POOL_SECRET_MAX + 1];

    if (src->len > 4 && ngx_strncmp(src->data, "env:", 4) == 0) {

        len = src->len - 4;
        v = NULL;

        ccf = (ngx_core_conf_t *) ngx_get_conf(cf->cycle->conf_ctx,
                                               ngx_core_module);
        var = ccf->env.elts;

        /* "env NAME=value;" leaves len at the name, the value after it */

        for (i = 0; i < ccf->env.nelts; i++) {
            if (var[i].len == len && var[i].data[len] == '='
                && ngx_strncmp(var[i].data, src->data + 4, len) == 0)
            {
                v = var[i].data + len + 1;
                secret->len = ngx_strlen(v);
                break;
            }
        }

        if (v == NULL) {
            p = ngx_pnalloc(cf->temp_pool, len + 1);
            if (p == NULL) {
                return NGX_ERROR;
            }

            ngx_cpystrn(p, src->data + 4, len + 1);

            env = getenv((char *) p);

            if (env == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "llm_pool_key \"%V\": environment "
                                   "variable \"%s\" is not set", name, p);
                return NGX_ERROR;
            }

            v = (u_char *) env;
            secret->len = ngx_strlen(env);
        }

        secret->data = ngx_pnalloc(cf->pool, secret->len);
        if (secret->data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(secret->data, v, secret->len);

    } else if (src->len > 5 && ngx_strncmp(src->data, "file:", 5) == 0) {

        path.data = src->data + 5;
        path.len = src->len - 5;

        if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
            return NGX_ERROR;
        }

        fd = ngx_open_file(path.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

        if (fd == NGX_INVALID_FILE) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                               "llm_pool_key \"%V\": "
                               ngx_open_file_n " \"%V\" failed",
                               name, &path);
            return NGX_ERROR;
        }

        n = ngx_read_fd(fd, buf, sizeof(buf));

        if (ngx_close_file(fd) == NGX_FILE_ERROR) {
            ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                               ngx_close_file_n " \"%V\" failed", &path);
        }

        if (n == -1 || n > NGX_HTTP_LLM_POOL_SECRET_MAX) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                               "llm_pool_key \"%V\": cannot read a secret "
                               "from \"%V\"", name, &path);
            ngx_explicit_memzero(buf, sizeof(buf));
            return NGX_ERROR;
        }

        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'
                         || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        {
            n--;
        }

        secret->len = n;
        secret->data = ngx_pnalloc(cf->pool, n + 1);
        if (secret->data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(secret->data, buf, n);
        ngx_explicit_memzero(buf, sizeof(buf));

    } else {
        secret->data = ngx_pnalloc(cf->pool, src->len + 1);
        if (secret->data == NULL) {
            return NGX_ERROR;
        }

        secret->len = src->len;
        ngx_memcpy(secret->data, src->data, src->len);
    }

    if (secret->len == 0 || secret->len > NGX_HTTP_LLM_POOL_SECRET_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_pool_key \"%V\": the secret is empty "
                           "or too long", name);
        return NGX_ERROR;
    }

    for (p = secret->data; p < secret->data + secret->len; p++) {
        if (*p <= ' ' || *p >= 0x7f) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "llm_pool_key \"%V\": the secret holds a "
                               "space or a control character", name);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_pool_init_upstream(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_uint_t                     i, j, n;
    ngx_pool_cleanup_t            *cln;
    ngx_http_upstream_server_t    *server;
    ngx_http_llm_pool_server_t    *ps;
    ngx_http_llm_pool_srv_conf_t  *pscf;

    pscf = ngx_http_conf_upstream_srv_conf(us, ngx_http_llm_pool_module);

    if (us->servers == NULL || us->servers->nelts == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "no servers in upstream \"%V\" in %s:%ui",
                      &us->host, us->file_name, us->line);
        return NGX_ERROR;
    }

    server = us->servers->elts;
    n = 0;

    for (i = 0; i < us->servers->nelts; i++) {
        if (server[i].backup) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "llm_pool does not use \"backup\" servers, "
                          "in upstream \"%V\" in %s:%ui",
                          &us->host, us->file_name, us->line);
            return NGX_ERROR;
        }

        n += server[i].naddrs;
    }

    if (n == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "no servers in upstream \"%V\" in %s:%ui",
                      &us->host, us->file_name, us->line);
        return NGX_ERROR;
    }

    ps = ngx_pcalloc(cf->pool, n * sizeof(ngx_http_llm_pool_server_t));
    if (ps == NULL) {
        return NGX_ERROR;
    }

    pscf->servers = ps;
    pscf->nservers = n;

    n = 0;

    for (i = 0; i < us->servers->nelts; i++) {
        for (j = 0; j < server[i].naddrs; j++) {
            ps[n].sockaddr = server[i].addrs[j].sockaddr;
            ps[n].socklen = server[i].addrs[j].socklen;
            ps[n].name = server[i].addrs[j].name;
            ps[n].host = server[i].name;
            ps[n].weight = server[i].weight;
            ps[n].max_conns = server[i].max_conns;
            ps[n].max_fails = server[i].max_fails;
            ps[n].fail_timeout = server[i].fail_timeout * 1000;
            ps[n].down = server[i].down;
            n++;
        }
    }

    if (ngx_http_llm_pool_init_pairs(cf, pscf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (pscf->keys.nelts) {
        if (ngx_http_llm_pool_init_auth(cf, pscf) != NGX_OK) {
            return NGX_ERROR;
        }

        cln = ngx_pool_cleanup_add(cf->pool, 0);
        if (cln == NULL) {
            return NGX_ERROR;
        }

        cln->handler = ngx_http_llm_pool_wipe;
        cln->data = pscf;
    }

    if (ngx_http_llm_pool_state_add(cf, pscf) != NGX_OK) {
        return NGX_ERROR;
    }

    us->peer.init = ngx_http_llm_pool_init_peer;

    return NGX_OK;
}


/*
 * The pairs: every key with every server (or the one its server= names);
 * a pair weighs the server's weight times the key's.  Without keys, the
 * servers alone.
 */

static ngx_int_t
ngx_http_llm_pool_init_pairs(ngx_conf_t *cf,
    ngx_http_llm_pool_srv_conf_t *pscf)
{
    uint64_t                     sum;
    ngx_uint_t                   i, j, n, nkeys, found;
    ngx_http_llm_pool_key_t     *key;
    ngx_http_llm_pool_pair_t    *pair;
    ngx_http_llm_pool_server_t  *ps;

    ps = pscf->servers;
    key = pscf->keys.elts;
    nkeys = pscf->keys.nelts;

    n = nkeys ? nkeys * pscf->nservers : pscf->nservers;

    pair = ngx_palloc(cf->pool, n * sizeof(ngx_http_llm_pool_pair_t));
    pscf->cumulative = ngx_palloc(cf->pool, n * sizeof(uint64_t));

    if (pair == NULL || pscf->cumulative == NULL) {
        return NGX_ERROR;
    }

    pscf->pairs = pair;
    n = 0;

    if (nkeys == 0) {
        for (j = 0; j < pscf->nservers; j++) {
            pair[n].server = j;
            pair[n].key = NGX_HTTP_LLM_POOL_NO_KEY;
            pair[n].weight = ps[j].weight;
            n++;
        }
    }

    for (i = 0; i < nkeys; i++) {
        found = 0;

        for (j = 0; j < pscf->nservers; j++) {

            if (key[i].server.len
                && !(key[i].server.len == ps[j].host.len
                     && ngx_strncasecmp(key[i].server.data, ps[j].host.data,
                                        ps[j].host.len) == 0)
                && !(key[i].server.len == ps[j].name.len
                     && ngx_strncasecmp(key[i].server.data, ps[j].name.data,
                                        ps[j].name.len) == 0))
            {
                continue;
            }

            pair[n].server = j;
            pair[n].key = i;
            pair[n].weight = ps[j].weight * key[i].weight;
            n++;
            found = 1;
        }

        if (!found) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "llm_pool_key \"%V\": \"server=%V\" is not a "
                          "server of upstream \"%V\" in %V:%ui",
                          &key[i].name, &key[i].server, &pscf->name,
                          &pscf->conf_file, pscf->conf_line);
            return NGX_ERROR;
        }
    }

    pscf->npairs = n;

    sum = 0;

    for (i = 0; i < n; i++) {
        sum += pair[i].weight;
        pscf->cumulative[i] = sum;
    }

    return NGX_OK;
}


/*
 * Each key's credential as the bytes an attempt carries:
 * "Authorization: Bearer SECRET\r\n", "NAME: SECRET\r\n", or the query
 * argument "NAME=SECRET" (escaped).  The bare secret is wiped.
 */

static ngx_int_t
ngx_http_llm_pool_init_auth(ngx_conf_t *cf,
    ngx_http_llm_pool_srv_conf_t *pscf)
{
    u_char                   *p;
    size_t                    len;
    uintptr_t                 escape;
    ngx_str_t                 secret;
    ngx_uint_t                i;
    ngx_http_llm_pool_key_t  *key;

    static ngx_str_t          bearer = ngx_string("Authorization: Bearer ");

    key = pscf->keys.elts;

    for (i = 0; i < pscf->keys.nelts; i++) {
        secret = key[i].auth;

        switch (pscf->auth) {

        case NGX_HTTP_LLM_POOL_AUTH_HEADER:
            len = pscf->auth_name.len + 2 + secret.len + 2;
            break;

        case NGX_HTTP_LLM_POOL_AUTH_QUERY:
            escape = 2 * ngx_escape_uri(NULL, secret.data, secret.len,
                                        NGX_ESCAPE_ARGS);
            len = pscf->auth_name.len + 1 + secret.len + escape;
            break;

        default: /* NGX_HTTP_LLM_POOL_AUTH_BEARER */
            len = bearer.len + secret.len + 2;
            break;
        }

        p = ngx_pnalloc(cf->pool, len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        key[i].auth.data = p;

        switch (pscf->auth) {

        case NGX_HTTP_LLM_POOL_AUTH_HEADER:
            p = ngx_cpymem(p, pscf->auth_name.data, pscf->auth_name.len);
            *p++ = ':'; *p++ = ' ';
            p = ngx_cpymem(p, secret.data, secret.len);
            *p++ = CR; *p++ = LF;
            break;

        case NGX_HTTP_LLM_POOL_AUTH_QUERY:
            p = ngx_cpymem(p, pscf->auth_name.data, pscf->auth_name.len);
            *p++ = '=';
            p = (u_char *) ngx_escape_uri(p, secret.data, secret.len,
                                          NGX_ESCAPE_ARGS);
            break;

        default: /* NGX_HTTP_LLM_POOL_AUTH_BEARER */
            p = ngx_cpymem(p, bearer.data, bearer.len);
            p = ngx_cpymem(p, secret.data, secret.len);
            *p++ = CR; *p++ = LF;
            break;
        }

        key[i].auth.len = p - key[i].auth.data;

        ngx_explicit_memzero(secret.data, secret.len);

        pscf->auth_max = ngx_max(pscf->auth_max, key[i].auth.len);
    }

    return NGX_OK;
}


/* the configuration's pool goes away: so do the secrets */

static void
ngx_http_llm_pool_wipe(void *data)
{
    ngx_http_llm_pool_srv_conf_t *pscf = data;

    ngx_uint_t                i;
    ngx_http_llm_pool_key_t  *key;

    key = pscf->keys.elts;

    for (i = 0; i < pscf->keys.nelts; i++) {
        ngx_explicit_memzero(key[i].auth.data, key[i].auth.len);
    }
}


static ngx_int_t
ngx_http_llm_pool_postconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t                      i, pools, tokens;
    ngx_http_llm_main_conf_t       *lmcf;
    ngx_http_upstream_srv_conf_t  **uscfp;
    ngx_http_upstream_main_conf_t  *umcf;
    ngx_http_llm_pool_srv_conf_t   *pscf;

    umcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_upstream_module);

    uscfp = umcf->upstreams.elts;
    pools = 0;
    tokens = 0;

    for (i = 0; i < umcf->upstreams.nelts; i++) {

        if (uscfp[i]->srv_conf == NULL) {
            continue;
        }

        pscf = ngx_http_conf_upstream_srv_conf(uscfp[i],
                                               ngx_http_llm_pool_module);

        if (pscf == NULL) {
            continue;
        }

        if (!pscf->enabled) {
            if (pscf->keys.nelts || pscf->auth_set) {
                ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                              "\"llm_pool_key\" and \"llm_pool_auth\" need "
                              "\"llm_pool\" in upstream \"%V\" in %s:%ui",
                              &uscfp[i]->host, uscfp[i]->file_name,
                              uscfp[i]->line);
                return NGX_ERROR;
            }

            continue;
        }

        pools++;
        tokens += pscf->tokens;

        if (ngx_http_llm_pool_sync_conf(cf, pscf) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (pools == 0) {
        return NGX_OK;
    }

    /* llm_redis: the workers connect for the pools too */

    lmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_llm_gateway_module);
    lmcf->pools = pools;

    if (ngx_http_llm_pool_filter_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (tokens) {
        return ngx_http_llm_pool_log_init(cf);
    }

    return NGX_OK;
}
