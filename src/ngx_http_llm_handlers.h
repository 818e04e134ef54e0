
/*
 * ngx_llm_gateway: the content handlers "llm_token_info" and
 * "llm_usage".
 */


#ifndef _NGX_HTTP_LLM_HANDLERS_H_INCLUDED_
#define _NGX_HTTP_LLM_HANDLERS_H_INCLUDED_


#include "ngx_http_llm_module.h"


char *ngx_http_llm_token_info(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_llm_usage(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);


#endif /* _NGX_HTTP_LLM_HANDLERS_H_INCLUDED_ */
