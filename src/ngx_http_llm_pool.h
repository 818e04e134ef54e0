
/*
 * ngx_llm_gateway: the provider key pool (ngx_http_llm_pool_module).
 *
 * Types shared by the pool's four files: ngx_http_llm_pool.c (directives
 * and configuration), ngx_http_llm_pool_peer.c (the balancer's per-request
 * side: peers, the secret written into each attempt, filters),
 * ngx_http_llm_pool_state.c (the state all workers share: cooldowns,
 * disabled keys, budgets, learned headroom, server health, the choice)
 * and ngx_http_llm_pool_sync.c (that state shared by the nodes of a
 * fleet through Redis, with llm_redis).
 */


#ifndef _NGX_HTTP_LLM_POOL_H_INCLUDED_
#define _NGX_HTTP_LLM_POOL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* llm_pool_auth */
#define NGX_HTTP_LLM_POOL_AUTH_BEARER   0
#define NGX_HTTP_LLM_POOL_AUTH_HEADER   1
#define NGX_HTTP_LLM_POOL_AUTH_QUERY    2

/* a pair without a key: a servers-only pool */
#define NGX_HTTP_LLM_POOL_NO_KEY        ((ngx_uint_t) -1)
#define NGX_HTTP_LLM_POOL_NONE          ((ngx_uint_t) -1)

/* pools up to this many pairs scan them all (exact smooth weights) */
#define NGX_HTTP_LLM_POOL_SCAN_MAX      64

/* what a node learns from Redis, and tells it */
#define NGX_HTTP_LLM_POOL_SYNC_COOL     'c'     /* a cooldown */
#define NGX_HTTP_LLM_POOL_SYNC_OFF      'd'     /* a disabled key */
#define NGX_HTTP_LLM_POOL_SYNC_REQ      'r'     /* requests= spent */
#define NGX_HTTP_LLM_POOL_SYNC_TOK      't'     /* tokens= spent */


typedef struct {
    ngx_uint_t                  limit;     /* 0: no budget */
    ngx_msec_t                  period;
} ngx_http_llm_pool_budget_t;


typedef struct {
    ngx_str_t                   name;
    ngx_str_t                   auth;      /* header line or query arg;
                                              holds the secret */
    ngx_str_t                   server;    /* server=, or empty */
    ngx_uint_t                  weight;
    ngx_http_llm_pool_budget_t  requests;
    ngx_http_llm_pool_budget_t  tokens;
    uint64_t                    hash;      /* of the name: reload match */
} ngx_http_llm_pool_key_t;


typedef struct {
    struct sockaddr            *sockaddr;
    socklen_t                   socklen;
    ngx_str_t                   name;      /* address */
    ngx_str_t                   host;      /* as the server directive */
    ngx_uint_t                  weight;
    ngx_uint_t                  max_conns;
    ngx_uint_t                  max_fails;
    ngx_msec_t                  fail_timeout;
    ngx_uint_t                  down;
} ngx_http_llm_pool_server_t;


typedef struct {
    ngx_uint_t                  server;
    ngx_uint_t                  key;       /* NGX_HTTP_LLM_POOL_NO_KEY */
    ngx_uint_t                  weight;
} ngx_http_llm_pool_pair_t;


/* shared: one key */
typedef struct {
    uint64_t                    hash;
    ngx_msec_t                  cooldown;  /* until; 0: none */
    ngx_msec_t                  own;       /* until, by this node's 429 */
    ngx_msec_t                  disabled;  /* since; 0: enabled */

    /* our own budgets: two fixed windows give a sliding estimate */
    ngx_msec_t                  req_start;
    uint64_t                    req_cur;
    uint64_t                    req_prev;
    ngx_msec_t                  tok_start;
    uint64_t                    tok_cur;
    uint64_t                    tok_prev;

    /* headroom the provider reported (x-ratelimit-*) */
    ngx_msec_t                  req_reset;  /* 0: not known */
    uint64_t                    req_left;
    uint64_t                    req_limit;
    ngx_msec_t                  tok_reset;
    uint64_t                    tok_left;
    uint64_t                    tok_limit;

    uint64_t                    requests;   /* attempts, since start */
    uint64_t                    failures;
    ngx_msec_t                  latency;    /* moving average, ms */
} ngx_http_llm_pool_key_sh_t;


/* shared: one server */
typedef struct {
    ngx_uint_t                  inflight;
    ngx_uint_t                  fails;
    ngx_msec_t                  accessed;
    ngx_msec_t                  checked;
    ngx_msec_t                  latency;    /* moving average, ms */
} ngx_http_llm_pool_server_sh_t;


typedef struct {
    ngx_uint_t                  nkeys;
    ngx_uint_t                  nservers;
    ngx_uint_t                  npairs;
    ngx_msec_t                  latency;    /* of all servers, ms */
    ngx_msec_t                  key_latency; /* of all keys, ms */
    ngx_msec_t                  synced;     /* last pull from Redis */
    uint64_t                    epoch;      /* wall ms: keys re-enabled */
    ngx_http_llm_pool_key_sh_t *keys;
    ngx_http_llm_pool_server_sh_t
                               *servers;
    int64_t                    *cw;         /* smooth weighted round robin */
} ngx_http_llm_pool_shctx_t;


typedef struct {
    ngx_str_t                   name;       /* the upstream's */
    ngx_array_t                 keys;       /* ngx_http_llm_pool_key_t */

    ngx_http_llm_pool_server_t *servers;
    ngx_uint_t                  nservers;
    ngx_http_llm_pool_pair_t   *pairs;
    ngx_uint_t                  npairs;
    uint64_t                   *cumulative; /* pair weights, running sum */

    ngx_uint_t                  auth;       /* NGX_HTTP_LLM_POOL_AUTH_* */
    ngx_str_t                   auth_name;  /* header or argument */
    ngx_msec_t                  cooldown;
    ngx_msec_t                  sync;       /* pull interval (llm_redis) */
    size_t                      auth_max;   /* longest key auth */
    ngx_uint_t                 *byname;     /* keys by name hash */
    ngx_str_t                   rkey;       /* the pool's Redis key */

    ngx_shm_zone_t             *shm_zone;
    ngx_slab_pool_t            *shpool;
    ngx_http_llm_pool_shctx_t  *sh;
    void                       *old;        /* reload: the old pool's
                                               configuration, in init */

    ngx_str_t                   conf_file;
    ngx_uint_t                  conf_line;

    unsigned                    enabled:1;
    unsigned                    auth_set:1;
    unsigned                    tokens:1;   /* a key has tokens= */
    unsigned                    shared:1;   /* llm_redis: fleet state */
} ngx_http_llm_pool_srv_conf_t;


/* per request: the balancer's peer data, also the module's request ctx */
typedef struct {
    ngx_http_llm_pool_srv_conf_t  *conf;
    ngx_http_request_t         *request;

    ngx_uint_t                  current;    /* pair, or NONE */
    ngx_uint_t                  served;     /* key of the last attempt */
    uintptr_t                  *tried;      /* pairs, a bit each */
    ngx_msec_t                  started;

    /* the upstream request head without credentials, and where the
       chosen key's auth goes in */
    ngx_buf_t                  *head;
    u_char                     *tmpl;
    size_t                      tmpl_len;
    size_t                      tmpl_at;

    ngx_msec_t                  retry_at;   /* all cooling: soonest back */
    uint64_t                    tokens;     /* used, for tokens= */

    unsigned                    accounted:1;
    unsigned                    replacing:1;
    unsigned                    replaced:1;
} ngx_http_llm_pool_peer_data_t;


typedef struct {
    ngx_uint_t                  status;     /* of the attempt; 0: none */
    ngx_uint_t                  failed;     /* NGX_PEER_FAILED */
    ngx_msec_t                  latency;    /* to the header; 0: unknown */
    ngx_msec_t                  retry;      /* provider's wait; 0: none */
    uint64_t                    req_left;
    uint64_t                    req_limit;
    ngx_msec_t                  req_reset;
    uint64_t                    tok_left;
    uint64_t                    tok_limit;
    ngx_msec_t                  tok_reset;
    unsigned                    req_known:1;
    unsigned                    tok_known:1;
} ngx_http_llm_pool_outcome_t;


/* one line of a pull: what Redis holds about a key */
typedef struct {
    ngx_uint_t                  kind;       /* NGX_HTTP_LLM_POOL_SYNC_* */
    ngx_uint_t                  key;
    uint64_t                    a;          /* ms left, age or period */
    uint64_t                    cur;
    uint64_t                    prev;
} ngx_http_llm_pool_remote_t;


extern ngx_module_t  ngx_http_llm_pool_module;


/* ngx_http_llm_pool_peer.c */
ngx_int_t ngx_http_llm_pool_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);
ngx_int_t ngx_http_llm_pool_filter_init(ngx_conf_t *cf);
ngx_int_t ngx_http_llm_pool_log_init(ngx_conf_t *cf);
ngx_int_t ngx_http_llm_pool_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

/* ngx_http_llm_pool_state.c */
ngx_int_t ngx_http_llm_pool_state_add(ngx_conf_t *cf,
    ngx_http_llm_pool_srv_conf_t *pscf);
ngx_int_t ngx_http_llm_pool_state_pick(ngx_http_llm_pool_peer_data_t *pd,
    ngx_uint_t *pair);
void ngx_http_llm_pool_state_done(ngx_http_llm_pool_peer_data_t *pd,
    ngx_http_llm_pool_outcome_t *o, ngx_uint_t release);
void ngx_http_llm_pool_state_tokens(ngx_http_llm_pool_srv_conf_t *pscf,
    ngx_uint_t key, uint64_t tokens);
ngx_msec_t ngx_http_llm_pool_state_soonest(
    ngx_http_llm_pool_srv_conf_t *pscf);
ngx_int_t ngx_http_llm_pool_state_claim(ngx_http_llm_pool_srv_conf_t *pscf,
    ngx_uint_t *keys, ngx_msec_t *left, ngx_uint_t max, ngx_uint_t *n);
void ngx_http_llm_pool_state_merge(ngx_http_llm_pool_srv_conf_t *pscf,
    ngx_http_llm_pool_remote_t *rm, ngx_uint_t n, uint64_t rnow);

/* ngx_http_llm_pool_sync.c */
ngx_int_t ngx_http_llm_pool_sync_conf(ngx_conf_t *cf,
    ngx_http_llm_pool_srv_conf_t *pscf);
ngx_int_t ngx_http_llm_pool_sync_init_process(ngx_cycle_t *cycle);
void ngx_http_llm_pool_sync_event(ngx_http_llm_pool_srv_conf_t *pscf,
    ngx_uint_t kind, ngx_uint_t k, uint64_t value, ngx_msec_t period);


#endif /* _NGX_HTTP_LLM_POOL_H_INCLUDED_ */
