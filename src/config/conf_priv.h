/*
 * config module internals: the pieces between the YAML text and a finished
 * wn_conf_t. bridge.c (libyaml events -> structure checks -> rewritten YAML),
 * schema.c (libcyaml schema and typed load), addr.c (listen and server text),
 * validate.c (defaults and rules). Control or main thread; no shared state.
 */
#ifndef WALNUT_CONFIG_CONF_PRIV_H
#define WALNUT_CONFIG_CONF_PRIV_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cyaml/cyaml.h>

#include "walnut/config.h"

/* Longest value quoted back in an error message. */
#define WN_CONF_QUOTE_MAX 80
/* Largest configuration file read (a real one is a few KiB). */
#define WN_CONF_FILE_MAX (16u << 20)
/* Room for the keys of a pool (schema fields, the injected name excluded). */
#define WN_CONF_MAX_KEYS 32
/* sizeof(struct sockaddr_un.sun_path) on Linux; twemproxy's limit too. */
#define WN_CONF_UNIX_PATH_MAX 108

/*
 * Write "file:line: pool 'p': <fmt...>" into err. line <= 0 drops the line,
 * pool NULL drops the pool. err may be NULL or errlen 0 (nothing written).
 */
void wn_conf_errf(char *err, size_t errlen, const char *file, int line, const char *pool,
                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* ---- bridge.c: libyaml in, source map and rewritten YAML out ---------------- */

/* Where each key of one pool was written, and its scalar text. */
typedef struct wn_conf_src_pool {
    char *name;                       /* owned */
    int line;                         /* line of the pool's name */
    int key_line[WN_CONF_MAX_KEYS];   /* by schema key index; 0 when absent */
    char *key_text[WN_CONF_MAX_KEYS]; /* owned: scalar as written; NULL if absent */
    int *server_line;                 /* owned: line of each servers entry */
    uint32_t nserver_line;
} wn_conf_src_pool_t;

typedef struct wn_conf_src {
    wn_conf_src_pool_t *pools; /* owned; file order */
    uint32_t npools;
    unsigned char *yaml; /* owned: a sequence of pool mappings, each with `name:` */
    size_t yaml_len;
} wn_conf_src_t;

/*
 * Walk `text` with libyaml's event parser. Checks the shape twemproxy insists
 * on (one block mapping of pool name -> block mapping of key -> scalar or list
 * of scalars; no anchors, aliases, tags, flow style or document markers),
 * known keys, duplicate keys and pool names, and the lexical form of numbers.
 * Fills *src and returns 0, or a negative error with a message in err.
 */
int wn_conf_bridge(const char *text, size_t len, const char *file, wn_conf_src_t *src, char *err,
                   size_t errlen);
void wn_conf_src_deinit(wn_conf_src_t *src);

/* ---- schema.c: the libcyaml schema and the typed load ---------------------- */

/* One pool as libcyaml loads it. Pointer fields are NULL when the key is absent. */
typedef struct wn_conf_raw_pool {
    char *name;
    char *listen;
    int *hash; /* wn_hash_t */
    char *hash_tag;
    int *distribution; /* wn_dist_t */
    int *timeout;
    int *backlog;
    int *preconnect; /* booleans load as a strict {false, true} enum */
    int *redis;
    char *redis_auth;
    int *redis_db;
    int *server_connections;
    int *auto_eject_hosts;
    int *server_retry_timeout;
    int *server_failure_limit;
    int *client_connections;
    int *tcpkeepalive;
    int *reuseport;
    int *health_check_interval;
    double *max_ejected_fraction;
    int *client_buffer_limit;
    int *dns_refresh_interval;
    char **servers;
    unsigned servers_count;
} wn_conf_raw_pool_t;

/* Number of user keys (the schema's fields without the injected `name`). */
int wn_conf_schema_nkeys(void);
/* The field for user key `i` (0 <= i < nkeys). */
const cyaml_schema_field_t *wn_conf_schema_key(int i);
/* Index of user key `key` (len bytes), or -1. */
int wn_conf_schema_key_index(const char *key, size_t len);
/* An enum (or bool) field's value v takes exactly s[0..n), case and all. */
bool wn_conf_schema_enum_has(const cyaml_schema_value_t *v, const char *s, size_t n);
/* "a, b, c": the words an enum field takes, cut to outlen. */
void wn_conf_schema_enum_list(const cyaml_schema_value_t *v, char *out, size_t outlen);
/* The least an int field takes (its most is INT_MAX). */
unsigned wn_conf_schema_int_min(const cyaml_schema_field_t *f);

/*
 * Load src->yaml with libcyaml into *out (src->npools entries). libcyaml's
 * log is captured and turned into one message naming file, line, pool and
 * key. Returns 0 or a negative error.
 */
int wn_conf_schema_load(const wn_conf_src_t *src, const char *file, wn_conf_raw_pool_t **out,
                        char *err, size_t errlen);
void wn_conf_schema_free(wn_conf_raw_pool_t *raw, uint32_t npools);

/* ---- addr.c: listen and server strings ------------------------------------ */

/*
 * Parse a listen value: "host:port" (from the end, so "::1:22121" works) or
 * "/path/sock [octal-perm]". On error returns WN_ECONFIG and writes the
 * reason (no file/pool context) into why; *out untouched.
 */
int wn_conf_listen_parse(const char *text, wn_conf_addr_t *out, char *why, size_t whylen);

/*
 * Parse a servers entry: "host:port:weight [name]" or "/path:weight [name]",
 * and form twemproxy's server name. Fills *out (pname, name, label, addr, weight;
 * line is left to the caller) or returns WN_ECONFIG / WN_ENOMEM with a reason.
 */
int wn_conf_server_parse(const char *text, wn_conf_server_t *out, char *why, size_t whylen);

/* twemproxy's server order: shorter name first, then bytes. For qsort. */
int wn_conf_server_cmp(const void *a, const void *b);

void wn_conf_addr_deinit(wn_conf_addr_t *addr);
void wn_conf_server_deinit(wn_conf_server_t *server);

/* ---- validate.c: defaults and rules ----------------------------------------- */

/*
 * Turn the loaded pools into conf->pools: defaults, listen and servers
 * parsing, per-pool and cross-pool rules. On error conf keeps what was
 * built so far (free it with wn_conf_unref).
 */
int wn_conf_build(wn_conf_t *conf, const wn_conf_src_t *src, const wn_conf_raw_pool_t *raw,
                  const char *file, char *err, size_t errlen);
void wn_conf_pool_deinit(wn_conf_pool_t *pool);

#endif
