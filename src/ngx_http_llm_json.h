
/*
 * ngx_llm_gateway: what the gateway reads in requests and responses.
 */


#ifndef _NGX_HTTP_LLM_JSON_H_INCLUDED_
#define _NGX_HTTP_LLM_JSON_H_INCLUDED_


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_tokens.h"
#include "ngx_http_llm_jtape.h"


/* request bodies nested deeper than this are refused before parsing */
#define NGX_HTTP_LLM_JSON_DEPTH         64

/* the largest max-tokens value accepted: 2^31 - 1 */
#define NGX_HTTP_LLM_MAX_TOKENS_MAX     2147483647

/* the longest model name kept */
#define NGX_HTTP_LLM_MODEL_MAX          256

/* a usage object in a response larger than this is not read */
#define NGX_HTTP_LLM_USAGE_CAP          65536


typedef struct {
    ngx_str_t                   model;      /* in the pool; empty: absent */
    int64_t                     max_tokens; /* -1: absent */
    ngx_uint_t                  messages;   /* chat messages, system too */
    ngx_uint_t                  choices;    /* "n", "candidateCount"; 1 */
    ngx_http_llm_estimate_t     estimate;   /* every prompt string */

    unsigned                    stream:1;
    unsigned                    has_include_usage:1;
    unsigned                    has_stream_options:1;
    unsigned                    has_members:1;  /* the object is not {} */
    unsigned                    input_text:1;   /* OpenAI "input" is a
                                                   string */
    unsigned                    no_prompt:1;  /* refused: it has no prompt
                                                 member at all */
    unsigned                    no_max:1;   /* refused: Anthropic messages
                                               without max_tokens */
} ngx_http_llm_request_info_t;


/*
 * The response observer: fed every byte of the response body as it
 * passes (sse: the body is text/event-stream), it keeps no more than one
 * usage object (at most NGX_HTTP_LLM_USAGE_CAP bytes) and this
 * structure, whatever the size of the body or of its lines.  "found"
 * and the token counts are set as soon as a usage object closes;
 * "generated" holds the last few hundred bytes of text back until
 * ngx_http_llm_usage_finish(), which is also to be called when the
 * response is cut short.  ngx_http_llm_usage_feed() returns NGX_ERROR
 * only if the pool fails, and then observes nothing more.
 * ngx_http_llm_usage_feed_whole() is for a first buffer that holds the
 * whole body: a JSON body is then read as one tape, which is cheaper
 * than the lexer and finds the same usage and model; "generated" is
 * not counted when it found a usage (it stands in for none).
 */

typedef struct {
    /* results */
    ngx_uint_t                  prompt_tokens;
    ngx_uint_t                  completion_tokens;
    ngx_uint_t                  streamed_chars;  /* generated text, code
                                                    points */
    ngx_uint_t                  told_chars; /* streamed_chars when a usage
                                               last named the output's */
    ngx_uint_t                  input[4];   /* Anthropic's input_tokens,
                                               its cache's, and what the
                                               cache keeps for an hour, as
                                               last told */
    ngx_uint_t                  cache_read;   /* of prompt_tokens: read */
    ngx_uint_t                  cache_write;  /* and written by the
                                                 provider's prompt cache */
    ngx_uint_t                  cache_write_1h;  /* of cache_write: for an
                                                    hour */
    ngx_http_llm_estimate_t     generated;  /* the same text, estimated */
    ngx_str_t                   model;      /* as the response names it */

    /* state */
    ngx_pool_t                 *pool;
    ngx_uint_t                  api;
    ngx_http_llm_jtape_t        tape;       /* to read the usage object */
    u_char                     *capture;    /* the usage object read */
    size_t                      captured;
    size_t                      capture_size;
    ngx_uint_t                  depth;      /* of the usage object */
    ngx_uint_t                  objects;    /* usage objects that named
                                               the output's count */
    ngx_uint_t                  nest;       /* of the document read */
    ngx_uint_t                  call;       /* nest of a tool call's
                                               arguments object, or 0 */
    u_char                     *model_buf;
    u_char                      key[24];    /* the last string, maybe
                                               a key */
    ngx_uint_t                  key_len;
    ngx_uint_t                  key_kind;   /* the last string's, if a key */
    ngx_uint_t                  kind;       /* what the last key announces */
    ngx_uint_t                  role;       /* of the current string */
    ngx_uint_t                  hex;        /* \uXXXX digits left */
    uint32_t                    code;       /* \uXXXX so far */
    uint32_t                    high;       /* a first half, waiting */
    size_t                      text_len;
    ngx_uint_t                  line;       /* SSE: where in the line */
    ngx_uint_t                  field;      /* SSE: "data" matched */
    u_char                      name[48];   /* SSE: the event's name */
    size_t                      name_len;

    unsigned                    found:1;    /* usage seen */
    unsigned                    told_in:1;  /* it named the prompt's */
    unsigned                    told_out:1; /* it named the output's */
    unsigned                    told_input:1;  /* input_tokens named */
    unsigned                    sse:1;
    unsigned                    in_string:1;
    unsigned                    escape:1;
    unsigned                    maybe_key:1;
    unsigned                    value:1;    /* after a key's ':' */
    unsigned                    capturing:1;
    unsigned                    cr:1;       /* SSE: last byte was CR */
    unsigned                    event:1;    /* SSE: event has data */
    unsigned                    name_space:1;  /* SSE: its ' ' dropped */
    unsigned                    repeats:1;  /* SSE: the event repeats
                                               text (not counted) */
    unsigned                    responses:1;  /* SSE: the Responses
                                                 API's: only "delta"
                                                 strings are new text */
    unsigned                    finished:1;
    unsigned                    fed:1;      /* bytes went to the lexer */
    unsigned                    whole:1;    /* its last byte came: a usage
                                               told holds for it all */
    unsigned                    array:1;    /* the document is a JSON
                                               array: a Gemini stream
                                               without alt=sse */
    unsigned                    bom:2;      /* SSE: a BOM's bytes taken */
    unsigned                    begun:1;    /* SSE: past a leading BOM */

    /* last: ngx_http_llm_usage_init() does not clear it */
    u_char                      text[512];  /* generated text, unescaped,
                                               before it is estimated */
} ngx_http_llm_usage_t;


/*
 * ngx_http_llm_json_parse_request() returns NGX_OK, NGX_DECLINED with
 * "error" set to a message for a 400 invalid_request_error (static or
 * in the pool), or NGX_ERROR.  "api" is NGX_HTTP_LLM_API_OPENAI (also
 * completions, embeddings, responses), _ANTHROPIC or _GEMINI (the caller
 * sets "stream" from the URI), or _AUTO: the first of the three the body
 * fits (the error is the last one's).  With "canonical" (else NULL), it also
 * gives the request's JSON with sorted keys and no spacing, in the pool
 * ($llm_cache_key; jansson, so only when asked for).
 * ngx_http_llm_json_include_usage(), for a body that parse_request()
 * accepted (with its "info", which spares a second read, or NULL),
 * returns NGX_OK and the new body in the pool, NGX_DECLINED if the body
 * is not a JSON object, or NGX_ERROR.  parse_request_bpe() is
 * parse_request() that counts the prompt's text exactly with "bpe" (an
 * "llm_tokenizer" vocabulary) when it is not NULL.
 */

ngx_int_t ngx_http_llm_json_parse_request(ngx_pool_t *pool, ngx_uint_t api,
    u_char *body, size_t len, ngx_http_llm_request_info_t *info,
    ngx_str_t *canonical, ngx_str_t *error);
ngx_int_t ngx_http_llm_json_parse_request_bpe(ngx_pool_t *pool,
    ngx_uint_t api, u_char *body, size_t len,
    ngx_http_llm_request_info_t *info, ngx_str_t *canonical,
    ngx_str_t *error, ngx_http_llm_bpe_t *bpe);
ngx_int_t ngx_http_llm_json_include_usage(ngx_pool_t *pool, u_char *body,
    size_t len, ngx_http_llm_request_info_t *info, ngx_str_t *out);

void ngx_http_llm_usage_init(ngx_http_llm_usage_t *u, ngx_pool_t *pool,
    ngx_uint_t api, ngx_uint_t sse);
ngx_int_t ngx_http_llm_usage_feed(ngx_http_llm_usage_t *u, u_char *p,
    size_t len);
ngx_int_t ngx_http_llm_usage_feed_whole(ngx_http_llm_usage_t *u, u_char *p,
    size_t len);
void ngx_http_llm_usage_finish(ngx_http_llm_usage_t *u);
ngx_uint_t ngx_http_llm_usage_final(ngx_http_llm_usage_t *u);


#endif /* _NGX_HTTP_LLM_JSON_H_INCLUDED_ */
