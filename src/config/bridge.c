/*
 * config/bridge.c: the YAML bridge. Walks nutcracker.yml with libyaml's event
 * parser, enforces twemproxy's document shape, records where every pool, key
 * and server was written, and re-emits the pools as a sequence of mappings
 * (each with its `name:`) for libcyaml's typed load. Control or main thread.
 */
#include "conf_priv.h"

#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "walnut/core.h"

typedef struct bridge {
    yaml_parser_t parser;
    yaml_emitter_t emitter;
    yaml_event_t ev;
    bool have_ev;
    bool oom;
    const char *file;
    const char *text; /* the file's bytes, for a syntax error's hint */
    size_t text_len;
    char *err;
    size_t errlen;
    const char *pool; /* borrowed: the pool being walked, for messages */
    wn_conf_src_t *src;
    uint32_t cap_pools;
    unsigned char *out; /* owned until handed to src */
    size_t out_len;
    size_t out_cap;
} bridge_t;

static int ev_line(const yaml_event_t *ev)
{
    return (int)ev->start_mark.line + 1;
}

static const char *ev_kind(const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return "a single value";
    case YAML_SEQUENCE_START_EVENT:
        return "a list";
    case YAML_MAPPING_START_EVENT:
        return "a mapping";
    default:
        return "nothing";
    }
}

static int fail(bridge_t *b, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* One message with the file, line and current pool in front. */
static int fail(bridge_t *b, int line, const char *fmt, ...)
{
    char msg[640];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    wn_conf_errf(b->err, b->errlen, b->file, line, b->pool, "%s", msg);
    return WN_ECONFIG;
}

static int fail_oom(bridge_t *b)
{
    b->oom = true;
    wn_conf_errf(b->err, b->errlen, b->file, 0, NULL, "out of memory");
    return WN_ENOMEM;
}

/* What twemproxy's token check forbids, said once for every event. */
static int check_plain(bridge_t *b)
{
    const yaml_event_t *ev = &b->ev;
    int line = ev_line(ev);

    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        return fail(b, line, "alias '*%s' is not accepted (twemproxy rejects anchors and aliases)",
                    (const char *)ev->data.alias.anchor);
    case YAML_DOCUMENT_START_EVENT:
        if (ev->data.document_start.version_directive != NULL ||
            ev->data.document_start.tag_directives.start !=
                ev->data.document_start.tag_directives.end)
            return fail(b, line,
                        "%%YAML and %%TAG directives are not accepted (twemproxy "
                        "rejects them)");
        if (!ev->data.document_start.implicit)
            return fail(b, line,
                        "document start '---' is not accepted (twemproxy rejects it); "
                        "remove the line");
        return 0;
    case YAML_DOCUMENT_END_EVENT:
        if (!ev->data.document_end.implicit)
            return fail(b, line,
                        "document end '...' is not accepted (twemproxy rejects it); "
                        "remove the line");
        return 0;
    case YAML_SCALAR_EVENT:
        if (ev->data.scalar.anchor != NULL)
            return fail(b, line,
                        "anchor '&%s' is not accepted (twemproxy rejects anchors and "
                        "aliases)",
                        (const char *)ev->data.scalar.anchor);
        if (ev->data.scalar.tag != NULL)
            return fail(b, line, "tag '%s' is not accepted (twemproxy rejects tags)",
                        (const char *)ev->data.scalar.tag);
        if (memchr(ev->data.scalar.value, '\0', ev->data.scalar.length) != NULL)
            return fail(b, line, "value contains a NUL byte");
        return 0;
    case YAML_SEQUENCE_START_EVENT:
        if (ev->data.sequence_start.anchor != NULL || ev->data.sequence_start.tag != NULL)
            return fail(b, line, "anchors and tags are not accepted (twemproxy rejects them)");
        if (ev->data.sequence_start.style == YAML_FLOW_SEQUENCE_STYLE)
            return fail(b, line,
                        "flow style '[...]' is not accepted (twemproxy rejects it); "
                        "write one '- entry' per line");
        return 0;
    case YAML_MAPPING_START_EVENT:
        if (ev->data.mapping_start.anchor != NULL || ev->data.mapping_start.tag != NULL)
            return fail(b, line, "anchors and tags are not accepted (twemproxy rejects them)");
        if (ev->data.mapping_start.style == YAML_FLOW_MAPPING_STYLE)
            return fail(b, line,
                        "flow style '{...}' is not accepted (twemproxy rejects it); "
                        "write one 'key: value' per line");
        return 0;
    default:
        return 0;
    }
}

/* Does line `line` (from 0) start with blanks that hold a tab? */
static bool indented_with_tab(const bridge_t *b, size_t line)
{
    size_t i = 0;
    for (size_t n = 0; n < line && i < b->text_len; i++)
        if (b->text[i] == '\n')
            n++;
    for (; i < b->text_len && (b->text[i] == ' ' || b->text[i] == '\t'); i++)
        if (b->text[i] == '\t')
            return true;
    return false;
}

static int next(bridge_t *b)
{
    if (b->have_ev) {
        yaml_event_delete(&b->ev);
        b->have_ev = false;
    }
    if (!yaml_parser_parse(&b->parser, &b->ev)) {
        if (b->parser.error == YAML_MEMORY_ERROR)
            return fail_oom(b);
        const char *problem = b->parser.problem ? b->parser.problem : "syntax error";
        const char *context = b->parser.context ? b->parser.context : "";
        char where[160] = "";
        if (context[0] != '\0')
            snprintf(where, sizeof(where), " (%s, line %zu)", context,
                     b->parser.context_mark.line + 1);
        /* libyaml names the token, not the tab a file indented with */
        const char *tab = indented_with_tab(b, b->parser.problem_mark.line)
                              ? "; the line is indented with a tab: YAML indents with spaces only"
                              : "";
        return fail(b, (int)b->parser.problem_mark.line + 1, "YAML syntax error: %s%s%s", problem,
                    where, tab);
    }
    b->have_ev = true;
    return check_plain(b);
}

/* ---- the emitter side ---------------------------------------------------------- */

static int write_out(void *data, unsigned char *buffer, size_t size)
{
    bridge_t *b = data;
    if (b->out_len + size > b->out_cap) {
        size_t cap = b->out_cap ? b->out_cap : 4096;
        while (cap < b->out_len + size)
            cap *= 2;
        unsigned char *p = realloc(b->out, cap);
        if (p == NULL) {
            b->oom = true;
            return 0;
        }
        b->out = p;
        b->out_cap = cap;
    }
    memcpy(b->out + b->out_len, buffer, size);
    b->out_len += size;
    return 1;
}

/* Emit (and give away) an initialized event; 0 or a negative error. */
static int emit(bridge_t *b, yaml_event_t *ev, int ok)
{
    if (!ok || !yaml_emitter_emit(&b->emitter, ev)) {
        if (b->oom || b->emitter.error == YAML_MEMORY_ERROR || !ok)
            return fail_oom(b);
        wn_conf_errf(b->err, b->errlen, b->file, 0, NULL, "internal error: YAML emitter: %s",
                     b->emitter.problem ? b->emitter.problem : "unknown");
        return WN_ECONFIG;
    }
    return 0;
}

static int emit_scalar(bridge_t *b, const char *value, size_t len)
{
    yaml_event_t ev;
    int ok = yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)value, (int)len, 1, 1,
                                          YAML_ANY_SCALAR_STYLE);
    return emit(b, &ev, ok);
}

static int emit_mapping(bridge_t *b, bool start)
{
    yaml_event_t ev;
    int ok = start
                 ? yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE)
                 : yaml_mapping_end_event_initialize(&ev);
    return emit(b, &ev, ok);
}

static int emit_sequence(bridge_t *b, bool start)
{
    yaml_event_t ev;
    int ok =
        start ? yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE)
              : yaml_sequence_end_event_initialize(&ev);
    return emit(b, &ev, ok);
}

static int emit_open(bridge_t *b)
{
    yaml_event_t ev;
    int rc;

    yaml_emitter_set_output(&b->emitter, write_out, b);
    yaml_emitter_set_unicode(&b->emitter, 1);
    yaml_emitter_set_width(&b->emitter, -1); /* never fold long values */
    rc = emit(b, &ev, yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING));
    if (rc == 0)
        rc = emit(b, &ev, yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1));
    if (rc == 0)
        rc = emit_sequence(b, true);
    return rc;
}

static int emit_close(bridge_t *b)
{
    yaml_event_t ev;
    int rc = emit_sequence(b, false);
    if (rc == 0)
        rc = emit(b, &ev, yaml_document_end_event_initialize(&ev, 1));
    if (rc == 0)
        rc = emit(b, &ev, yaml_stream_end_event_initialize(&ev));
    if (rc == 0 && !yaml_emitter_flush(&b->emitter))
        rc = fail_oom(b);
    return rc;
}

/* ---- values ---------------------------------------------------------------------- */

static bool all_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
    }
    return true;
}

/*
 * twemproxy reads numbers as plain decimal digits (so "010" is ten). libcyaml
 * would take signs, hex, octal and trailing junk, so the form and the range
 * are checked here, in the file's order (a later stage would report a value
 * further down first), and leading zeros dropped; libcyaml then converts.
 */
static int check_int(bridge_t *b, const cyaml_schema_field_t *f, const char *s, size_t n,
                     size_t *skip)
{
    const char *key = f->key;
    int line = ev_line(&b->ev);
    char quoted[WN_CONF_QUOTE_MAX + 1];

    snprintf(quoted, sizeof(quoted), "%.*s", (int)WN_MIN(n, WN_CONF_QUOTE_MAX), s);
    if (n == 0)
        return fail(b, line, "%s has no value (want a whole number from 0)", key);
    if (s[0] == '-' && all_digits(s + 1, n - 1))
        return fail(b, line, "%s '%s' is negative (want a whole number from 0)", key, quoted);
    if (!all_digits(s, n))
        return fail(b, line, "%s '%s' is not a whole number (want decimal digits only)", key,
                    quoted);
    size_t z = 0;
    while (z + 1 < n && s[z] == '0')
        z++;
    *skip = z;
    static const char int_max[] = "2147483647";
    _Static_assert(INT_MAX == 2147483647, "int_max");
    size_t digits = n - z;
    if (digits > sizeof(int_max) - 1 ||
        (digits == sizeof(int_max) - 1 && memcmp(s + z, int_max, digits) > 0))
        return fail(b, line, "%s '%s' is out of range (want %u to %d)", key, quoted,
                    wn_conf_schema_int_min(f), INT_MAX);
    return 0;
}

/* An enum or bool: one of its words exactly (twemproxy's own spelling). */
static int check_enum(bridge_t *b, const cyaml_schema_field_t *f, const char *s, size_t n)
{
    if (wn_conf_schema_enum_has(&f->value, s, n))
        return 0;
    char list[256];
    wn_conf_schema_enum_list(&f->value, list, sizeof(list));
    return fail(b, ev_line(&b->ev), "%s '%.*s' is not one of %s", f->key,
                (int)WN_MIN(n, WN_CONF_QUOTE_MAX), s, list);
}

/* A plain decimal fraction: digits with an optional '.' part, nothing else. */
static int check_float(bridge_t *b, const char *key, const char *s, size_t n)
{
    size_t i = 0, digits = 0;
    char quoted[WN_CONF_QUOTE_MAX + 1];

    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++, digits++;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++, digits++;
    }
    if (i == n && digits > 0)
        return 0;
    snprintf(quoted, sizeof(quoted), "%.*s", (int)WN_MIN(n, WN_CONF_QUOTE_MAX), s);
    return fail(b, ev_line(&b->ev), "%s '%s' is not a decimal number (want e.g. 0.5)", key, quoted);
}

static int servers_list(bridge_t *b, wn_conf_src_pool_t *sp)
{
    uint32_t cap = 0;
    int rc = emit_sequence(b, true);

    while (rc == 0 && (rc = next(b)) == 0) {
        if (b->ev.type == YAML_SEQUENCE_END_EVENT)
            return emit_sequence(b, false);
        if (b->ev.type != YAML_SCALAR_EVENT)
            return fail(b, ev_line(&b->ev), "servers entry is %s; want 'host:port:weight [name]'",
                        ev_kind(&b->ev));
        if (sp->nserver_line == cap) {
            uint32_t ncap = cap ? cap * 2 : 8;
            int *p = realloc(sp->server_line, ncap * sizeof(*p));
            if (p == NULL)
                return fail_oom(b);
            sp->server_line = p;
            cap = ncap;
        }
        sp->server_line[sp->nserver_line++] = ev_line(&b->ev);
        rc = emit_scalar(b, (const char *)b->ev.data.scalar.value, b->ev.data.scalar.length);
    }
    return rc;
}

/* The value of `key` (field f, index k) in pool sp; the key event is current. */
static int pool_value(bridge_t *b, wn_conf_src_pool_t *sp, int k)
{
    const cyaml_schema_field_t *f = wn_conf_schema_key(k);
    int rc = next(b);
    if (rc != 0)
        return rc;

    if (f->value.type == CYAML_SEQUENCE) {
        if (b->ev.type == YAML_SEQUENCE_START_EVENT)
            return servers_list(b, sp);
        if (b->ev.type == YAML_SCALAR_EVENT && b->ev.data.scalar.length == 0)
            return fail(b, ev_line(&b->ev),
                        "%s has no entries; want a list of '- host:port:weight [name]' lines",
                        f->key);
        return fail(b, ev_line(&b->ev),
                    "%s is %s; want a list of '- host:port:weight [name]' lines", f->key,
                    ev_kind(&b->ev));
    }
    if (b->ev.type != YAML_SCALAR_EVENT)
        return fail(b, ev_line(&b->ev), "%s is %s; want a single value", f->key, ev_kind(&b->ev));

    const char *s = (const char *)b->ev.data.scalar.value;
    size_t n = b->ev.data.scalar.length;
    size_t skip = 0;

    if (f->value.type == CYAML_INT)
        rc = check_int(b, f, s, n, &skip);
    else if (f->value.type == CYAML_FLOAT)
        rc = check_float(b, f->key, s, n);
    else if (f->value.type == CYAML_ENUM)
        rc = check_enum(b, f, s, n);
    if (rc != 0)
        return rc;
    sp->key_text[k] = strndup(s, n);
    if (sp->key_text[k] == NULL)
        return fail_oom(b);
    return emit_scalar(b, s + skip, n - skip);
}

/* Edit distance of two short strings (keys are under 32 bytes). */
static size_t distance(const char *a, size_t na, const char *b, size_t nb)
{
    size_t row[40];
    if (na >= WN_ARRAY_SIZE(row) || nb >= WN_ARRAY_SIZE(row))
        return SIZE_MAX;
    for (size_t j = 0; j <= nb; j++)
        row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            best = WN_MIN(best, up + 1);
            best = WN_MIN(best, row[j - 1] + 1);
            row[j] = best;
            diag = up;
        }
    }
    return row[nb];
}

/* The known key nearest to a misspelt one, if it is close enough to be meant. */
static const char *closest_key(const char *key, size_t len)
{
    const char *best = NULL;
    size_t best_d = 3; /* at most two edits */
    for (int i = 0; i < wn_conf_schema_nkeys(); i++) {
        const char *k = wn_conf_schema_key(i)->key;
        size_t d = distance(key, len, k, strlen(k));
        if (d < best_d) {
            best_d = d;
            best = k;
        }
    }
    return best;
}

static int pool_keys(bridge_t *b, wn_conf_src_pool_t *sp)
{
    int rc;

    while ((rc = next(b)) == 0) {
        if (b->ev.type == YAML_MAPPING_END_EVENT)
            return emit_mapping(b, false);
        if (b->ev.type != YAML_SCALAR_EVENT)
            return fail(b, ev_line(&b->ev), "a key is %s; want a name like 'listen'",
                        ev_kind(&b->ev));

        const char *key = (const char *)b->ev.data.scalar.value;
        size_t klen = b->ev.data.scalar.length;
        int line = ev_line(&b->ev);
        int k = wn_conf_schema_key_index(key, klen);
        if (k < 0) {
            char msg[640], quoted[WN_CONF_QUOTE_MAX + 1];
            size_t used;
            snprintf(quoted, sizeof(quoted), "%.*s", (int)WN_MIN(klen, WN_CONF_QUOTE_MAX), key);
            const char *near = closest_key(key, klen);
            if (near != NULL)
                used = (size_t)snprintf(msg, sizeof(msg),
                                        "unknown key '%s'; did you mean '%s'? (valid keys:", quoted,
                                        near);
            else
                used = (size_t)snprintf(msg, sizeof(msg), "unknown key '%s' (valid keys:", quoted);
            for (int i = 0; i < wn_conf_schema_nkeys() && used < sizeof(msg); i++)
                used += (size_t)snprintf(msg + used, sizeof(msg) - used, "%s %s", i ? "," : "",
                                         wn_conf_schema_key(i)->key);
            if (used < sizeof(msg))
                snprintf(msg + used, sizeof(msg) - used, ")");
            return fail(b, line, "%s", msg);
        }
        if (sp->key_line[k] != 0) {
            return fail(b, line, "key '%s' appears twice (first at line %d)",
                        wn_conf_schema_key(k)->key, sp->key_line[k]);
        }
        sp->key_line[k] = line;
        rc = emit_scalar(b, key, klen);
        if (rc == 0)
            rc = pool_value(b, sp, k);
        if (rc != 0)
            return rc;
    }
    return rc;
}

static wn_conf_src_pool_t *pool_add(bridge_t *b)
{
    wn_conf_src_t *src = b->src;
    if (src->npools == b->cap_pools) {
        uint32_t ncap = b->cap_pools ? b->cap_pools * 2 : 8;
        wn_conf_src_pool_t *p = realloc(src->pools, ncap * sizeof(*p));
        if (p == NULL)
            return NULL;
        src->pools = p;
        b->cap_pools = ncap;
    }
    wn_conf_src_pool_t *sp = &src->pools[src->npools++];
    memset(sp, 0, sizeof(*sp));
    return sp;
}

static int pools(bridge_t *b)
{
    int rc;

    while ((rc = next(b)) == 0) {
        if (b->ev.type == YAML_MAPPING_END_EVENT)
            return 0;
        b->pool = NULL;
        if (b->ev.type != YAML_SCALAR_EVENT)
            return fail(b, ev_line(&b->ev), "a pool name is %s; want a plain name like 'alpha'",
                        ev_kind(&b->ev));

        const char *name = (const char *)b->ev.data.scalar.value;
        size_t nlen = b->ev.data.scalar.length;
        int line = ev_line(&b->ev);
        if (nlen == 0)
            return fail(b, line, "a pool name is empty");
        for (uint32_t i = 0; i < b->src->npools; i++) {
            const wn_conf_src_pool_t *o = &b->src->pools[i];
            if (strlen(o->name) == nlen && memcmp(o->name, name, nlen) == 0) {
                return fail(b, line, "pool '%s' is defined twice (first at line %d)", o->name,
                            o->line);
            }
        }
        wn_conf_src_pool_t *sp = pool_add(b);
        if (sp == NULL)
            return fail_oom(b);
        sp->line = line;
        sp->name = strndup(name, nlen);
        if (sp->name == NULL)
            return fail_oom(b);
        b->pool = sp->name;

        if ((rc = next(b)) != 0)
            return rc;
        if (b->ev.type == YAML_SCALAR_EVENT && b->ev.data.scalar.length == 0)
            return fail(b, ev_line(&b->ev),
                        "has no keys; want 'listen:', 'servers:' and others "
                        "indented below the pool name");
        if (b->ev.type != YAML_MAPPING_START_EVENT)
            return fail(b, ev_line(&b->ev),
                        "value is %s; want a mapping of keys such as "
                        "'listen:' and 'servers:'",
                        ev_kind(&b->ev));
        rc = emit_mapping(b, true);
        if (rc == 0)
            rc = emit_scalar(b, "name", 4);
        if (rc == 0)
            rc = emit_scalar(b, sp->name, nlen);
        if (rc == 0)
            rc = pool_keys(b, sp);
        if (rc != 0)
            return rc;
    }
    return rc;
}

static int document(bridge_t *b)
{
    int rc;

    if ((rc = next(b)) != 0) /* stream start */
        return rc;
    if ((rc = next(b)) != 0)
        return rc;
    if (b->ev.type == YAML_STREAM_END_EVENT)
        return fail(b, 0,
                    "file is empty; want a mapping of pool names to pools, e.g. "
                    "'alpha:' followed by indented 'listen:' and 'servers:'");
    if ((rc = next(b)) != 0) /* the root node */
        return rc;
    if (b->ev.type != YAML_MAPPING_START_EVENT)
        return fail(b, ev_line(&b->ev),
                    "top level is %s; want a mapping of pool names to "
                    "pools, e.g. 'alpha:' followed by indented keys",
                    ev_kind(&b->ev));
    if ((rc = emit_open(b)) != 0 || (rc = pools(b)) != 0)
        return rc;
    b->pool = NULL;
    if ((rc = next(b)) != 0) /* document end */
        return rc;
    if ((rc = next(b)) != 0)
        return rc;
    if (b->ev.type != YAML_STREAM_END_EVENT)
        return fail(b, ev_line(&b->ev), "a second YAML document follows; want exactly one");
    return emit_close(b);
}

int wn_conf_bridge(const char *text, size_t len, const char *file, wn_conf_src_t *src, char *err,
                   size_t errlen)
{
    bridge_t b;
    wn_conf_src_t tmp;
    int rc;

    memset(&b, 0, sizeof(b));
    memset(&tmp, 0, sizeof(tmp));
    b.file = file;
    b.err = err;
    b.errlen = errlen;
    b.src = &tmp;
    if (len > INT_MAX) {
        wn_conf_errf(err, errlen, file, 0, NULL, "file is too large");
        return WN_ECONFIG;
    }
    if (!yaml_parser_initialize(&b.parser))
        return fail_oom(&b);
    if (!yaml_emitter_initialize(&b.emitter)) {
        yaml_parser_delete(&b.parser);
        return fail_oom(&b);
    }
    yaml_parser_set_input_string(&b.parser, (const unsigned char *)text, len);
    b.text = text;
    b.text_len = len;

    rc = document(&b);

    if (b.have_ev)
        yaml_event_delete(&b.ev);
    yaml_emitter_delete(&b.emitter);
    yaml_parser_delete(&b.parser);
    if (rc != 0)
        goto fail;
    tmp.yaml = b.out;
    tmp.yaml_len = b.out_len;
    *src = tmp;
    return 0;

fail:
    free(b.out);
    wn_conf_src_deinit(&tmp);
    return rc;
}

void wn_conf_src_deinit(wn_conf_src_t *src)
{
    if (src == NULL)
        return;
    for (uint32_t i = 0; i < src->npools; i++) {
        wn_conf_src_pool_t *sp = &src->pools[i];
        free(sp->name);
        for (int k = 0; k < WN_CONF_MAX_KEYS; k++)
            free(sp->key_text[k]);
        free(sp->server_line);
    }
    free(src->pools);
    free(src->yaml);
    memset(src, 0, sizeof(*src));
}
