
/*
 * ngx_llm_gateway: the shared memory zone ("llm_zone").
 */


#ifndef _NGX_HTTP_LLM_STORE_H_INCLUDED_
#define _NGX_HTTP_LLM_STORE_H_INCLUDED_


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_limits.h"


/* ngx_http_llm_store_admit() results besides NGX_OK and NGX_ERROR */
#define NGX_HTTP_LLM_REFUSED      NGX_DECLINED    /* a window is spent */
#define NGX_HTTP_LLM_CONC_FULL    NGX_BUSY        /* concurrency */
#define NGX_HTTP_LLM_COOLING      NGX_ABORT       /* in cooldown */


char *ngx_http_llm_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_slab_pool_t *ngx_http_llm_store_shpool(ngx_shm_zone_t *shm_zone,
void ***keys);
ngx_int_t ngx_http_llm_store_leave(ngx_shm_zone_t *shm_zone, void *data,
    size_t len);
void *ngx_http_llm_store_take(ngx_shm_zone_t *shm_zone, size_t *len);
ngx_uint_t ngx_http_llm_store_parcels(ngx_shm_zone_t *shm_zone);
ngx_int_t ngx_http_llm_store_skew(ngx_shm_zone_t *shm_zone, int64_t *skew);
void ngx_http_llm_store_set_skew(ngx_shm_zone_t *shm_zone, int64_t skew);

ngx_int_t ngx_http_llm_store_admit(ngx_shm_zone_t *shm_zone,
    ngx_str_t *account, ngx_http_llm_tier_t *tier,
    ngx_http_llm_decision_t *d);
void ngx_http_llm_store_seed(ngx_shm_zone_t *shm_zone, ngx_str_t *account,
    ngx_http_llm_tier_t *tier, ngx_http_llm_decision_t *d, uint64_t *sums);
void ngx_http_llm_store_release(ngx_shm_zone_t *shm_zone,
    ngx_str_t *account);
void ngx_http_llm_store_settle(ngx_shm_zone_t *shm_zone, ngx_str_t *account,
    ngx_http_llm_tier_t *tier, ngx_http_llm_settle_t *s);
void ngx_http_llm_store_usage(ngx_shm_zone_t *shm_zone, ngx_str_t *account,
    ngx_http_llm_tier_t *tier, ngx_http_llm_decision_t *d, uint64_t *used,
    uint64_t *reset);


#endif /* _NGX_HTTP_LLM_STORE_H_INCLUDED_ */
