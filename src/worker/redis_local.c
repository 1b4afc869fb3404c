/*
 * worker/redis_local.c: what walnut answers itself for a Redis pool. The
 * errors redis-server gives for an unknown command or a wrong number of
 * arguments (in order, and the connection stays usable, where twemproxy
 * closes it); twemproxy's AUTH against redis_auth with its texts; PING, ECHO,
 * QUIT, SELECT of the pool's database, HELLO 2 (HELLO 3: NOPROTO, as a server
 * without RESP3), and the CLIENT subcommands a proxy can honestly answer.
 * Worker thread only.
 */
#include "redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

static const char NOAUTH[] = "-NOAUTH Authentication required\r\n";

static void reply(redis_req_t *r, const char *text, size_t len)
{
    wn_redis_reply(r, text, len);
}

static void reply_str(redis_req_t *r, const char *text)
{
    reply(r, text, strlen(text));
}

/* An error line of len bytes (composed lines are not NUL-terminated). */
static void reply_error_len(redis_req_t *r, const char *text, size_t len)
{
    wn_stat_add(WN_PSTAT(r->r.pool, request_errors), 1);
    reply(r, text, len);
}

static void reply_error(redis_req_t *r, const char *text)
{
    reply_error_len(r, text, strlen(text));
}

/* A bulk string reply of (s, len), composed in scratch memory. */
static void reply_bulk(redis_req_t *r, const char *s, size_t len)
{
    size_t size = wn_resp_bulk_size(len);
    char small[256];
    char *buf = size <= sizeof(small) ? small : malloc(size);
    if (buf == NULL) {
        wn_redis_fail(&r->r, WN_ENOMEM);
        return;
    }
    int n = wn_resp_compose_bulk(buf, size, s, len);
    reply(r, buf, n > 0 ? (size_t)n : 0);
    if (buf != small)
        free(buf);
}

/*
 * Argument i as a bulk reply (ECHO, PING <msg>). A request's bulk arrives in
 * the reply's own form: its "$<len>\r\n" line is canonical (the parser takes
 * strict digits only: no '+', no leading zero, no space) and the "\r\n" after
 * the payload was checked (arg_done). So the bytes received are the reply,
 * taken by reference from the buffers they arrived in, whatever the length.
 */
static int rsp_piece(void *ctx, wn_buf_t *buf, uint32_t off, uint32_t len)
{
    return wn_req_rsp_push(ctx, buf, off, len, false);
}

static void reply_arg(redis_req_t *r, uint32_t i)
{
    /* The bytes count once, as the reply: counted as the request too, an
     * argument of over half the client's limit took it past. */
    wn_req_out_uncount(&r->r);
    if (wn_redis_arg_pieces(r, i, 0, wn_redis_arg_bytes(&r->args[i]), rsp_piece, &r->r) < 0) {
        wn_redis_fail(&r->r, WN_ENOMEM);
        return;
    }
    wn_req_out_written(&r->r); /* nothing goes to a server */
    wn_req_done(&r->r);
}

/* ---- errors for what walnut does not forward ------------------------------ */

/*
 * redis-server refuses an EXEC as it aborts a transaction: the error line
 * `err` after "-EXECABORT Transaction discarded because of: ", without its
 * "-" (its "-ERR ": that code is not in redis-server's message) and CR LF,
 * into line (cap bytes). Returns its length.
 */
static int exec_abort(char *line, size_t cap, const char *err, size_t len)
{
    size_t skip = len >= 5 && memcmp(err, "-ERR ", 5) == 0 ? 5 : 1;
    int n = snprintf(line, cap, "-EXECABORT Transaction discarded because of: %.*s\r\n",
                     len >= skip + 2 ? (int)(len - skip - 2) : 0, err + skip);
    return n < 0 || (size_t)n >= cap ? 0 : n;
}

static void answer_refused(redis_client_t *c, redis_req_t *r)
{
    char line[WN_RESP_UNKNOWN_CMD_MAX + WN_RESP_UNSUPPORTED_MAX];
    int n;
    if (r->cmd == NULL) {
        wn_resp_str_t args[WN_RESP_UNKNOWN_ARGS];
        const char *at = c->errargs;
        for (uint32_t i = 0; i < c->nerrargs; i++) {
            args[i].s = at;
            args[i].len = c->errarg_len[i];
            at += c->errarg_len[i];
        }
        n = wn_resp_compose_unknown_cmd(line, sizeof(line), c->name, c->name_len, args,
                                        c->nerrargs);
    } else if (!wn_rcmd_arity_ok(r->cmd, r->nargs) ||
               (!wn_redis_needs_auth(c, r->cmd) && !wn_rcmd_argc_ok(r->cmd, r->nargs))) {
        n = wn_resp_compose_arity_error(line, sizeof(line), r->cmd->name, strlen(r->cmd->name));
        if (r->cmd->id == WN_RCMD_ID_EXEC && n > 0) {
            char err[WN_RESP_ARITY_ERR_MAX];
            memcpy(err, line, (size_t)n);
            n = exec_abort(line, sizeof(line), err, (size_t)n);
        }
    } else if (wn_redis_needs_auth(c, r->cmd)) {
        n = (int)strlen(NOAUTH);
        memcpy(line, NOAUTH, (size_t)n);
        if (r->cmd->id == WN_RCMD_ID_EXEC) /* in redis-server's own words there */
            n = exec_abort(line, sizeof(line), WN_RESP_NOAUTH_LINE, strlen(WN_RESP_NOAUTH_LINE));
    } else {
        n = wn_resp_compose_unsupported(line, sizeof(line), r->cmd);
    }
    wn_stat_add(WN_PSTAT(c->c.pool, request_errors), 1);
    reply(r, line, n > 0 ? (size_t)n : 0);
}

/*
 * The error line "<head><arg><tail>", the argument shown as redis-server's
 * "%s" shows one: up to a NUL, CR and LF as spaces (as in all its error
 * replies; a CR LF from the client must not end walnut's line early), and
 * at most `max` bytes of it.
 */
static void reply_error_showing(redis_req_t *r, const char *head, const redis_arg_t *a, size_t max,
                                const char *tail)
{
    size_t len = a->val != NULL ? WN_MIN((size_t)a->len, max) : 0;
    const char *nul = len > 0 ? memchr(a->val, '\0', len) : NULL;
    if (nul != NULL)
        len = (size_t)(nul - a->val);
    size_t hlen = strlen(head), tlen = strlen(tail);
    char *line = malloc(hlen + len + tlen);
    if (line == NULL) {
        wn_redis_fail(&r->r, WN_ENOMEM);
        return;
    }
    memcpy(line, head, hlen);
    for (size_t k = 0; k < len; k++)
        line[hlen + k] = a->val[k] == '\r' || a->val[k] == '\n' ? ' ' : a->val[k];
    memcpy(line + hlen + len, tail, tlen);
    reply_error_len(r, line, hlen + len + tlen);
    free(line);
}

/* ---- AUTH and SELECT -------------------------------------------------------- */

static void set_authed(redis_client_t *c, bool ok)
{
    c->authed = ok || c->c.pool->conf->redis_auth == NULL;
    wn_resp_req_parser_set_unauth(&c->parser, !c->authed);
}

/* Argument a (read by walnut) is exactly s, case and all. */
static bool arg_equals(const redis_arg_t *a, const char *s)
{
    return a->val != NULL && a->len == strlen(s) && memcmp(a->val, s, a->len) == 0;
}

/*
 * The password in argument pass_at, for the user in user_at (0: AUTH <pass>,
 * the default user): NULL when accepted, else the error line. With
 * redis_auth, twemproxy's rule and text: the password must be redis_auth
 * (the Redis 6 form names the user, which must be "default"). Without it,
 * what redis-server without a password answers: its default user takes any
 * password, no other user exists, and AUTH <pass> is a mistake it names.
 */
static const char *auth_error(const redis_client_t *c, const redis_req_t *r, uint32_t user_at,
                              uint32_t pass_at)
{
    const char *want = c->c.pool->conf->redis_auth;
    /* User names are case-sensitive: "Default" is another user. */
    bool default_user = user_at == 0 || arg_equals(&r->args[user_at], "default");
    if (want == NULL) {
        if (user_at == 0)
            return "-ERR AUTH <password> called without any password configured for the "
                   "default user. Are you sure your configuration is correct?\r\n";
        return default_user ? NULL
                            : "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    }
    bool ok = default_user && arg_equals(&r->args[pass_at], want);
    return ok ? NULL : "-ERR invalid password\r\n";
}

static void do_auth(redis_client_t *c, redis_req_t *r, uint32_t user_at, uint32_t pass_at)
{
    const char *err = auth_error(c, r, user_at, pass_at);
    set_authed(c, err == NULL); /* a failed AUTH logs out (twemproxy's rule) */
    if (err == NULL)
        reply_str(r, "+OK\r\n");
    else
        reply_error(r, err);
}

static void do_select(redis_client_t *c, redis_req_t *r)
{
    const redis_arg_t *a = &r->args[1];
    int db = c->c.pool->conf->redis_db;
    int64_t n;
    /* What is no int to redis-server ("x", "01", " 1") gets its errors. */
    if (a->val == NULL || !wn_resp_parse_int(a->val, a->len, &n)) {
        reply_error(r, "-ERR value is not an integer or out of range\r\n");
        return;
    }
    if (n < INT32_MIN || n > INT32_MAX) {
        reply_error(r, "-ERR value is out of range, value must between -2147483648 and "
                       "2147483647\r\n");
        return;
    }
    /* Clients believe they are in database 0 (twemproxy's model); the pool's
     * servers are all in redis_db. Either number names it. */
    if (n == 0 || n == db) {
        reply_str(r, "+OK\r\n");
        return;
    }
    char line[160];
    if (db == 0)
        snprintf(line, sizeof(line),
                 "-ERR walnut serves one database per pool (redis_db 0); SELECT 0 only\r\n");
    else
        snprintf(line, sizeof(line),
                 "-ERR walnut serves one database per pool (redis_db %d); SELECT 0 or %d only\r\n",
                 db, db);
    reply_error(r, line);
}

/* ---- HELLO and CLIENT --------------------------------------------------------- */

/* Client names: redis-server refuses spaces, newlines and other specials. */
static bool printable(const char *p, uint32_t len)
{
    for (uint32_t i = 0; i < len; i++)
        if (p[i] < '!' || p[i] > '~')
            return false;
    return true;
}

static int printable_piece(void *ctx, wn_buf_t *buf, uint32_t off, uint32_t len)
{
    (void)ctx;
    return printable(buf->data + off, len) ? 0 : -1;
}

/* Arg i's payload, read in place or, too long to copy, in the buffers it
 * arrived in. */
static bool name_ok(const redis_req_t *r, uint32_t i)
{
    const redis_arg_t *a = &r->args[i];
    if (a->val != NULL)
        return printable(a->val, a->len);
    return wn_redis_arg_pieces(r, i, a->hdr, a->len, printable_piece, NULL) == 0;
}

/* CLIENT SETNAME <name> and HELLO's SETNAME option: false when refused
 * (answered). An empty name clears it. */
static bool set_name(redis_client_t *c, redis_req_t *r, uint32_t at)
{
    const redis_arg_t *a = &r->args[at];
    if (a->len > WN_REDIS_MAX_KEY || (a->len > 0 && a->val == NULL)) {
        reply_error(r, "-ERR walnut keeps client names of up to 65536 bytes\r\n");
        return false;
    }
    if (!name_ok(r, at)) {
        reply_error(r, "-ERR Client names cannot contain spaces, newlines or special "
                       "characters.\r\n");
        return false;
    }
    char *name = NULL;
    if (a->len > 0 && (name = strndup(a->val, a->len)) == NULL) {
        wn_redis_fail(&r->r, WN_ENOMEM);
        return false;
    }
    /* Kept as long as the client: counted in what it holds. */
    wn_client_held_sub(&c->c, c->client_name != NULL ? strlen(c->client_name) : 0);
    wn_client_held_add(&c->c, a->len);
    free(c->client_name);
    c->client_name = name;
    return true;
}

/* HELLO [protover [AUTH user pass] [SETNAME name]]: the options in order, as
 * redis-server 7.0 takes them (a name is set even if a later option fails). */
static void do_hello(redis_client_t *c, redis_req_t *r)
{
    uint32_t i = 1;
    if (r->nargs > 1) {
        const redis_arg_t *v = &r->args[1];
        int64_t ver;
        if (v->val == NULL || !wn_resp_parse_int(v->val, v->len, &ver)) {
            reply_error(r, "-ERR Protocol version is not an integer or out of range\r\n");
            return;
        }
        if (ver != 2) {
            /* redis-server refuses all but 2 and 3; walnut speaks RESP2 only */
            reply_error(r, "-NOPROTO unsupported protocol version\r\n");
            return;
        }
        i = 2;
    }
    for (; i < r->nargs; i++) {
        if (wn_redis_arg_is(r, i, "AUTH") && i + 2 < r->nargs) {
            const char *err = auth_error(c, r, i + 1, i + 2);
            if (err != NULL) {
                reply_error(r, err);
                return;
            }
            set_authed(c, true);
            i += 2;
        } else if (wn_redis_arg_is(r, i, "SETNAME") && i + 1 < r->nargs) {
            if (!set_name(c, r, i + 1))
                return;
            i += 1;
        } else {
            reply_error_showing(r, "-ERR Syntax error in HELLO option '", &r->args[i], SIZE_MAX,
                                "'\r\n");
            return;
        }
    }
    if (!c->authed) {
        reply_error(r, "-NOAUTH HELLO must be called with the client already authenticated, "
                       "otherwise the HELLO AUTH <user> <pass> option can be used to "
                       "authenticate the client and select the RESP protocol version at the "
                       "same time\r\n");
        return;
    }
    char line[512];
    int n = snprintf(line, sizeof(line),
                     "*16\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n"
                     "$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:%llu\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n"
                     "$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n$5\r\nproxy\r\n$%zu\r\n"
                     "walnut %s\r\n",
                     (unsigned long long)c->id, strlen("walnut ") + strlen(WN_VERSION),
                     WN_VERSION);
    reply(r, line, (size_t)n);
}

/* The CLIENT subcommands walnut answers, with redis-server's arity for each
 * (SETINFO's from 7.2, which added it). */
static const struct client_sub {
    const char *name;
    uint32_t argc;
} client_subs[] = {
    {"getname", 2}, {"setname", 3}, {"id", 2}, {"info", 2}, {"setinfo", 4},
};

/* A subcommand walnut answers, with the wrong number of arguments:
 * redis-server's arity error names it "client|<sub>". */
static bool client_arity_refused(redis_req_t *r)
{
    for (size_t i = 0; i < WN_ARRAY_SIZE(client_subs); i++) {
        const struct client_sub *sub = &client_subs[i];
        if (!wn_redis_arg_is(r, 1, sub->name))
            continue;
        if (r->nargs == sub->argc)
            return false;
        char name[32], line[WN_RESP_ARITY_ERR_MAX];
        int len = snprintf(name, sizeof(name), "client|%s", sub->name);
        int n = wn_resp_compose_arity_error(line, sizeof(line), name, (size_t)len);
        reply_error_len(r, line, n > 0 ? (size_t)n : 0);
        return true;
    }
    return false;
}

/* An end of c's connection as redis-server writes it: "ip:port" ("[ip]:port"
 * for IPv6) of the client (peer) or of walnut; "path:0" for a unix socket. */
static void conn_addr(client_t *c, bool peer, char *out, size_t cap)
{
    snprintf(out, cap, "?:0");
    if (c->h.handle.type == UV_NAMED_PIPE) {
        char path[256];
        size_t len = sizeof(path);
        if (uv_pipe_getsockname(&c->h.pipe, path, &len) == 0)
            snprintf(out, cap, "%.*s:0", (int)len, path);
        return;
    }
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    int rc = peer ? uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len)
                  : uv_tcp_getsockname(&c->h.tcp, (struct sockaddr *)&ss, &len);
    if (rc == 0)
        wn_sockaddr_format(&ss, out, cap);
}

/*
 * CLIENT INFO: the client's connection to walnut, in redis-server 7.0's
 * fields and order, so client libraries that read them all (redis-py's
 * client_info) parse it. Fields a proxy has no counterpart for (sub, qbuf,
 * obl, ...) are 0; tot-mem is what walnut holds for the client; db is the
 * pool's redis_db; walnut adds proxy= and worker=. The name may be long.
 */
static void client_info(redis_client_t *c, redis_req_t *r)
{
    const char *name = c->client_name != NULL ? c->client_name : "";
    char addr[300], laddr[300];
    conn_addr(&c->c, true, addr, sizeof(addr));
    conn_addr(&c->c, false, laddr, sizeof(laddr));
    uv_os_fd_t fd = -1;
    (void)uv_fileno(&c->c.h.handle, &fd);
    uint64_t now = uv_now(&c->c.w->loop);
    uint64_t age = now > c->born_ms ? (now - c->born_ms) / 1000 : 0;
    size_t size = strlen(name) + sizeof(addr) + sizeof(laddr) + 400;
    char *text = malloc(size);
    if (text == NULL) {
        wn_redis_fail(&r->r, WN_ENOMEM);
        return;
    }
    int n = snprintf(text, size,
                     "id=%llu addr=%s laddr=%s fd=%d name=%s age=%llu idle=0 flags=%s db=%d "
                     "sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 "
                     "rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=%llu events=r cmd=client|info "
                     "user=default redir=-1 resp=2 proxy=walnut worker=%d\n",
                     (unsigned long long)c->id, addr, laddr, (int)fd, name, (unsigned long long)age,
                     c->c.h.handle.type == UV_NAMED_PIPE ? "U" : "N", c->c.pool->conf->redis_db,
                     (unsigned long long)c->c.held, c->c.w->id);
    reply_bulk(r, text, n > 0 && (size_t)n < size ? (size_t)n : 0);
    free(text);
}

static void do_client(redis_client_t *c, redis_req_t *r)
{
    char line[512];
    if (client_arity_refused(r))
        return;
    if (wn_redis_arg_is(r, 1, "SETNAME")) {
        if (set_name(c, r, 2))
            reply_str(r, "+OK\r\n");
    } else if (wn_redis_arg_is(r, 1, "GETNAME")) {
        if (c->client_name == NULL)
            reply_str(r, "$-1\r\n");
        else
            reply_bulk(r, c->client_name, strlen(c->client_name));
    } else if (wn_redis_arg_is(r, 1, "ID")) {
        int n = snprintf(line, sizeof(line), ":%llu\r\n", (unsigned long long)c->id);
        reply(r, line, (size_t)n);
    } else if (wn_redis_arg_is(r, 1, "SETINFO")) {
        /* What client library this is: checked as redis-server 7.2 checks
         * it, then kept nowhere. */
        if (!wn_redis_arg_is(r, 2, "LIB-NAME") && !wn_redis_arg_is(r, 2, "LIB-VER"))
            reply_error_showing(r, "-ERR Unrecognized option '", &r->args[2], 64, "'\r\n");
        else if (!name_ok(r, 3))
            reply_error_showing(r, "-ERR ", &r->args[2], 8,
                                " cannot contain spaces, newlines or special characters.\r\n");
        else
            reply_str(r, "+OK\r\n");
    } else if (wn_redis_arg_is(r, 1, "INFO")) {
        client_info(c, r);
    } else {
        reply_error_showing(r, "-ERR CLIENT ", &r->args[1], 64,
                            " is not supported by walnut: a client's connection to a server is "
                            "shared with other clients\r\n");
    }
}

/*
 * After a refused MULTI a client may go on as if in a transaction (redis-py
 * sends MULTI, the commands and EXEC in one write): run none of them, as
 * redis-server runs none of a transaction whose EXEC fails. EXEC (of any
 * arity) ends it with redis-server's EXECABORT, DISCARD with +OK, RESET (which ends a
 * transaction in redis-server) with its own refusal; QUIT still quits.
 * MULTI's error says so, for a client that reads it before going on.
 */
static void answer_in_refused_tx(redis_client_t *c, redis_req_t *r)
{
    const wn_rcmd_t *cmd = r->cmd;
    if (cmd != NULL && cmd->id == WN_RCMD_ID_RESET) {
        c->tx_refused = false;
        answer_refused(c, r);
    } else if (cmd != NULL && cmd->id == WN_RCMD_ID_DISCARD && wn_rcmd_argc_ok(cmd, r->nargs)) {
        c->tx_refused = false;
        reply_str(r, "+OK\r\n");
    } else if (cmd != NULL && cmd->id == WN_RCMD_ID_EXEC) {
        /* with the wrong arity too: redis-server's EXECABORT for that */
        c->tx_refused = false;
        if (wn_rcmd_argc_ok(cmd, r->nargs))
            reply_error(r, "-EXECABORT Transaction discarded because walnut refused its MULTI "
                           "(transactions need a dedicated server connection)\r\n");
        else
            answer_refused(c, r);
    } else {
        reply_error(r, "-ERR not run: walnut refused this connection's MULTI (transactions need "
                       "a dedicated server connection); EXEC or DISCARD ends it\r\n");
    }
}

void wn_redis_local(redis_client_t *c, redis_req_t *r)
{
    const wn_rcmd_t *cmd = r->cmd;
    /* QUIT reads none of its arguments (redis-server takes any): it quits */
    if (r->over_limit && (cmd == NULL || cmd->id != WN_RCMD_ID_QUIT)) {
        wn_redis_refuse_over_limit(r, false);
        return;
    }
    if (c->tx_refused && (cmd == NULL || cmd->id != WN_RCMD_ID_QUIT)) {
        answer_in_refused_tx(c, r);
        return;
    }
    if (cmd == NULL || !wn_rcmd_argc_ok(cmd, r->nargs) || cmd->cls == WN_RCMD_UNSUPPORTED ||
        wn_redis_needs_auth(c, cmd)) {
        /* what the client sends next belongs to a transaction it thinks open */
        c->tx_refused = cmd != NULL && cmd->id == WN_RCMD_ID_MULTI && c->authed &&
                        wn_rcmd_argc_ok(cmd, r->nargs);
        if (c->tx_refused)
            reply_error(r, "-ERR unsupported command 'multi': transactions need a dedicated "
                           "server connection; what follows is not run until EXEC or DISCARD\r\n");
        else
            answer_refused(c, r);
        return;
    }
    switch ((wn_rcmd_id_t)cmd->id) {
    case WN_RCMD_ID_PING:
        if (r->nargs > 2) {
            /* redis-server's table says -1, its code refuses a second arg */
            char line[WN_RESP_ARITY_ERR_MAX];
            int n = wn_resp_compose_arity_error(line, sizeof(line), "ping", 4);
            reply_error_len(r, line, n > 0 ? (size_t)n : 0);
        } else if (r->nargs == 1)
            reply_str(r, "+PONG\r\n");
        else
            reply_arg(r, 1);
        return;
    case WN_RCMD_ID_ECHO:
        reply_arg(r, 1);
        return;
    case WN_RCMD_ID_QUIT:
        /* +OK after every earlier reply, then the connection closes. */
        r->r.close_after = true;
        c->c.stop_parsing = true;
        reply_str(r, "+OK\r\n");
        return;
    case WN_RCMD_ID_AUTH:
        if (r->nargs == 2)
            do_auth(c, r, 0, 1);
        else if (r->nargs == 3)
            do_auth(c, r, 1, 2);
        else
            reply_error(r, "-ERR syntax error\r\n");
        return;
    case WN_RCMD_ID_SELECT:
        do_select(c, r);
        return;
    case WN_RCMD_ID_HELLO:
        do_hello(c, r);
        return;
    case WN_RCMD_ID_CLIENT:
        do_client(c, r);
        return;
    default:
        answer_refused(c, r);
        return;
    }
}
