/*
 * config: twemproxy's nutcracker.yml, read with libcyaml into an immutable,
 * refcounted snapshot. Loaded and validated on the control thread (or main,
 * before threads start); a snapshot is read-only afterwards and may be shared
 * by any thread that holds a reference. One exception, made before it is
 * shared: control looks up each server's address once (sa), and workers
 * connect there, never asking DNS themselves.
 */
#ifndef WALNUT_CONFIG_H
#define WALNUT_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "walnut/route.h"

/* twemproxy 0.5.0's defaults (nc_conf.h), plus walnut's own keys. */
#define WN_CONF_DEFAULT_HASH WN_HASH_FNV1A_64
#define WN_CONF_DEFAULT_DIST WN_DIST_KETAMA
#define WN_CONF_DEFAULT_TIMEOUT (-1) /* no timeout */
#define WN_CONF_DEFAULT_BACKLOG 512
#define WN_CONF_DEFAULT_CLIENT_CONNECTIONS 0
#define WN_CONF_DEFAULT_REDIS_DB 0
#define WN_CONF_DEFAULT_SERVER_RETRY_TIMEOUT 30000 /* ms */
#define WN_CONF_DEFAULT_SERVER_FAILURE_LIMIT 2
#define WN_CONF_DEFAULT_SERVER_CONNECTIONS 1
#define WN_CONF_DEFAULT_KETAMA_PORT 11211
#define WN_CONF_DEFAULT_HEALTH_CHECK_INTERVAL 1000 /* ms; walnut-only */
/* Below this, a probe interval is more likely seconds written as ms than meant:
 * 1 ms against 60 servers kept control a third busy. */
#define WN_CONF_MIN_HEALTH_CHECK_INTERVAL 10       /* ms */
#define WN_CONF_DEFAULT_MAX_EJECTED_FRACTION 1.0   /* walnut-only: twemproxy may eject all */
#define WN_CONF_DEFAULT_CLIENT_BUFFER_LIMIT (64u << 20) /* walnut-only: bytes */
#define WN_CONF_MIN_CLIENT_BUFFER_LIMIT (64u << 10)
#define WN_CONF_DEFAULT_DNS_REFRESH_INTERVAL 30000 /* ms; walnut-only */
#define WN_CONF_MIN_DNS_REFRESH_INTERVAL 100       /* ms */

/* A listen address or a server address. */
typedef struct wn_conf_addr {
    char *host;    /* owned: host name, IPv4/IPv6 literal (no brackets), or unix path */
    uint16_t port; /* 0 for a unix socket */
    bool is_unix;
    unsigned perm; /* unix listen sockets only: octal permission, 0 when not given */
} wn_conf_addr_t;

typedef struct wn_conf_server {
    char *pname;         /* owned: the text as written ("127.0.0.1:11211:1 name") */
    char *name;          /* owned: twemproxy's server name, what ketama hashes */
    size_t name_len;
    /* owned: the server in log lines: the name; for a unix server with no
     * name its path (the name has twemproxy's ':' after it); for a server
     * named "" (a space and nothing after it) "'' (127.0.0.1:11211:1)" */
    char *label;
    wn_conf_addr_t addr; /* owned */
    uint32_t weight;     /* > 0 */
    int line;            /* line in the file, for messages */
    /* The address control looked up (TCP servers), filled in before the
     * snapshot is shared: every worker and control's probes use this one. */
    struct sockaddr_storage sa;
    bool has_sa;
} wn_conf_server_t;

typedef struct wn_conf_pool {
    char *name;           /* owned */
    int line;             /* line of the pool's name */
    char *listen_text;    /* owned: as written */
    char *listen_where;   /* owned: "file:line" of the listen key, for messages */
    wn_conf_addr_t listen; /* owned */
    /* The TCP listen address control looked up, filled in before the
     * snapshot is shared (see wn_listen_resolve): workers bind this one. */
    struct sockaddr_storage listen_sa;
    uint32_t listen_salen;
    wn_hash_t hash;
    char hash_tag[2];
    bool has_hash_tag;
    wn_dist_t distribution;
    int timeout;          /* ms, or -1 for none */
    int backlog;
    bool preconnect;
    bool redis;
    char *redis_auth;     /* owned; NULL when not set */
    int redis_db;
    int server_connections;
    bool auto_eject_hosts;
    int server_retry_timeout; /* ms */
    int server_failure_limit;
    int client_connections;   /* 0: unlimited; twemproxy 0.5.0 parses it but never enforces it */
    bool tcpkeepalive;
    bool reuseport;           /* twemproxy after 0.5.0; accepted, walnut always uses it */
    /* walnut-only keys */
    int health_check_interval;   /* ms; 0 disables active probes */
    double max_ejected_fraction; /* 0..1: no ejection past this share of servers */
    /* Bytes walnut may hold for one client (its requests not yet sent, its
     * replies not yet written); past it the client is disconnected. */
    uint64_t client_buffer_limit;
    /* ms between lookups of a server's host name while it answers (one that
     * fails or has no address is looked up at most every second); 0: a name
     * is looked up only when a server is added, at start or by a reload. */
    int dns_refresh_interval;

    wn_conf_server_t *servers; /* owned; sorted as twemproxy sorts: name length, then bytes */
    uint32_t nservers;
} wn_conf_pool_t;

typedef struct wn_conf {
    atomic_int refs;
    char *path;             /* owned: file it was read from ("<string>" if parsed from text) */
    wn_conf_pool_t *pools;  /* owned; in file order (twemproxy keeps them sorted by name) */
    uint32_t npools;
} wn_conf_t;

/*
 * Read and validate `path`. On success returns 0 and a snapshot with one
 * reference in *out. On failure returns a negative error, leaves *out
 * untouched and writes one line a person can act on into err, e.g.
 *   walnut.yml:7: pool 'alpha': hash 'sha1' is not one of one_at_a_time, md5, ...
 * Errors: WN_ECONFIG (the file is wrong), WN_ENOMEM, or a negated errno when
 * the file cannot be opened or read. err may be NULL. No DNS lookups: host
 * names are checked for form only. Never writes to stderr.
 */
int wn_conf_load(const char *path, wn_conf_t **out, char *err, size_t errlen);
/* The same from text in memory; `name` is used in messages in place of a path. */
int wn_conf_parse(const char *text, size_t len, const char *name, wn_conf_t **out, char *err,
                  size_t errlen);

/* A copy of conf with one reference, its own in every part (looked-up
 * addresses included), for control to change before sharing it; NULL when
 * memory is short. */
wn_conf_t *wn_conf_dup(const wn_conf_t *conf);

void wn_conf_ref(wn_conf_t *conf);
/* Drop a reference; the last one frees. NULL is fine. Any thread. */
void wn_conf_unref(wn_conf_t *conf);

/* The pool named `name`, or NULL. */
const wn_conf_pool_t *wn_conf_pool_find(const wn_conf_t *conf, const char *name);

/* What a reload compares. The two addresses are written the same (host or
 * path, port). */
bool wn_conf_addr_same(const wn_conf_addr_t *a, const wn_conf_addr_t *b);
/* Two looked-up TCP addresses are one (family, address, port; an IPv4-mapped
 * IPv6 address is the IPv4 one); false for anything else (a zeroed one, a
 * unix path). */
bool wn_sockaddr_same(const struct sockaddr_storage *a, const struct sockaddr_storage *b);
/* Two looked-up TCP addresses cannot both be listened on: one address, or
 * one port with either address the wildcard of its family; the IPv6
 * wildcard holds the IPv4 port too (walnut binds it dual-stack, as
 * nutcracker's `:::P` is), and an IPv4-mapped address is read as IPv4. */
bool wn_sockaddr_overlap(const struct sockaddr_storage *a, const struct sockaddr_storage *b);
/* An address as operators and redis-server write it: "ip:port", "[ip]:port"
 * for IPv6, a unix socket's path; "an address of family N" otherwise. */
void wn_sockaddr_format(const struct sockaddr_storage *ss, char *buf, size_t len);
/* A TCP address's first getaddrinfo answer, as twemproxy takes it (an empty
 * host: the wildcard). `numeric`: literals only, never DNS. Blocking; 0, or
 * UV_EAI_NONAME (UV_EAI_AGAIN: no DNS server answered) / a negative errno. */
int wn_conf_addr_lookup(const wn_conf_addr_t *a, bool numeric, struct sockaddr_storage *out,
                        uint32_t *outlen);
/* The same, every answer in getaddrinfo's order, up to max of them into
 * out[] (and their lengths into outlen[], if not NULL): how many, or an
 * error as above (UV_EAI_AGAIN when a DNS server did not answer). Any
 * thread: it reads only `a`. */
int wn_conf_addr_lookup_all(const wn_conf_addr_t *a, bool numeric, struct sockaddr_storage *out,
                            uint32_t *outlen, uint32_t max);
/* The server named `name` in pool, or NULL. */
const wn_conf_server_t *wn_conf_server_find(const wn_conf_pool_t *pool, const char *name);
/* Server a of pool pa and server b of pool pb are one backend (same name,
 * same address): its health carries over a reload. */
bool wn_conf_server_same(const wn_conf_server_t *a, const wn_conf_server_t *b);
/* ... and connections open to it for pa can go on serving pb (the same
 * looked-up address, the same number of them, the same Redis AUTH and
 * SELECT). */
bool wn_conf_server_conns_same(const wn_conf_pool_t *pa, const wn_conf_server_t *a,
                               const wn_conf_pool_t *pb, const wn_conf_server_t *b);

/* Fill ring servers (borrowing names from the pool) for wn_ring_create; `out`
 * holds pool->nservers entries. */
void wn_conf_ring_servers(const wn_conf_pool_t *pool, wn_ring_server_t *out);

#endif
