
/*
 * ngx_llm_gateway: the Lua scripts of the Redis store.
 */


#ifndef _NGX_HTTP_LLM_RSTORE_LUA_H_INCLUDED_
#define _NGX_HTTP_LLM_RSTORE_LUA_H_INCLUDED_


#include "ngx_http_llm_redis.h"


/* indexes in ngx_http_llm_rstore_scripts[] */
#define NGX_HTTP_LLM_SCRIPT_ADMIT   0
#define NGX_HTTP_LLM_SCRIPT_SETTLE  1
#define NGX_HTTP_LLM_SCRIPT_RENEW   2
#define NGX_HTTP_LLM_SCRIPT_REPLAY  3
#define NGX_HTTP_LLM_SCRIPT_USAGE   4
#define NGX_HTTP_LLM_SCRIPT_BATCH   5
#define NGX_HTTP_LLM_SCRIPT_SETTLES 6
#define NGX_HTTP_LLM_SCRIPTS        7


extern ngx_http_llm_redis_script_t  ngx_http_llm_rstore_scripts[];


#endif /* _NGX_HTTP_LLM_RSTORE_LUA_H_INCLUDED_ */
