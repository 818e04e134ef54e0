
/*
 * ngx_llm_gateway: usage counted locally during a Redis outage, replayed.
 */


#ifndef _NGX_HTTP_LLM_REPLAY_H_INCLUDED_
#define _NGX_HTTP_LLM_REPLAY_H_INCLUDED_


#include "ngx_http_llm_module.h"


ngx_int_t ngx_http_llm_replay_add(ngx_str_t *account,
    ngx_http_llm_tier_t *tier, uint64_t at, int64_t *amount);
void ngx_http_llm_replay_done(void *batch, ngx_uint_t ok);
ngx_int_t ngx_http_llm_replay_init_process(ngx_cycle_t *cycle);
void ngx_http_llm_replay_exit_process(ngx_cycle_t *cycle);
void ngx_http_llm_replay_exit_master(ngx_cycle_t *cycle);


#endif /* _NGX_HTTP_LLM_REPLAY_H_INCLUDED_ */
