/*
 * config/addr.c: the text of `listen:` and of `servers:` entries, and the
 * server names twemproxy forms from them (what ketama hashes, so they must
 * match byte for byte). Pure string work: no resolving, no I/O. Any thread.
 */
#include "conf_priv.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "walnut/core.h"

static int why_set(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int why_set(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    if (why != NULL && whylen > 0) {
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return WN_ECONFIG;
}

/* Decimal digits only, as twemproxy's nc_atoi; -1 when not a number or > max. */
static long parse_decimal(const char *s, size_t n, long max)
{
    long v = 0;
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
        if (v > max)
            return -1;
    }
    return v;
}

static const char *last_of(const char *s, size_t n, char c)
{
    while (n > 0) {
        if (s[--n] == c)
            return s + n;
    }
    return NULL;
}

static bool has_space(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ' || s[i] == '\t' || (unsigned char)s[i] < 0x20)
            return true;
    }
    return false;
}

/* Port text: 1..65535 or an explanation. */
static int port_parse(const char *s, size_t n, uint16_t *port, char *why, size_t whylen)
{
    long v = parse_decimal(s, n, 99999);
    if (n == 0)
        return why_set(why, whylen, "has no port (want 1 to 65535)");
    if (v < 1 || v > 65535)
        return why_set(why, whylen, "has a bad port '%.*s' (want 1 to 65535)",
                       (int)WN_MIN(n, WN_CONF_QUOTE_MAX), s);
    *port = (uint16_t)v;
    return 0;
}

int wn_conf_listen_parse(const char *text, wn_conf_addr_t *out, char *why, size_t whylen)
{
    size_t n = strlen(text);
    wn_conf_addr_t a = {0};

    if (n == 0)
        return why_set(why, whylen, "is empty (want host:port or /path/to/socket [mode])");

    if (text[0] == '/') {
        /* "/path/sock" or "/path/sock 0666", split at the last space (a path
         * with spaces needs a mode after it) */
        const char *sp = last_of(text, n, ' ');
        size_t plen = sp ? (size_t)(sp - text) : n;
        if (sp != NULL) {
            const char *m = sp + 1;
            size_t mlen = n - (size_t)(m - text);
            long v = 0;
            if (mlen == 0)
                return why_set(why, whylen, "has no unix socket mode after the space");
            for (size_t i = 0; i < mlen && v >= 0; i++)
                v = (m[i] >= '0' && m[i] <= '7' && i < 6) ? v * 8 + (m[i] - '0') : -1;
            if (v < 0 || v > 0777)
                return why_set(
                    why, whylen,
                    "has a bad unix socket mode '%.*s' (want octal 0 to 0777, e.g. 0666)",
                    (int)WN_MIN(mlen, WN_CONF_QUOTE_MAX), m);
            a.perm = (unsigned)v;
        }
        /* spaces before the last one are the path's, as in twemproxy */
        if (plen >= WN_CONF_UNIX_PATH_MAX)
            return why_set(why, whylen, "has a unix socket path of %zu bytes (at most %d)", plen,
                           WN_CONF_UNIX_PATH_MAX - 1);
        a.host = strndup(text, plen);
        if (a.host == NULL)
            return WN_ENOMEM;
        a.is_unix = true;
        *out = a;
        return 0;
    }

    const char *colon = last_of(text, n, ':');
    if (colon == NULL)
        return why_set(why, whylen, "has no port (want host:port, e.g. 127.0.0.1:22121)");
    size_t hlen = (size_t)(colon - text);
    int rc = port_parse(colon + 1, n - hlen - 1, &a.port, why, whylen);
    if (rc != 0)
        return rc;
    if (hlen == 0)
        return why_set(why, whylen, "has no host (want host:port, e.g. 0.0.0.0:22121)");
    if (text[0] == '[')
        return why_set(why, whylen,
                       "has brackets, which twemproxy cannot resolve; write IPv6 "
                       "without them, e.g. ::1:22121");
    if (has_space(text, hlen))
        return why_set(why, whylen, "has spaces in the host");
    a.host = strndup(text, hlen);
    if (a.host == NULL)
        return WN_ENOMEM;
    *out = a;
    return 0;
}

/*
 * twemproxy reads "host:port:weight [name]" from the end: the name after the
 * last space, the weight after the last ':', the port after the one before.
 * Without a name, the name is "host:port" as written, or just "host" when
 * the port is 11211 (libmemcached compatibility); for a unix path it is the
 * text up to and including the ':' before the weight ("/tmp/mc.sock:").
 */
int wn_conf_server_parse(const char *text, wn_conf_server_t *out, char *why, size_t whylen)
{
    size_t n = strlen(text);
    const char *name = NULL;
    size_t name_len = 0;
    wn_conf_server_t s = {0};
    int rc;

    if (n == 0)
        return why_set(why, whylen, "is empty (want host:port:weight [name])");

    const char *sp = last_of(text, n, ' ');
    size_t rest = n;
    if (sp != NULL) {
        name = sp + 1;
        name_len = n - (size_t)(name - text);
        rest = (size_t)(sp - text);
        /* A space and nothing after it names the server "" (twemproxy hashes
         * that, so placement follows it; a second such server is a
         * duplicate). */
    }

    bool is_unix = text[0] == '/';
    const char *wcolon = last_of(text, rest, ':');
    if (wcolon == NULL)
        return why_set(why, whylen,
                       is_unix ? "has no weight (want /path/to/socket:weight [name])"
                               : "has no port and weight (want host:port:weight "
                                 "[name])");
    const char *w = wcolon + 1;
    size_t wlen = rest - (size_t)(w - text);
    long weight = parse_decimal(w, wlen, INT_MAX);
    if (weight == 0)
        return why_set(why, whylen, "has a zero weight (want 1 or more)");
    if (weight < 0)
        return why_set(why, whylen, "has a bad weight '%.*s' (want a whole number from 1)",
                       (int)WN_MIN(wlen, WN_CONF_QUOTE_MAX), w);

    size_t addr_len = (size_t)(wcolon - text); /* host:port, or the unix path */
    const char *host = text;
    size_t host_len = addr_len;
    size_t auto_len = addr_len; /* the name's length when none is given */

    if (is_unix) {
        if (memchr(text, ':', addr_len) != NULL)
            return why_set(why, whylen,
                           "has a ':' in the unix socket path (twemproxy cannot "
                           "parse it)");
        if (addr_len >= WN_CONF_UNIX_PATH_MAX)
            return why_set(why, whylen, "has a unix socket path of %zu bytes (at most %d)",
                           addr_len, WN_CONF_UNIX_PATH_MAX - 1);
        auto_len = addr_len + 1; /* twemproxy keeps the ':' of the empty port */
    } else {
        const char *pcolon = last_of(text, addr_len, ':');
        if (pcolon == NULL)
            return why_set(why, whylen,
                           "has no weight (want host:port:weight [name], e.g. "
                           "127.0.0.1:11211:1)");
        host_len = (size_t)(pcolon - text);
        rc = port_parse(pcolon + 1, addr_len - host_len - 1, &s.addr.port, why, whylen);
        if (rc != 0)
            return rc;
        if (host_len == 0)
            return why_set(why, whylen, "has no host (want host:port:weight [name])");
        if (s.addr.port == WN_CONF_DEFAULT_KETAMA_PORT)
            auto_len = host_len;
        /* twemproxy keeps brackets in the name; connecting needs them gone */
        if (host_len > 2 && host[0] == '[' && host[host_len - 1] == ']') {
            host++;
            host_len -= 2;
        }
    }
    if (has_space(text, addr_len))
        return why_set(why, whylen, "has spaces in the address");

    s.pname = strdup(text);
    s.name = name ? strndup(name, name_len) : strndup(text, auto_len);
    s.name_len = name ? name_len : auto_len;
    if (is_unix && name == NULL)
        s.label = strndup(text, addr_len); /* the path, without the name's ':' */
    else if (s.name_len > 0)
        s.label = strndup(s.name, s.name_len);
    else if (asprintf(&s.label, "'' (%.*s)", (int)rest, text) < 0)
        s.label = NULL;
    s.addr.host = strndup(host, host_len);
    if (s.pname == NULL || s.name == NULL || s.label == NULL || s.addr.host == NULL) {
        wn_conf_server_deinit(&s);
        return WN_ENOMEM;
    }
    s.addr.is_unix = is_unix;
    s.weight = (uint32_t)weight;
    *out = s;
    return 0;
}

int wn_conf_server_cmp(const void *a, const void *b)
{
    const wn_conf_server_t *x = a, *y = b;
    if (x->name_len != y->name_len)
        return x->name_len < y->name_len ? -1 : 1;
    return memcmp(x->name, y->name, x->name_len);
}

void wn_conf_addr_deinit(wn_conf_addr_t *addr)
{
    if (addr == NULL)
        return;
    free(addr->host);
    addr->host = NULL;
}

void wn_conf_server_deinit(wn_conf_server_t *server)
{
    if (server == NULL)
        return;
    free(server->pname);
    free(server->name);
    free(server->label);
    wn_conf_addr_deinit(&server->addr);
    server->pname = NULL;
    server->name = NULL;
    server->label = NULL;
}
