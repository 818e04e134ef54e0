/*
 * llm-keygen: client API keys for ngx_llm_gateway.
 *
 *   llm-keygen new            print a new key: "sk-llm-" + base64url (no
 *                             padding) of 32 random bytes, 50 characters
 *   llm-keygen digest KEY     print the lowercase hex BLAKE2b-256 (unkeyed)
 *                             of the whole key string, "sk-llm-" included;
 *                             KEY "-" reads the key from standard input
 *                             (one line), so it stays off the command line
 *
 * The digest is what llm_key_file lines and the module store (SPEC §5).
 * Built by "./ngx_module build" into build/llm-keygen.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>


#define LLM_KEY_PREFIX      "sk-llm-"
#define LLM_KEY_BYTES       32
#define LLM_DIGEST_BYTES    crypto_generichash_BYTES    /* 32 */
#define LLM_KEY_MAX         4096


static int llm_keygen_new(void);
static int llm_keygen_digest(const char *key, size_t len);
static int llm_keygen_usage(FILE *out);


int
main(int argc, char **argv)
{
    size_t  len;
    char    buf[LLM_KEY_MAX + 2];
    int     rc;

    if (sodium_init() < 0) {
        fprintf(stderr, "llm-keygen: libsodium initialisation failed\n");
        return 1;
    }

    if (argc == 2 && strcmp(argv[1], "new") == 0) {
        return llm_keygen_new();
    }

    if (argc == 3 && strcmp(argv[1], "digest") == 0) {

        if (strcmp(argv[2], "-") != 0) {
            return llm_keygen_digest(argv[2], strlen(argv[2]));
        }

        if (fgets(buf, sizeof(buf), stdin) == NULL) {
            fprintf(stderr, "llm-keygen: no key on standard input\n");
            return 1;
        }

        len = strlen(buf);

        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) {
            len--;
        }

        if (len > LLM_KEY_MAX) {
            fprintf(stderr, "llm-keygen: key too long\n");
            sodium_memzero(buf, sizeof(buf));
            return 1;
        }

        rc = llm_keygen_digest(buf, len);
        sodium_memzero(buf, sizeof(buf));

        return rc;
    }

    if (argc == 2
        && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0
            || strcmp(argv[1], "help") == 0))
    {
        return llm_keygen_usage(stdout);
    }

    llm_keygen_usage(stderr);

    return 2;
}


static int
llm_keygen_new(void)
{
    unsigned char  raw[LLM_KEY_BYTES];
    char           b64[sodium_base64_ENCODED_LEN(LLM_KEY_BYTES,
                       sodium_base64_VARIANT_URLSAFE_NO_PADDING)];

    randombytes_buf(raw, sizeof(raw));

    sodium_bin2base64(b64, sizeof(b64), raw, sizeof(raw),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);

    printf("%s%s\n", LLM_KEY_PREFIX, b64);

    sodium_memzero(raw, sizeof(raw));
    sodium_memzero(b64, sizeof(b64));

    if (fflush(stdout) != 0) {
        perror("llm-keygen: write");
        return 1;
    }

    return 0;
}


static int
llm_keygen_digest(const char *key, size_t len)
{
    unsigned char  out[LLM_DIGEST_BYTES];
    char           hex[LLM_DIGEST_BYTES * 2 + 1];

    if (len == 0) {
        fprintf(stderr, "llm-keygen: empty key\n");
        return 1;
    }

    if (crypto_generichash(out, sizeof(out), (const unsigned char *) key,
                           (unsigned long long) len, NULL, 0)
        != 0)
    {
        fprintf(stderr, "llm-keygen: BLAKE2b failed\n");
        return 1;
    }

    sodium_bin2hex(hex, sizeof(hex), out, sizeof(out));

    printf("%s\n", hex);

    if (fflush(stdout) != 0) {
        perror("llm-keygen: write");
        return 1;
    }

    return 0;
}


static int
llm_keygen_usage(FILE *out)
{
    fprintf(out,
            "usage: llm-keygen new\n"
            "       llm-keygen digest KEY|-\n"
            "\n"
            "  new         print a new client key (sk-llm-...)\n"
            "  digest KEY  print the BLAKE2b-256 hex digest of KEY, as used\n"
            "              in llm_key_file; \"-\" reads KEY from stdin\n");

    return out == stdout ? 0 : 2;
}
