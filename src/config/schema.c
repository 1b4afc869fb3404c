/*
 * config/schema.c: the libcyaml schema of a pool and the typed load of the
 * bridge's rewritten document. libcyaml's log is captured, never printed, and
 * its backtrace is mapped back to the file's lines. Control or main thread.
 */
#include "conf_priv.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "walnut/core.h"

/* twemproxy takes exactly these two words, case and all. */
static const cyaml_strval_t bool_strings[] = {
    {"true", 1},
    {"false", 0},
};

static const cyaml_strval_t hash_strings[] = {
#define WN_HASH_STRVAL(up, low) {#low, WN_HASH_##up},
    WN_HASH_MAP(WN_HASH_STRVAL)
#undef WN_HASH_STRVAL
};

static const cyaml_strval_t dist_strings[] = {
#define WN_DIST_STRVAL(up, low) {#low, WN_DIST_##up},
    WN_DIST_MAP(WN_DIST_STRVAL)
#undef WN_DIST_STRVAL
};

static const cyaml_schema_value_t server_entry = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED),
};

#define OPT CYAML_FLAG_OPTIONAL
#define STRICT (CYAML_FLAG_OPTIONAL | CYAML_FLAG_STRICT)
#define BOOL_FIELD(key, member)                                                                    \
    CYAML_FIELD_ENUM_PTR(key, STRICT, wn_conf_raw_pool_t, member, bool_strings,                    \
                         CYAML_ARRAY_LEN(bool_strings))

/*
 * The first field is the pool name the bridge injects; the rest are the keys
 * a user may write, in twemproxy's order, then walnut's own. The bridge reads
 * this table to know the keys and what form each value takes.
 */
static const cyaml_schema_field_t pool_fields[] = {
    CYAML_FIELD_STRING_PTR("name", CYAML_FLAG_DEFAULT, wn_conf_raw_pool_t, name, 0,
                           CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("listen", OPT, wn_conf_raw_pool_t, listen, 0, CYAML_UNLIMITED),
    CYAML_FIELD_ENUM_PTR("hash", STRICT, wn_conf_raw_pool_t, hash, hash_strings,
                         CYAML_ARRAY_LEN(hash_strings)),
    CYAML_FIELD_STRING_PTR("hash_tag", OPT, wn_conf_raw_pool_t, hash_tag, 0, CYAML_UNLIMITED),
    CYAML_FIELD_ENUM_PTR("distribution", STRICT, wn_conf_raw_pool_t, distribution, dist_strings,
                         CYAML_ARRAY_LEN(dist_strings)),
    CYAML_FIELD_INT_PTR("timeout", OPT, wn_conf_raw_pool_t, timeout),
    CYAML_FIELD_INT_PTR("backlog", OPT, wn_conf_raw_pool_t, backlog),
    CYAML_FIELD_INT_PTR("client_connections", OPT, wn_conf_raw_pool_t, client_connections),
    BOOL_FIELD("redis", redis),
    BOOL_FIELD("tcpkeepalive", tcpkeepalive),
    BOOL_FIELD("reuseport", reuseport),
    CYAML_FIELD_STRING_PTR("redis_auth", OPT, wn_conf_raw_pool_t, redis_auth, 0, CYAML_UNLIMITED),
    CYAML_FIELD_INT_PTR("redis_db", OPT, wn_conf_raw_pool_t, redis_db),
    BOOL_FIELD("preconnect", preconnect),
    BOOL_FIELD("auto_eject_hosts", auto_eject_hosts),
    CYAML_FIELD_INT_PTR("server_connections", OPT, wn_conf_raw_pool_t, server_connections),
    CYAML_FIELD_INT_PTR("server_retry_timeout", OPT, wn_conf_raw_pool_t, server_retry_timeout),
    CYAML_FIELD_INT_PTR("server_failure_limit", OPT, wn_conf_raw_pool_t, server_failure_limit),
    CYAML_FIELD_SEQUENCE("servers", CYAML_FLAG_POINTER | OPT, wn_conf_raw_pool_t, servers,
                         &server_entry, 0, CYAML_UNLIMITED),
    CYAML_FIELD_INT_PTR("health_check_interval", OPT, wn_conf_raw_pool_t, health_check_interval),
    CYAML_FIELD_FLOAT_PTR("max_ejected_fraction", OPT, wn_conf_raw_pool_t, max_ejected_fraction),
    CYAML_FIELD_INT_PTR("client_buffer_limit", OPT, wn_conf_raw_pool_t, client_buffer_limit),
    CYAML_FIELD_INT_PTR("dns_refresh_interval", OPT, wn_conf_raw_pool_t, dns_refresh_interval),
    CYAML_FIELD_END,
};

#undef BOOL_FIELD
#undef STRICT
#undef OPT

/* pool_fields without the injected name and the end marker. */
#define NKEYS ((int)WN_ARRAY_SIZE(pool_fields) - 2)
_Static_assert(WN_ARRAY_SIZE(pool_fields) - 2 <= WN_CONF_MAX_KEYS, "raise WN_CONF_MAX_KEYS");

static const cyaml_schema_value_t pool_value = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, wn_conf_raw_pool_t, pool_fields),
};

static const cyaml_schema_value_t top_value = {
    CYAML_VALUE_SEQUENCE(CYAML_FLAG_POINTER, wn_conf_raw_pool_t, &pool_value, 0, CYAML_UNLIMITED),
};

int wn_conf_schema_nkeys(void)
{
    return NKEYS;
}

const cyaml_schema_field_t *wn_conf_schema_key(int i)
{
    return &pool_fields[i + 1];
}

unsigned wn_conf_schema_int_min(const cyaml_schema_field_t *f)
{
    /* client_buffer_limit has a floor of its own (validate.c) */
    return strcmp(f->key, "client_buffer_limit") == 0 ? WN_CONF_MIN_CLIENT_BUFFER_LIMIT : 0u;
}

bool wn_conf_schema_enum_has(const cyaml_schema_value_t *v, const char *s, size_t n)
{
    for (uint32_t i = 0; i < v->enumeration.count; i++) {
        const char *e = v->enumeration.strings[i].str;
        if (strlen(e) == n && memcmp(e, s, n) == 0)
            return true;
    }
    return false;
}

int wn_conf_schema_key_index(const char *key, size_t len)
{
    for (int i = 0; i < NKEYS; i++) {
        const char *k = pool_fields[i + 1].key;
        if (strlen(k) == len && memcmp(k, key, len) == 0)
            return i;
    }
    return -1;
}

/* ---- libcyaml's log, kept for the message ------------------------------------ */

typedef struct capture {
    char text[2048];
    size_t len;
} capture_t;

static void capture_log(cyaml_log_t level, void *ctx, const char *fmt, va_list args)
    __attribute__((format(printf, 3, 0)));

static void capture_log(cyaml_log_t level, void *ctx, const char *fmt, va_list args)
{
    capture_t *cap = ctx;
    if (cap == NULL || level < CYAML_LOG_ERROR || cap->len >= sizeof(cap->text) - 1)
        return;
    int n = vsnprintf(cap->text + cap->len, sizeof(cap->text) - cap->len, fmt, args);
    if (n > 0)
        cap->len = WN_MIN(cap->len + (size_t)n, sizeof(cap->text) - 1);
}

static const cyaml_config_t base_config = {
    .log_fn = capture_log,
    .mem_fn = cyaml_mem,
    .log_level = CYAML_LOG_ERROR,
    .flags = CYAML_CFG_NO_ALIAS, /* case-sensitive, unknown keys rejected */
};

/* The first line of the capture without libcyaml's "Load: " prefix. */
static void first_line(const capture_t *cap, char *out, size_t outlen)
{
    const char *p = cap->text;
    if (strncmp(p, "Load: ", 6) == 0)
        p += 6;
    size_t n = strcspn(p, "\n");
    snprintf(out, outlen, "%.*s", (int)WN_MIN(n, 200), p);
}

/*
 * libcyaml's backtrace lists the innermost place first:
 *   in mapping field 'hash' (line: 9, column: 9)
 *   in sequence entry '2' (line: 2, column: 3)
 * The first field is the key; the last sequence entry is the pool.
 */
static void backtrace_place(const capture_t *cap, int *key, long *pool)
{
    static const char field_tag[] = "in mapping field '";
    static const char entry_tag[] = "in sequence entry '";
    const char *p;

    *key = -1;
    *pool = -1;
    p = strstr(cap->text, field_tag);
    if (p != NULL) {
        p += sizeof(field_tag) - 1;
        *key = wn_conf_schema_key_index(p, strcspn(p, "'"));
    }
    for (p = cap->text; (p = strstr(p, entry_tag)) != NULL;) {
        p += sizeof(entry_tag) - 1;
        *pool = strtol(p, NULL, 10);
    }
}

void wn_conf_schema_enum_list(const cyaml_schema_value_t *v, char *out, size_t outlen)
{
    size_t used = 0;
    out[0] = '\0';
    for (uint32_t i = 0; i < v->enumeration.count && used < outlen; i++) {
        int n = snprintf(out + used, outlen - used, "%s%s", i ? ", " : "",
                         v->enumeration.strings[i].str);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

static void explain(const wn_conf_src_t *src, const char *file, const capture_t *cap,
                    cyaml_err_t cerr, char *err, size_t errlen)
{
    char detail[256];
    int key;
    long pidx;

    first_line(cap, detail, sizeof(detail));
    if (detail[0] == '\0')
        snprintf(detail, sizeof(detail), "%s", cyaml_strerror(cerr));
    backtrace_place(cap, &key, &pidx);
    /* libcyaml counts the entry it is in from 1 */
    pidx -= 1;
    if (pidx < 0 || (uint64_t)pidx >= src->npools || key < 0) {
        wn_conf_errf(err, errlen, file, 0, NULL, "%s", detail);
        return;
    }

    const wn_conf_src_pool_t *sp = &src->pools[pidx];
    const cyaml_schema_field_t *f = wn_conf_schema_key(key);
    const char *text = sp->key_text[key] ? sp->key_text[key] : "";
    int line = sp->key_line[key] ? sp->key_line[key] : sp->line;
    char list[256];

    switch (f->value.type) {
    case CYAML_ENUM:
        wn_conf_schema_enum_list(&f->value, list, sizeof(list));
        wn_conf_errf(err, errlen, file, line, sp->name, "%s '%.*s' is not one of %s", f->key,
                     WN_CONF_QUOTE_MAX, text, list);
        break;
    case CYAML_INT:
        wn_conf_errf(err, errlen, file, line, sp->name, "%s '%.*s' is out of range (want %u to %d)",
                     f->key, WN_CONF_QUOTE_MAX, text, wn_conf_schema_int_min(f), INT_MAX);
        break;
    case CYAML_FLOAT:
        wn_conf_errf(err, errlen, file, line, sp->name, "%s '%.*s' is not a number", f->key,
                     WN_CONF_QUOTE_MAX, text);
        break;
    default:
        wn_conf_errf(err, errlen, file, line, sp->name, "%s: %s", f->key, detail);
        break;
    }
}

int wn_conf_schema_load(const wn_conf_src_t *src, const char *file, wn_conf_raw_pool_t **out,
                        char *err, size_t errlen)
{
    capture_t cap;
    cyaml_config_t cfg = base_config;
    cyaml_data_t *data = NULL;
    unsigned count = 0;
    cyaml_err_t cerr;

    cap.len = 0;
    cap.text[0] = '\0';
    cfg.log_ctx = &cap;
    cerr = cyaml_load_data(src->yaml, src->yaml_len, &cfg, &top_value, &data, &count);
    if (cerr == CYAML_ERR_OOM) {
        wn_conf_errf(err, errlen, file, 0, NULL, "out of memory");
        return WN_ENOMEM;
    }
    if (cerr != CYAML_OK) {
        explain(src, file, &cap, cerr, err, errlen);
        return WN_ECONFIG;
    }
    if (count != src->npools) {
        /* the bridge wrote one entry per pool; anything else is our bug */
        cyaml_free(&cfg, &top_value, data, count);
        wn_conf_errf(err, errlen, file, 0, NULL, "internal error: %u pools loaded, %u written",
                     count, (unsigned)src->npools);
        return WN_ECONFIG;
    }
    *out = data;
    return 0;
}

void wn_conf_schema_free(wn_conf_raw_pool_t *raw, uint32_t npools)
{
    if (raw == NULL)
        return;
    cyaml_free(&base_config, &top_value, raw, npools);
}
