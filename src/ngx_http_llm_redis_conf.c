
/*
 * ngx_llm_gateway: the "llm_redis" directive.
 *
 * Owns reading the directive into ngx_http_llm_redis_conf_t: the
 * address (host:port, resolved at configuration time, or unix:PATH),
 * the password file (read once, at configuration time), the prefix, the
 * timeout, the connections, on_error, key_cache and batch.  What the
 * workers do with it is ngx_http_llm_redis.c's.
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_redis.h"


static ngx_int_t ngx_http_llm_redis_address(ngx_conf_t *cf,
    ngx_http_llm_redis_conf_t *rc, ngx_str_t *addr);
static ngx_int_t ngx_http_llm_redis_password(ngx_conf_t *cf,
    ngx_http_llm_redis_conf_t *rc, ngx_str_t *file);


const char  *ngx_http_llm_on_error_names[] = {
    "local", "deny", "allow"
};


/*
 * llm_redis ADDRESS [db=N] [password_file=PATH] [prefix=STR]
 *           [timeout=TIME] [connections=N] [on_error=local|deny|allow]
 *           [key_cache=TIME] [batch=N];
 */

char *
ngx_http_llm_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    ngx_int_t                   n;
    ngx_str_t                  *value, s;
    ngx_uint_t                  i;
    ngx_http_llm_redis_conf_t  *rc;

    if (lmcf->redis) {
        return "is duplicate";
    }

    rc = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_redis_conf_t));
    if (rc == NULL) {
        return NGX_CONF_ERROR;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     rc->unix_path = { 0, NULL };
     *     rc->password = { 0, NULL };
     *     rc->on_error = NGX_HTTP_LLM_ON_ERROR_LOCAL;
     */

    value = cf->args->elts;

    rc->name = value[1];
    rc->db = -1;
    rc->timeout = 50;
    rc->connections = 2;
    rc->key_cache = 4000;
    rc->batch = NGX_HTTP_LLM_REDIS_BATCH;
    ngx_str_set(&rc->prefix, "llm:");

    if (ngx_http_llm_redis_address(cf, rc, &value[1]) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            rc->db = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (rc->db == NGX_ERROR || rc->db > 65535) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "password_file=", 14) == 0) {
            s.data = value[i].data + 14;
            s.len = value[i].len - 14;

            if (s.len == 0) {
                goto invalid;
            }

            if (ngx_http_llm_redis_password(cf, rc, &s) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "prefix=", 7) == 0) {
            rc->prefix.data = value[i].data + 7;
            rc->prefix.len = value[i].len - 7;

            /* braces would break the accounts' Cluster hash tags */

            if (rc->prefix.len > 64
                || ngx_strlchr(rc->prefix.data,
                               rc->prefix.data + rc->prefix.len, '{')
                || ngx_strlchr(rc->prefix.data,
                               rc->prefix.data + rc->prefix.len, '}'))
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            n = ngx_parse_time(&s, 0);
            if (n == NGX_ERROR || n == 0) {
                goto invalid;
            }

            rc->timeout = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "key_cache=", 10) == 0) {
            s.data = value[i].data + 10;
            s.len = value[i].len - 10;

            /* a revoked key stops working within this, fleet-wide */

            n = ngx_parse_time(&s, 0);
            if (n == NGX_ERROR || n > NGX_HTTP_LLM_KEY_CACHE_MAX) {
                goto invalid;
            }

            rc->key_cache = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "connections=", 12) == 0) {
            n = ngx_atoi(value[i].data + 12, value[i].len - 12);
            if (n <= 0 || n > 64) {
                goto invalid;
            }

            rc->connections = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "batch=", 6) == 0) {

            /* admissions of one account sent as one script (1: off) */

            n = ngx_atoi(value[i].data + 6, value[i].len - 6);
            if (n <= 0 || n > NGX_HTTP_LLM_REDIS_BATCH_MAX) {
                goto invalid;
            }

            rc->batch = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "on_error=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            for (n = 0; n < 3; n++) {
                if (s.len == ngx_strlen(ngx_http_llm_on_error_names[n])
                    && ngx_strncmp(s.data, ngx_http_llm_on_error_names[n],
                                   s.len)
                       == 0)
                {
                    break;
                }
            }

            if (n == 3) {
                goto invalid;
            }

            rc->on_error = n;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    lmcf->redis = rc;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid value \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


/* host:port (resolved now: a worker never resolves) or unix:/path */

static ngx_int_t
ngx_http_llm_redis_address(ngx_conf_t *cf, ngx_http_llm_redis_conf_t *rc,
    ngx_str_t *addr)
{
    u_char     *p;
    ngx_url_t   u;

    if (addr->len > 5 && ngx_strncmp(addr->data, "unix:", 5) == 0) {
        rc->unix_path.len = addr->len - 5;
        rc->unix_path.data = ngx_pnalloc(cf->pool, rc->unix_path.len + 1);
        if (rc->unix_path.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(rc->unix_path.data, addr->data + 5, rc->unix_path.len);
        rc->unix_path.data[rc->unix_path.len] = '\0';

        return NGX_OK;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = *addr;
    u.default_port = 6379;
    u.no_resolve = 0;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid address \"%V\"%s%s", addr,
                           u.err ? ": " : "", u.err ? u.err : "");
        return NGX_ERROR;
    }

    p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    rc->host.data = p;
    rc->host.len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen, p,
                                 NGX_SOCKADDR_STRLEN, 0);

    /* "[::1]" is "::1" to hiredis */

    if (rc->host.len > 2 && p[0] == '[') {
        rc->host.data++;
        rc->host.len -= 2;
    }

    rc->host.data[rc->host.len] = '\0';
    rc->port = u.port;

    return NGX_OK;
}


/* the first line of the file, read now (workers may not be able to) */

static ngx_int_t
ngx_http_llm_redis_password(ngx_conf_t *cf, ngx_http_llm_redis_conf_t *rc,
    ngx_str_t *file)
{
    u_char           *p, *last;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_str_t         name;
    ngx_file_info_t   fi;

    name = *file;

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &name);
        return NGX_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || ngx_file_size(&fi) > 4096)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "password_file \"%V\" is not a small file", &name);
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    p = ngx_pnalloc(cf->pool, 4097);
    if (p == NULL) {
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    n = ngx_read_fd(fd, p, 4096);
    ngx_close_file(fd);

    if (n < 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "reading \"%V\" failed", &name);
        return NGX_ERROR;
    }

    last = p;

    while (last < p + n && *last != CR && *last != LF) {
        last++;
    }

    if (last == p) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "password_file \"%V\" is empty", &name);
        return NGX_ERROR;
    }

    rc->password.data = p;
    rc->password.len = last - p;

    return NGX_OK;
}
