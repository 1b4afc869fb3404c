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
#include <string.h>
#include <strings.h>

static const char NOAUTH[] = "-NOAUTH Authentication required\r\n";

static bool arg_is(const redis_req_t *r, uint32_t i, const char *word)
{
    const redis_arg_t *a = &r->args[i];
    return a->val != NULL && a->len == strlen(word) && strncasecmp(a->val, word, a->len) == 0;
}

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
static void reply_arg(redis_req_t *r, uint32_t i)
{
    const redis_arg_t *a = &r->args[i];
    for (uint32_t j = a->seg; j < a->seg + a->nsegs; j++) {
        const seg_t *sg = &r->r.out.v[j];
        if (wn_req_rsp_push(&r->r, sg->buf, sg->off, sg->len, false) < 0) {
            wn_redis_fail(&r->r, WN_ENOMEM);
            return;
        }
    }
    wn_req_out_written(&r->r); /* nothing goes to a server */
    wn_req_done(&r->r);
}

/* ---- errors for what walnut does not forward ------------------------------ */

static void answer_refused(redis_client_t *c, redis_req_t *r)
{
    char line[WN_RESP_UNKNOWN_CMD_MAX + WN_RESP_UNSUPPORTED_MAX];
    int n;
    if (r->cmd == NULL) {
        n = wn_resp_compose_unknown_cmd(line, sizeof(line), c->name, c->name_len, c->errarg,
                                        c->nerrargs);
    } else if (!wn_rcmd_argc_ok(r->cmd, r->nargs)) {
        n = wn_resp_compose_arity_error(line, sizeof(line), r->cmd->name, strlen(r->cmd->name));
    } else if (!c->authed) {
        n = (int)strlen(NOAUTH);
        memcpy(line, NOAUTH, (size_t)n);
    } else {
        n = wn_resp_compose_unsupported(line, sizeof(line), r->cmd);
    }
    wn_stat_add(WN_PSTAT(c->c.pool, request_errors), 1);
    reply(r, line, n > 0 ? (size_t)n : 0);
}

/* ---- AUTH and SELECT -------------------------------------------------------- */

static void set_authed(redis_client_t *c, bool ok)
{
    c->authed = ok || c->c.pool->conf->redis_auth == NULL;
    wn_resp_req_parser_set_unauth(&c->parser, !c->authed);
}

/* twemproxy checks AUTH itself against redis_auth; the Redis 6 form names
 * the user, which must be "default". */
static void do_auth(redis_client_t *c, redis_req_t *r, uint32_t user_at, uint32_t pass_at)
{
    const char *want = c->c.pool->conf->redis_auth;
    if (want == NULL) {
        reply_error(r, "-ERR AUTH <password> called without any password configured for the "
                       "default user. Are you sure your configuration is correct?\r\n");
        return;
    }
    const redis_arg_t *p = &r->args[pass_at];
    bool ok = (user_at == 0 || arg_is(r, user_at, "default")) && p->val != NULL &&
              p->len == strlen(want) && memcmp(p->val, want, p->len) == 0;
    set_authed(c, ok);
    if (ok)
        reply_str(r, "+OK\r\n");
    else
        reply_error(r, "-ERR invalid password\r\n");
}

static void do_select(redis_client_t *c, redis_req_t *r)
{
    const redis_arg_t *a = &r->args[1];
    int db = c->c.pool->conf->redis_db;
    char want[16];
    snprintf(want, sizeof(want), "%d", db);
    /* Clients believe they are in database 0 (twemproxy's model); the pool's
     * servers are all in redis_db. Either number names it. */
    if (a->val != NULL && ((a->len == 1 && a->val[0] == '0') ||
                           (a->len == strlen(want) && memcmp(a->val, want, a->len) == 0))) {
        reply_str(r, "+OK\r\n");
        return;
    }
    char line[160];
    snprintf(line, sizeof(line),
             "-ERR walnut serves one database per pool (redis_db %d); SELECT 0 or %d only\r\n",
             db, db);
    reply_error(r, line);
}

/* ---- HELLO and CLIENT --------------------------------------------------------- */

static void do_hello(redis_client_t *c, redis_req_t *r)
{
    uint32_t i = 1;
    if (r->nargs > 1) {
        const redis_arg_t *v = &r->args[1];
        if (v->val == NULL || v->len == 0 || v->len > 9 ||
            strspn(v->val, "0123456789") < v->len) {
            reply_error(r, "-ERR Protocol version is not an integer or out of range\r\n");
            return;
        }
        if (!(v->len == 1 && v->val[0] == '2')) {
            reply_error(r, "-NOPROTO unsupported protocol version\r\n");
            return;
        }
        i = 2;
    }
    for (; i < r->nargs; i++) {
        if (arg_is(r, i, "AUTH") && i + 2 < r->nargs) {
            const char *want = c->c.pool->conf->redis_auth;
            const redis_arg_t *p = &r->args[i + 2];
            bool ok = want != NULL && arg_is(r, i + 1, "default") && p->val != NULL &&
                      p->len == strlen(want) && memcmp(p->val, want, p->len) == 0;
            if (!ok) {
                reply_error(r, want == NULL ? "-ERR AUTH <password> called without any password "
                                              "configured for the default user. Are you sure "
                                              "your configuration is correct?\r\n"
                                            : "-ERR invalid password\r\n");
                return;
            }
            set_authed(c, true);
            i += 2;
        } else if (arg_is(r, i, "SETNAME") && i + 1 < r->nargs) {
            i += 1; /* kept below, once authenticated */
        } else {
            char line[160];
            snprintf(line, sizeof(line), "-ERR Syntax error in HELLO option '%.*s'\r\n",
                     (int)WN_MIN(r->args[i].len, 64u), r->args[i].val ? r->args[i].val : "");
            reply_error(r, line);
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

/* Client names: redis-server refuses spaces, newlines and other specials. */
static bool name_ok(const redis_arg_t *a)
{
    if (a->val == NULL)
        return false;
    for (uint32_t i = 0; i < a->len; i++)
        if (a->val[i] < '!' || a->val[i] > '~')
            return false;
    return true;
}

static void do_client(redis_client_t *c, redis_req_t *r)
{
    char line[512];
    if (arg_is(r, 1, "SETNAME") && r->nargs == 3) {
        if (!name_ok(&r->args[2])) {
            reply_error(r, "-ERR Client names cannot contain spaces, newlines or special "
                           "characters.\r\n");
            return;
        }
        free(c->client_name);
        c->client_name = r->args[2].len > 0 ? strndup(r->args[2].val, r->args[2].len) : NULL;
        reply_str(r, "+OK\r\n");
    } else if (arg_is(r, 1, "GETNAME") && r->nargs == 2) {
        if (c->client_name == NULL)
            reply_str(r, "$-1\r\n");
        else
            reply_bulk(r, c->client_name, strlen(c->client_name));
    } else if (arg_is(r, 1, "ID") && r->nargs == 2) {
        int n = snprintf(line, sizeof(line), ":%llu\r\n", (unsigned long long)c->id);
        reply(r, line, (size_t)n);
    } else if (arg_is(r, 1, "SETINFO") && r->nargs == 4 &&
               (arg_is(r, 2, "LIB-NAME") || arg_is(r, 2, "LIB-VER"))) {
        reply_str(r, "+OK\r\n"); /* what client library this is: nothing to keep */
    } else if (arg_is(r, 1, "INFO") && r->nargs == 2) {
        int n = snprintf(line, sizeof(line), "id=%llu name=%s db=0 proxy=walnut worker=%d\n",
                         (unsigned long long)c->id, c->client_name ? c->client_name : "",
                         c->c.w->id);
        reply_bulk(r, line, (size_t)n);
    } else {
        char name[WN_REDIS_NAME_MAX + 1];
        uint32_t len = r->args[1].val ? WN_MIN(r->args[1].len, WN_REDIS_NAME_MAX) : 0;
        memcpy(name, r->args[1].val ? r->args[1].val : "", len);
        name[len] = '\0';
        snprintf(line, sizeof(line),
                 "-ERR CLIENT %s is not supported by walnut: a client's connection to a server "
                 "is shared with other clients\r\n",
                 name);
        reply_error(r, line);
    }
}

void wn_redis_local(redis_client_t *c, redis_req_t *r)
{
    const wn_rcmd_t *cmd = r->cmd;
    if (cmd == NULL || !wn_rcmd_argc_ok(cmd, r->nargs) || cmd->cls == WN_RCMD_UNSUPPORTED ||
        (!c->authed && cmd->id != WN_RCMD_ID_AUTH && cmd->id != WN_RCMD_ID_HELLO &&
         cmd->id != WN_RCMD_ID_QUIT)) {
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
