
/*
 * ngx_llm_gateway: the module's wiring.
 *
 * Directives, configuration create/merge, variables and
 * postconfiguration; the work itself lives in the other src/ files.
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_crypto.h"
#include "ngx_http_llm_keys.h"
#include "ngx_http_llm_limits.h"
#include "ngx_http_llm_store.h"
#include "ngx_http_llm_reply.h"
#include "ngx_http_llm_tally.h"
#include "ngx_http_llm_handlers.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_rstore.h"
#include "ngx_http_llm_replay.h"
#include "ngx_http_llm_tokens.h"
#include "ngx_http_llm_bpe.h"
#include "ngx_http_llm_simd.h"


typedef struct {
    ngx_str_t                   name;
    ngx_str_t                   file;
    ngx_uint_t                  line;
} ngx_http_llm_tier_ref_t;


typedef struct {
    ngx_http_llm_loc_conf_t     conf;
    ngx_http_llm_tier_ref_t     default_ref;
    ngx_http_llm_tier_ref_t     anonymous_ref;
} ngx_http_llm_loc_conf_full_t;


static ngx_int_t ngx_http_llm_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_llm_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_llm_init_process(ngx_cycle_t *cycle);
static void ngx_http_llm_exit_process(ngx_cycle_t *cycle);
static void *ngx_http_llm_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_llm_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_llm_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_llm_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_llm_gateway_post(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_llm_tier_ref(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_llm_resolve_tier(ngx_conf_t *cf,
    ngx_http_llm_tier_ref_t *ref, ngx_http_llm_tier_t **tier);
static ngx_int_t ngx_http_llm_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static void ngx_http_llm_variables_used(ngx_conf_t *cf,
    ngx_http_llm_main_conf_t *lmcf);
static char *ngx_http_llm_tokenizer(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_llm_phase_first(ngx_http_core_main_conf_t *cmcf,
    ngx_uint_t phase, ngx_http_handler_pt handler);


static ngx_conf_post_t  ngx_http_llm_gateway_post_t = {
    ngx_http_llm_gateway_post
};


static ngx_conf_enum_t  ngx_http_llm_apis[] = {
    { ngx_string("auto"), NGX_HTTP_LLM_API_AUTO },
    { ngx_string("openai"), NGX_HTTP_LLM_API_OPENAI },
    { ngx_string("anthropic"), NGX_HTTP_LLM_API_ANTHROPIC },
    { ngx_string("gemini"), NGX_HTTP_LLM_API_GEMINI },
    { ngx_null_string, 0 }
};


static ngx_conf_num_bounds_t  ngx_http_llm_max_tokens_bounds = {
    ngx_conf_check_num_bounds, 1, 2147483647
};


static ngx_command_t  ngx_http_llm_commands[] = {

    { ngx_string("llm_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_tier"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_llm_tier,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_key_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_key_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_llm_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_tokenizer"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_llm_tokenizer,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_gateway"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, enable),
      &ngx_http_llm_gateway_post_t },

    { ngx_string("llm_default_tier"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_tier_ref,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_full_t, default_ref),
      NULL },

    { ngx_string("llm_anonymous_tier"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_tier_ref,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_full_t, anonymous_ref),
      NULL },

    { ngx_string("llm_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, headers),
      NULL },

    { ngx_string("llm_api"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, api),
      &ngx_http_llm_apis },

    { ngx_string("llm_price"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_llm_price,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_max_tokens_default"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, max_tokens_default),
      &ngx_http_llm_max_tokens_bounds },

    { ngx_string("llm_stream_usage"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, stream_usage),
      NULL },

    { ngx_string("llm_token_info"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_llm_token_info,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_usage"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_llm_usage,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_llm_module_ctx = {
    ngx_http_llm_add_variables,            /* preconfiguration */
    ngx_http_llm_postconfiguration,        /* postconfiguration */

    ngx_http_llm_create_main_conf,         /* create main configuration */
    ngx_http_llm_init_main_conf,           /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_llm_create_loc_conf,          /* create location configuration */
    ngx_http_llm_merge_loc_conf            /* merge location configuration */
};


ngx_module_t  ngx_http_llm_gateway_module = {
    NGX_MODULE_V1,
    &ngx_http_llm_module_ctx,              /* module context */
    ngx_http_llm_commands,                 /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_llm_init_process,             /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_llm_exit_process,             /* exit process */
    ngx_http_llm_replay_exit_master,       /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_llm_init_process(ngx_cycle_t *cycle)
{
    if (ngx_http_llm_redis_init_process(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_llm_replay_init_process(cycle);
}


/* the Redis connections close first: no replay batch is on its way */

static void
ngx_http_llm_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_llm_redis_exit_process(cycle);
    ngx_http_llm_replay_exit_process(cycle);
}


#define NGX_HTTP_LLM_VAR_ACCOUNT   0
#define NGX_HTTP_LLM_VAR_KEY_ID    1
#define NGX_HTTP_LLM_VAR_TIER      2
#define NGX_HTTP_LLM_VAR_RESULT    3


static ngx_http_variable_t  ngx_http_llm_vars[] = {

    { ngx_string("llm_account"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_ACCOUNT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_key_id"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_KEY_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_tier"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_TIER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_limit_result"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_RESULT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_model"), NULL, ngx_http_llm_tally_variable,
      NGX_HTTP_LLM_VAR_MODEL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_stream"), NULL, ngx_http_llm_tally_variable,
      NGX_HTTP_LLM_VAR_STREAM, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_prompt_tokens"), NULL, ngx_http_llm_tally_variable,
      NGX_HTTP_LLM_VAR_PROMPT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_completion_tokens"), NULL, ngx_http_llm_tally_variable,
      NGX_HTTP_LLM_VAR_COMPLETION, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_total_tokens"), NULL, ngx_http_llm_tally_variable,
      NGX_HTTP_LLM_VAR_TOTAL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_tokens_estimated"), NULL, ngx_http_llm_tally_variable,
      NGX_HTTP_LLM_VAR_ESTIMATED, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_cost"), NULL, ngx_http_llm_tally_variable,
      NGX_HTTP_LLM_VAR_COST, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_cache_key"), NULL, ngx_http_llm_tally_variable,
      NGX_HTTP_LLM_VAR_CACHE_KEY, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_llm_results[] = {
    ngx_null_string,
    ngx_string("passed"),
    ngx_string("limited"),
    ngx_string("rejected"),
    ngx_string("unauthorized"),
    ngx_string("store_error"),
};


uint64_t
ngx_http_llm_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}


static ngx_int_t
ngx_http_llm_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_llm_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_str_t           *s, id;
    ngx_http_llm_ctx_t  *ctx;

    ctx = ngx_http_llm_find_ctx(r->main);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case NGX_HTTP_LLM_VAR_ACCOUNT:
        s = &ctx->account;
        break;

    case NGX_HTTP_LLM_VAR_KEY_ID:
        id.data = ctx->key_id;
        id.len = ctx->has_key_id ? NGX_HTTP_LLM_KEY_ID_LEN : 0;
        s = &id;
        break;

    case NGX_HTTP_LLM_VAR_TIER:
        s = ctx->tier ? &ctx->tier->name : NULL;
        break;

    default: /* NGX_HTTP_LLM_VAR_RESULT */
        s = &ngx_http_llm_results[ctx->result];
        break;
    }

    if (s == NULL || s->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = s->len;
    v->data = s->data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static void *
ngx_http_llm_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_main_conf_t));
    if (lmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     lmcf->shm_zone = NULL;
     *     lmcf->key_file = { 0, NULL };
     *     lmcf->gateways = 0;
     *     lmcf->pools = 0;
     *     lmcf->redis = NULL;
     *     lmcf->bpe = NULL;
     */

    if (ngx_array_init(&lmcf->tiers, cf->pool, 4,
                       sizeof(ngx_http_llm_tier_t))
        != NGX_OK
        || ngx_array_init(&lmcf->keys, cf->pool, 16,
                          sizeof(ngx_http_llm_key_t))
           != NGX_OK
        || ngx_array_init(&lmcf->prices, cf->pool, 4,
                          sizeof(ngx_http_llm_price_t))
           != NGX_OK)
    {
        return NULL;
    }

    return lmcf;
}


static char *
ngx_http_llm_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    if (ngx_http_llm_keys_init(cf, lmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * llm_tokenizer PATH [pattern=cl100k|o200k]: a vocabulary in tiktoken's
 * format, read here, in the master, and shared by the workers
 * (ngx_http_llm_bpe.c).
 */

static char *
ngx_http_llm_tokenizer(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    ngx_str_t   *value, name, error;
    ngx_uint_t   pattern;

    if (lmcf->bpe) {
        return "is duplicate";
    }

    value = cf->args->elts;
    name = value[1];
    pattern = NGX_HTTP_LLM_BPE_CL100K;

    if (cf->args->nelts == 3) {
        if (ngx_strcmp(value[2].data, "pattern=cl100k") == 0) {
            pattern = NGX_HTTP_LLM_BPE_CL100K;

        } else if (ngx_strcmp(value[2].data, "pattern=o200k") == 0) {
            pattern = NGX_HTTP_LLM_BPE_O200K;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    lmcf->bpe = ngx_http_llm_bpe_load(cf->pool, name.data, pattern,
                                      &error);

    if (lmcf->bpe == NULL) {
        if (error.len) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "vocabulary \"%V\": %V", &name, &error);
        }

        return NGX_CONF_ERROR;
    }

    ngx_log_error(NGX_LOG_INFO, cf->log, 0,
                  "llm_tokenizer: %ui tokens from \"%V\"",
                  ngx_http_llm_bpe_tokens(lmcf->bpe), &name);

    return NGX_CONF_OK;
}


static void *
ngx_http_llm_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_llm_loc_conf_full_t  *full;

    full = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_loc_conf_full_t));
    if (full == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf.default_tier = NULL;
     *     conf.anonymous_tier = NULL;
     *     conf.handler = 0;
     *     default_ref = { null name, ... };
     *     anonymous_ref = { null name, ... };
     */

    full->conf.enable = NGX_CONF_UNSET;
    full->conf.headers = NGX_CONF_UNSET;
    full->conf.api = NGX_CONF_UNSET_UINT;
    full->conf.stream_usage = NGX_CONF_UNSET;
    full->conf.max_tokens_default = NGX_CONF_UNSET_UINT;

    return full;
}


static char *
ngx_http_llm_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_llm_loc_conf_full_t  *prev = parent;
    ngx_http_llm_loc_conf_full_t  *conf = child;

    /* llm_usage and llm_token_info are gateways only when told so */

    if (conf->conf.handler && conf->conf.enable == NGX_CONF_UNSET) {
        conf->conf.enable = 0;
    }

    ngx_conf_merge_value(conf->conf.enable, prev->conf.enable, 0);
    ngx_conf_merge_value(conf->conf.headers, prev->conf.headers, 1);
    ngx_conf_merge_uint_value(conf->conf.api, prev->conf.api,
                              NGX_HTTP_LLM_API_AUTO);
    ngx_conf_merge_value(conf->conf.stream_usage, prev->conf.stream_usage, 0);
    ngx_conf_merge_uint_value(conf->conf.max_tokens_default,
                              prev->conf.max_tokens_default, 1024);

    if (conf->default_ref.name.data == NULL) {
        conf->default_ref = prev->default_ref;
    }

    if (conf->anonymous_ref.name.data == NULL) {
        conf->anonymous_ref = prev->anonymous_ref;
    }

    if (ngx_http_llm_resolve_tier(cf, &conf->default_ref,
                                  &conf->conf.default_tier)
        != NGX_CONF_OK
        || ngx_http_llm_resolve_tier(cf, &conf->anonymous_ref,
                                     &conf->conf.anonymous_tier)
           != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * Where the first location that needs llm_zone is, for the message
 * when there is none (read at postconfiguration, after every block)
 */

void
ngx_http_llm_needs_zone(ngx_conf_t *cf, ngx_http_llm_main_conf_t *lmcf,
    char *directive)
{
    if (lmcf->gateways == 0 && lmcf->handlers == 0) {
        lmcf->first = directive;
        lmcf->first_file = cf->conf_file->file.name;
        lmcf->first_line = cf->conf_file->line;
    }
}


/* llm_gateway on: remember that the module's handlers are needed */

static char *
ngx_http_llm_gateway_post(ngx_conf_t *cf, void *post, void *data)
{
    ngx_flag_t *fp = data;

    ngx_http_llm_main_conf_t  *lmcf;

    if (*fp) {
        lmcf = ngx_http_conf_get_module_main_conf(cf,
                                                ngx_http_llm_gateway_module);
        ngx_http_llm_needs_zone(cf, lmcf, "llm_gateway");
        lmcf->gateways++;
    }

    return NGX_CONF_OK;
}


/* llm_default_tier NAME; llm_anonymous_tier NAME; */

static char *
ngx_http_llm_tier_ref(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_tier_ref_t  *ref;
    ngx_str_t                *value;

    ref = (ngx_http_llm_tier_ref_t *) ((u_char *) conf + cmd->offset);

    if (ref->name.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* tiers may be declared later in the http block: resolved at merge */

    ref->name = value[1];
    ref->file = cf->conf_file->file.name;
    ref->line = cf->conf_file->line;

    return NGX_CONF_OK;
}


static char *
ngx_http_llm_resolve_tier(ngx_conf_t *cf, ngx_http_llm_tier_ref_t *ref,
    ngx_http_llm_tier_t **tier)
{
    ngx_http_llm_main_conf_t  *lmcf;

    if (ref->name.data == NULL || *tier != NULL) {
        return NGX_CONF_OK;
    }

    lmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_llm_gateway_module);

    *tier = ngx_http_llm_tier_find(lmcf, &ref->name);

    if (*tier == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "unknown llm_tier \"%V\" in %V:%ui",
                      &ref->name, &ref->file, ref->line);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_llm_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;
    ngx_http_llm_main_conf_t   *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_llm_gateway_module);

    if (lmcf->gateways == 0 && lmcf->handlers == 0) {
        return NGX_OK;
    }

    if (lmcf->shm_zone == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"%s\" in %V:%ui requires \"llm_zone\" in the "
                      "http block",
                      lmcf->first, &lmcf->first_file, lmcf->first_line);
        return NGX_ERROR;
    }

    if (ngx_http_llm_crypto_init(cf->log) != NGX_OK) {
        return NGX_ERROR;
    }

    /*
     * the estimator's character table and the vector instructions the
     * text scanners use, once, before the workers fork
     */
    ngx_http_llm_estimate_prepare();
    ngx_http_llm_simd_init();

    /*
     * llm_usage alone: its refusals get the headers (x-should-retry,
     * Retry-After) from the reply filters too
     */

    if (lmcf->gateways == 0) {
        return ngx_http_llm_reply_init(cf);
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    ngx_http_llm_variables_used(cf, lmcf);

    /*
     * Handlers of a phase run in the reverse order of registration: the
     * first slot runs last, after allow/deny, auth_basic and
     * auth_request, so a request they refuse is not counted.  The log
     * phase runs its handlers in order: there the first slot runs
     * first, so the access log sees what was settled.
     */

    if (ngx_http_llm_phase_first(cmcf, NGX_HTTP_ACCESS_PHASE,
                                 ngx_http_llm_access_handler)
        != NGX_OK
        || ngx_http_llm_phase_first(cmcf, NGX_HTTP_LOG_PHASE,
                                    ngx_http_llm_log_handler)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the Redis store's scripts, in Redis before any is run */

    if (lmcf->redis && ngx_http_llm_rstore_preload() != NGX_OK) {
        return NGX_ERROR;
    }

    /* "satisfy any": the last slot, which runs first */

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_llm_access_any_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_POST_READ_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_llm_post_read_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_llm_subrequest_handler;

    return ngx_http_llm_reply_init(cf);
}


static ngx_int_t
ngx_http_llm_phase_first(ngx_http_core_main_conf_t *cmcf, ngx_uint_t phase,
    ngx_http_handler_pt handler)
{
    ngx_array_t          *handlers;
    ngx_http_handler_pt  *h;

    handlers = &cmcf->phases[phase].handlers;

    h = ngx_array_push(handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h = handlers->elts;
    ngx_memmove(&h[1], &h[0], (handlers->nelts - 1) * sizeof(*h));
    h[0] = handler;

    return NGX_OK;
}


/*
 * The request body is read before the call, and the answer watched for
 * usage, when the configuration uses what only they tell: the variables
 * are indexed by now (every use in the configuration has been parsed).
 */

static void
ngx_http_llm_variables_used(ngx_conf_t *cf, ngx_http_llm_main_conf_t *lmcf)
{
    ngx_str_t                  *n;
    ngx_uint_t                  i;
    ngx_http_variable_t        *v;
    ngx_http_core_main_conf_t  *cmcf;

    /* what only the body tells; what only the answer tells */

    static ngx_str_t  body[] = {
        ngx_string("llm_model"),
        ngx_string("llm_stream"),
        ngx_string("llm_cache_key"),
        ngx_null_string
    };

    static ngx_str_t  usage[] = {
        ngx_string("llm_prompt_tokens"),
        ngx_string("llm_completion_tokens"),
        ngx_string("llm_total_tokens"),
        ngx_string("llm_tokens_estimated"),
        ngx_string("llm_cost"),
        ngx_null_string
    };

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    v = cmcf->variables.elts;

    for (i = 0; i < cmcf->variables.nelts; i++) {

        if (v[i].name.len < 4
            || ngx_strncmp(v[i].name.data, "llm_", 4) != 0)
        {
            continue;
        }

        for (n = body; n->len; n++) {
            if (v[i].name.len == n->len
                && ngx_strncmp(v[i].name.data, n->data, n->len) == 0)
            {
                lmcf->want_body = 1;
                lmcf->want_usage = 1;
            }
        }

        for (n = usage; n->len; n++) {
            if (v[i].name.len == n->len
                && ngx_strncmp(v[i].name.data, n->data, n->len) == 0)
            {
                lmcf->want_usage = 1;
            }
        }

        if (v[i].name.len == sizeof("llm_cache_key") - 1
            && ngx_strncmp(v[i].name.data, "llm_cache_key", v[i].name.len)
               == 0)
        {
            lmcf->cache_key = 1;
        }
    }
}
