
/*
 * ngx_llm_gateway: the Redis connection of each worker ("llm_redis").
 */


#ifndef _NGX_HTTP_LLM_REDIS_H_INCLUDED_
#define _NGX_HTTP_LLM_REDIS_H_INCLUDED_


#include "ngx_http_llm_module.h"


#define NGX_HTTP_LLM_ON_ERROR_LOCAL     0
#define NGX_HTTP_LLM_ON_ERROR_DENY      1
#define NGX_HTTP_LLM_ON_ERROR_ALLOW     2

/* reply types, as hiredis numbers them */
#define NGX_HTTP_LLM_REDIS_STRING       1
#define NGX_HTTP_LLM_REDIS_ARRAY        2
#define NGX_HTTP_LLM_REDIS_INTEGER      3
#define NGX_HTTP_LLM_REDIS_NIL          4
#define NGX_HTTP_LLM_REDIS_STATUS       5
#define NGX_HTTP_LLM_REDIS_ERROR        6

/* the longest a key read from Redis is believed: SPEC 5, revocation */
#define NGX_HTTP_LLM_KEY_CACHE_MAX      5000

/* elements of an array reply that are passed on (one level) */
#define NGX_HTTP_LLM_REDIS_ELTS_MAX     256

/* admissions of one account coalesced into one script call */
#define NGX_HTTP_LLM_REDIS_BATCH        32
#define NGX_HTTP_LLM_REDIS_BATCH_MAX    64


typedef struct {
    ngx_str_t                   name;       /* as written: for logs */
    ngx_str_t                   host;       /* an address, resolved */
    ngx_int_t                   port;
    ngx_str_t                   unix_path;  /* NUL-terminated */
    ngx_str_t                   password;   /* empty: no AUTH */
    ngx_int_t                   db;         /* -1: no SELECT */
    ngx_str_t                   prefix;
    ngx_msec_t                  timeout;
    ngx_uint_t                  connections;
    ngx_uint_t                  on_error;
    ngx_msec_t                  key_cache;  /* keys read from Redis */
    ngx_uint_t                  batch;      /* admissions per script */
} ngx_http_llm_redis_conf_t;


typedef struct ngx_http_llm_redis_reply_s  ngx_http_llm_redis_reply_t;

struct ngx_http_llm_redis_reply_s {
    ngx_uint_t                  type;
    int64_t                     integer;
    ngx_str_t                   str;        /* valid during the handler */
    ngx_uint_t                  nelts;
    ngx_http_llm_redis_reply_t *elts;
};


typedef struct ngx_http_llm_redis_op_s  ngx_http_llm_redis_op_t;

/*
 * Called exactly once per command: with the reply (which may be an
 * error reply), or with reply == NULL when the command failed (no
 * connection, timed out, connection lost); op->error says why.
 */
typedef void (*ngx_http_llm_redis_handler_pt)(ngx_http_llm_redis_op_t *op,
    ngx_http_llm_redis_reply_t *reply);

/*
 * The caller's deadline has come before the command's own timeout: the
 * command stays on its way (the handler still runs once, later), the
 * caller stops waiting for it.  It must not free "op"; it may set
 * op->deadline again (a batch: its next request's).
 */
typedef void (*ngx_http_llm_redis_expire_pt)(ngx_http_llm_redis_op_t *op);

struct ngx_http_llm_redis_op_s {
    ngx_http_llm_redis_handler_pt  handler;
    void                          *data;
    const char                    *error;

    /*
     * Commands with the same nonzero affinity go on the same
     * connection while it is up, so Redis runs them in the order they
     * were sent (a settle before the same account's next admission).
     */
    ngx_uint_t                     affinity;

    /*
     * A request's deadline (ngx_current_msec; 0: none), when it comes
     * before llm_redis timeout: "expire" runs then, and the connection
     * stays up.  The timeout alone says that Redis has stalled.
     */
    ngx_msec_t                     deadline;
    ngx_http_llm_redis_expire_pt   expire;

    /*
     * With reply == NULL: set when the command never left this worker
     * (no byte of it was written), so Redis has not run it; clear when
     * it may have (written before a timeout or a connection loss).
     */
    unsigned                       unsent:1;

    /* private to ngx_http_llm_redis.c */
    char                          *held;      /* formatted, not queued */
    size_t                         held_len;
    ngx_event_t                    timer;
    ngx_msec_t                     sent;
    void                          *conn;
    uint64_t                       seq;
    ngx_queue_t                    queue;     /* on its connection */
};


/* a Lua script: sent as EVALSHA, and once as EVAL after NOSCRIPT */
typedef struct {
    char                          *body;
    size_t                         len;
    u_char                         sha[40];
} ngx_http_llm_redis_script_t;


/*
 * A command built in one ngx_alloc() that outlives its request: the
 * first member of a caller's op, followed by what the caller asked room
 * for, then argv, argvlen and the strings.
 */

typedef struct ngx_http_llm_redis_cmd_s  ngx_http_llm_redis_cmd_t;

struct ngx_http_llm_redis_cmd_s {
    ngx_http_llm_redis_op_t        op;        /* first */
    ngx_http_llm_redis_script_t   *script;

    /* called before the command is sent again as EVAL (NOSCRIPT) */
    void                         (*again)(ngx_http_llm_redis_cmd_t *cmd);

    const char                   **argv;
    size_t                        *argvlen;
    int                            argc;
    u_char                        *last;      /* of the strings */
    unsigned                       retried:1;
};


char *ngx_http_llm_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
/* "local", "deny", "allow": by NGX_HTTP_LLM_ON_ERROR_* */
extern const char  *ngx_http_llm_on_error_names[];

/* Redis's clock less this worker's, in ms (a guess of 0 until known) */
extern int64_t     ngx_http_llm_redis_skew;
extern ngx_uint_t  ngx_http_llm_redis_skew_known;
extern void      (*ngx_http_llm_redis_clock_known)(void);
extern ngx_msec_t  ngx_http_llm_redis_skew_slack;

void ngx_http_llm_redis_clock_seen(int64_t ms);


ngx_int_t ngx_http_llm_redis_init_process(ngx_cycle_t *cycle);
void ngx_http_llm_redis_exit_process(ngx_cycle_t *cycle);

ngx_int_t ngx_http_llm_redis_send(ngx_http_llm_redis_op_t *op, int argc,
    const char **argv, const size_t *argvlen);
ngx_msec_t ngx_http_llm_redis_closes(ngx_http_llm_redis_op_t *op);
void *ngx_http_llm_redis_cmd(size_t size, ngx_http_llm_redis_script_t *script,
    int argc, size_t strings, ngx_str_t *affinity);
void ngx_http_llm_redis_cmd_arg(ngx_http_llm_redis_cmd_t *cmd, u_char *data,
    size_t len);
void ngx_http_llm_redis_cmd_num(ngx_http_llm_redis_cmd_t *cmd, int64_t n);
ngx_int_t ngx_http_llm_redis_cmd_send(ngx_http_llm_redis_cmd_t *cmd);
ngx_int_t ngx_http_llm_redis_cmd_noscript(ngx_http_llm_redis_cmd_t *cmd,
    ngx_http_llm_redis_reply_t *reply);
ngx_uint_t ngx_http_llm_redis_up(void);
ngx_uint_t ngx_http_llm_redis_coming_up(void);
ngx_uint_t ngx_http_llm_redis_clock_coming(void);
ngx_msec_t ngx_http_llm_redis_left(ngx_msec_t waited);
void ngx_http_llm_redis_fail(const char *why);
void ngx_http_llm_redis_sha1(u_char *hex, u_char *data, size_t len);
ngx_int_t ngx_http_llm_redis_preload(ngx_http_llm_redis_script_t *script);
ngx_http_llm_redis_conf_t *ngx_http_llm_redis_conf(void);


#endif /* _NGX_HTTP_LLM_REDIS_H_INCLUDED_ */
