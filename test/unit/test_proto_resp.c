/*
 * test_proto_resp.c: the RESP request and reply parsers and the composers.
 * Golden tables played as a worker plays a stream (line tokens, then
 * payloads taken by count), with redis-server 7.0.15's measured answer
 * beside the requests (raw sockets, fresh connection per row; the unknown
 * command rows double as a check of wn_resp_compose_unknown_cmd); the same
 * streams revealed split at every point and byte by byte from exactly-sized
 * heap copies (so ASan catches any over-read); limits at their edges; the
 * composers.
 */
#include "walnut/proto_resp.h"

#include "walnut/core.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- helpers ----------------------------------------------------------- */

/* A heap copy of exactly n bytes (none readable past n under ASan). */
static char *exact_copy(const char *s, size_t n)
{
    char *b = malloc(n == 0 ? 1 : n);
    assert_non_null(b);
    if (n > 0)
        memcpy(b, s, n);
    return b;
}

/* What a stream did, as text: tokens separated by spaces, bytes escaped. */
typedef struct trace {
    char s[8192];
    size_t len;
} trace_t;

static void tr_add(trace_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tr_add(trace_t *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->s + t->len, sizeof(t->s) - t->len, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && t->len + (size_t)n < sizeof(t->s));
    t->len += (size_t)n;
}

/* Bytes as C would write them: \r \n \t \\ and \xHH for the unprintable. */
static void tr_bytes(trace_t *t, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r')
            tr_add(t, "\\r");
        else if (c == '\n')
            tr_add(t, "\\n");
        else if (c == '\t')
            tr_add(t, "\\t");
        else if (c == '\\')
            tr_add(t, "\\\\");
        else if (c < 0x20 || c >= 0x7f)
            tr_add(t, "\\x%02x", c);
        else
            tr_add(t, "%c", c);
    }
}

static void tr_sep(trace_t *t)
{
    if (t->len > 0)
        tr_add(t, " ");
}

static void assert_trace(const trace_t *t, const char *want, const char *in, size_t len)
{
    if (strcmp(t->s, want) != 0) {
        trace_t e = {{0}, 0};
        tr_bytes(&e, in, len);
        print_error("input: \"%s\"\n got: %s\nwant: %s\n", e.s, t->s, want);
        fail();
    }
}

/* ---- playing a client stream ------------------------------------------- */

/* The args of the last request, as much of them as an unknown-command error
 * shows (kept to compare our composed error with redis-server's). */
typedef struct last_req {
    char bytes[WN_RESP_UNKNOWN_ARGS + 1][WN_RESP_UNKNOWN_ARG_BYTES];
    wn_resp_str_t args[WN_RESP_UNKNOWN_ARGS + 1]; /* [0]: the name */
    size_t n;
} last_req_t;

static void last_add(last_req_t *l, const char *s, size_t len)
{
    if (l->n >= WN_ARRAY_SIZE(l->args))
        return;
    size_t keep = WN_MIN(len, (size_t)WN_RESP_UNKNOWN_ARG_BYTES);
    memcpy(l->bytes[l->n], s, keep);
    l->args[l->n].s = l->bytes[l->n];
    l->args[l->n].len = keep;
    l->n++;
}

/* Reveal bytes the way a socket might: `first` at once, then `step` more
 * each time the parser wants more (0: all the rest). */
typedef struct reveal {
    size_t len, vis, step;
} reveal_t;

static bool reveal_more(reveal_t *r)
{
    if (r->vis >= r->len)
        return false;
    r->vis = r->step == 0 ? r->len : WN_MIN(r->len, r->vis + r->step);
    return true;
}

/* One INLINE token: its args, unescaped, each in brackets. */
static void trace_inline(trace_t *t, const char *line, const wn_resp_req_tok_t *tok, last_req_t *l)
{
    tr_add(t, "I");
    uint32_t cursor = 0, count = 0;
    wn_resp_inline_arg_t a;
    l->n = 0;
    while (wn_resp_inline_next(line, tok, &cursor, &a)) {
        char *v = malloc(a.raw.len + 1);
        assert_non_null(v);
        assert_int_equal(wn_resp_inline_unescape(line, &a, v), a.len);
        assert_true(a.len <= a.raw.len);
        assert_true(a.raw.off + a.raw.len <= tok->content_len);
        if (a.direct) {
            assert_int_equal(a.val.len, a.len);
            assert_memory_equal(line + a.val.off, v, a.len);
        }
        tr_add(t, "[");
        tr_bytes(t, v, a.len);
        tr_add(t, "]");
        last_add(l, v, a.len);
        free(v);
        count++;
    }
    assert_int_equal(count, tok->nargs);
}

/*
 * Play a client stream as the worker does: frame a line, and after a BULK
 * take its payload by count. The trace: "*N" arrays, "$len:payload" bulks,
 * "I[arg]..." inline requests, "E" empty ones, "!<reply>" a protocol error,
 * "?" when the stream ends in an incomplete line or payload.
 */
static void play_req(const char *in, size_t len, const wn_resp_limits_t *lim, size_t first,
                     size_t step, trace_t *t, last_req_t *l)
{
    wn_resp_req_parser_t p;
    wn_resp_req_parser_init(&p, lim);
    reveal_t r = {len, WN_MIN(first, len), step};
    size_t pos = 0;
    uint32_t want_arg = 0;
    memset(t, 0, sizeof(*t));
    for (;;) {
        char *b = exact_copy(in + pos, r.vis - pos);
        wn_resp_req_tok_t tok;
        int rc = wn_resp_request_next(&p, b, r.vis - pos, &tok);
        if (rc == WN_EAGAIN) {
            free(b);
            if (reveal_more(&r))
                continue;
            if (pos < len || p.args_left > 0) {
                tr_sep(t);
                tr_add(t, "?");
            }
            return;
        }
        tr_sep(t);
        if (rc < 0) {
            free(b);
            assert_int_equal(rc, WN_EPROTO);
            char e[WN_RESP_REQERR_MAX];
            int n = wn_resp_req_error(&p, e, sizeof e);
            assert_true(n > 2 && memcmp(e + n - 2, "\r\n", 2) == 0);
            tr_add(t, "!");
            tr_bytes(t, e, (size_t)n - 2);
            return;
        }
        assert_int_equal(rc, tok.line_len);
        switch (tok.type) {
        case WN_RESP_REQ_EMPTY:
            tr_add(t, "E");
            break;
        case WN_RESP_REQ_ARRAY:
            assert_true(tok.nargs >= 1);
            tr_add(t, "*%u", tok.nargs);
            want_arg = 0;
            l->n = 0;
            break;
        case WN_RESP_REQ_INLINE:
            trace_inline(t, b, &tok, l);
            break;
        case WN_RESP_REQ_BULK:
            assert_int_equal(tok.arg, want_arg);
            assert_int_equal(tok.last, tok.arg + 1 == tok.nargs);
            want_arg++;
            tr_add(t, "$%llu", (unsigned long long)tok.bulk_len);
            break;
        }
        free(b);
        pos += (size_t)rc;
        if (tok.type != WN_RESP_REQ_BULK)
            continue;
        /* the payload and its "\r\n", by count */
        while (r.vis - pos < tok.bulk_len + 2 && reveal_more(&r))
            ;
        if (r.vis - pos < tok.bulk_len + 2) {
            tr_add(t, " ?");
            return;
        }
        tr_add(t, ":");
        tr_bytes(t, in + pos, tok.bulk_len);
        last_add(l, in + pos, tok.bulk_len);
        size_t end = pos + tok.bulk_len;
        if (wn_resp_request_bulk_end(&p, in[end], in[end + 1]) != 0) {
            char e[WN_RESP_REQERR_MAX];
            int n = wn_resp_req_error(&p, e, sizeof e);
            tr_add(t, " !");
            tr_bytes(t, e, (size_t)n - 2);
            return;
        }
        pos = end + 2;
    }
}

/* ---- request golden table ---------------------------------------------- */

typedef struct req_case {
    const char *in;
    size_t len;
    const char *trace;
    /* What redis-server 7.0.15 sent back for `in` on a fresh connection
     * (then closing it after a protocol error). "" means nothing (it waits
     * for more); NULL means not recorded: walnut differs on purpose (see the
     * row's comment) or the answer is the command's business. */
    const char *redis;
} req_case_t;

#define IN(s) .in = (s), .len = sizeof(s) - 1

#define PROTO "-ERR Protocol error: "
#define E_MBULK PROTO "invalid multibulk length"
#define E_BULK PROTO "invalid bulk length"
#define E_INLINE_BIG PROTO "too big inline request"
#define E_MBULK_BIG PROTO "too big mbulk count string"
#define E_BULK_BIG PROTO "too big bulk count string"
#define E_QUOTES PROTO "unbalanced quotes in request"
#define E_DOLLAR(c) PROTO "expected '$', got '" c "'"
#define E_CRLF PROTO "bulk data not followed by CRLF"
#define UNKNOWN(name, args)                                                                        \
    "-ERR unknown command '" name "', with args beginning with: " args "\r\n"

#define PING "*1\r\n$4\r\nPING\r\n"
#define PONG "+PONG\r\n"
#define D10 "1111111111"
#define D70 D10 D10 D10 D10 D10 D10 D10
#define X10 "xxxxxxxxxx"
#define X40 X10 X10 X10 X10
#define X50 X10 X10 X10 X10 X10
#define X200 X50 X50 X50 X50
#define X128 X50 X50 X10 X10 "xxxxxxxx"
#define Y10 "yyyyyyyyyy"
#define Y50 Y10 Y10 Y10 Y10 Y10
#define Y200 Y50 Y50 Y50 Y50
#define Y128 Y50 Y50 Y10 Y10 "yyyyyyyy"
#define A10 "aaaaaaaaaa"
#define A60 A10 A10 A10 A10 A10 A10
#define A125 A60 A60 "aaaaa"
#define A126 A125 "a"
#define B60 "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define C60 "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"

/* clang-format off */
static const req_case_t req_cases[] = {
    /* multibulk */
    {IN(PING), "*1 $4:PING", PONG},
    {IN("*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n"), "*2 $4:ECHO $5:hello", "$5\r\nhello\r\n"},
    {IN("*2\r\n$4\r\nECHO\r\n$0\r\n\r\n"), "*2 $4:ECHO $0:", "$0\r\n\r\n"},
    {IN("*2\r\n$4\r\nECHO\r\n$4\r\na\r\nb\r\n"), "*2 $4:ECHO $4:a\\r\\nb", "$4\r\na\r\nb\r\n"},
    {IN("*2\r\n$4\r\nECHO\r\n$3\r\n\0\xff*\r\n"), "*2 $4:ECHO $3:\\x00\\xff*", "$3\r\n\0\xff*\r\n"},
    {IN(PING PING), "*1 $4:PING *1 $4:PING", PONG PONG},
    {IN("*1\r\n$0\r\n\r\n"), "*1 $0:", UNKNOWN("", "")},
    {IN("*3\r\n$3\r\nFoO\r\n$1\r\na\r\n$1\r\nb\r\n"), "*3 $3:FoO $1:a $1:b", UNKNOWN("FoO", "'a' 'b' ")},
    /* empty requests: no reply at all */
    {IN("*0\r\n" PING), "E *1 $4:PING", PONG},
    {IN("*-1\r\n" PING), "E *1 $4:PING", PONG},
    {IN("*-2\r\n"), "E", ""},
    {IN("*-2147483649\r\n" PING), "E *1 $4:PING", PONG},
    {IN("*-9223372036854775808\r\n" PING), "E *1 $4:PING", PONG},
    {IN("*-9223372036854775809\r\n" PING), "!" E_MBULK, E_MBULK "\r\n"},
    /* the count: strict decimal within the limit */
    {IN("*-0\r\n" PING), "!" E_MBULK, E_MBULK "\r\n"},
    {IN("*x\r\n"), "!" E_MBULK, E_MBULK "\r\n"},
    {IN("*\r\n"), "!" E_MBULK, E_MBULK "\r\n"},
    {IN("*+1\r\n$4\r\nPING\r\n"), "!" E_MBULK, E_MBULK "\r\n"},
    {IN("*01\r\n$4\r\nPING\r\n"), "!" E_MBULK, E_MBULK "\r\n"},
    {IN("* 1\r\n$4\r\nPING\r\n"), "!" E_MBULK, E_MBULK "\r\n"},
    {IN("*1 \r\n$4\r\nPING\r\n"), "!" E_MBULK, E_MBULK "\r\n"},
    {IN("*1\n$4\r\nPING\r\n"), "!" E_MBULK, E_MBULK "\r\n"},
    {IN("*2147483648\r\n"), "!" E_MBULK, E_MBULK "\r\n"},
    {IN("*99999999999999999999\r\n"), "!" E_MBULK, E_MBULK "\r\n"},
    /* redis-server 7.0 takes counts up to 2^31-1 (and waits for the args);
     * walnut's default max_args is 1M */
    {IN("*1048576\r\n"), "*1048576 ?", ""},
    {IN("*1048577\r\n"), "!" E_MBULK, NULL},
    /* each arg: "$len" */
    {IN("*1\r\nx\r\n"), "*1 !" E_DOLLAR("x"), E_DOLLAR("x") "\r\n"},
    {IN("*1\r\n\x01\r\n"), "*1 !" E_DOLLAR("\\x01"), E_DOLLAR("\x01") "\r\n"},
    {IN("*1\r\n\r\n"), "*1 !" E_DOLLAR(" "), E_DOLLAR(" ") "\r\n"},
    {IN("*1\r\n*1\r\n"), "*1 !" E_DOLLAR("*"), E_DOLLAR("*") "\r\n"},
    {IN("*2\r\n$4\r\nECHO\r\n*1\r\n"), "*2 $4:ECHO !" E_DOLLAR("*"), E_DOLLAR("*") "\r\n"},
    {IN("*1\r\nxyz"), "*1 ?", ""},
    {IN("*1\r\n$x\r\n"), "*1 !" E_BULK, E_BULK "\r\n"},
    {IN("*1\r\n$-1\r\n"), "*1 !" E_BULK, E_BULK "\r\n"},
    {IN("*1\r\n$-0\r\n"), "*1 !" E_BULK, E_BULK "\r\n"},
    {IN("*1\r\n$-2\r\n"), "*1 !" E_BULK, E_BULK "\r\n"},
    {IN("*1\r\n$+4\r\nPING\r\n"), "*1 !" E_BULK, E_BULK "\r\n"},
    {IN("*1\r\n$04\r\nPING\r\n"), "*1 !" E_BULK, E_BULK "\r\n"},
    {IN("*1\r\n$ 4\r\nPING\r\n"), "*1 !" E_BULK, E_BULK "\r\n"},
    {IN("*1\r\n$4 \r\nPING\r\n"), "*1 !" E_BULK, E_BULK "\r\n"},
    {IN("*1\r\n$\r\nPING\r\n"), "*1 !" E_BULK, E_BULK "\r\n"},
    {IN("*1\r\n$9223372036854775808\r\n"), "*1 !" E_BULK, E_BULK "\r\n"},
    {IN("*1\r\n$536870913\r\n"), "*1 !" E_BULK, E_BULK "\r\n"},
    {IN("*1\r\n$536870912\r\n"), "*1 $536870912 ?", ""},
    {IN("*1\r\n$4\r\nPI"), "*1 $4 ?", ""},
    /* walnut wants "\r\n" where redis-server skips two bytes unseen */
    {IN("*1\rx$4\r\nPING\r\n"), "!" E_MBULK, PONG},
    {IN("*1\r\n$4\rxPING\r\n"), "*1 !" E_BULK, PONG},
    {IN("*1\r\n$4\r\nPINGxx" PING), "*1 $4:PING !" E_CRLF, PONG PONG},
    /* a NUL hides the line's end: redis-server and walnut wait until 64 KiB
     * (test_request_limits) */
    {IN("*1\0\r\n" PING), "?", ""},
    {IN("*1\r\n$\0" "4\r\nPING\r\n"), "*1 ?", ""},
    {IN("*1\0\r\n" PING PING PING PING PING), "?", ""},
    /* no "\r" yet: both wait, until 64 KiB; a number too long to be one */
    {IN("*" D70), "?", ""},
    {IN("*1\r\n$" D70), "*1 ?", ""},
    {IN("*" D70 "\r\n"), "!" E_MBULK, E_MBULK "\r\n"},
    {IN("*1\r\n$" D70 "\r\n"), "*1 !" E_BULK, E_BULK "\r\n"},

    /* inline */
    {IN("PING\r\n"), "I[PING]", PONG},
    {IN("PING\n"), "I[PING]", PONG},
    {IN("ping\r\n"), "I[ping]", PONG},
    {IN("PING\nPING\r\n"), "I[PING] I[PING]", PONG PONG},
    {IN("PING\r\n" PING), "I[PING] *1 $4:PING", PONG PONG},
    {IN("PING\r\r\n"), "I[PING]", PONG},
    {IN("PING"), "?", ""},
    {IN("\r\nPING\r\n"), "E I[PING]", PONG},
    {IN("\nPING\n"), "E I[PING]", PONG},
    {IN(" \t \r\nPING\r\n"), "E I[PING]", PONG},
    {IN("\x0b\r\nPING\r\n"), "E I[PING]", PONG},
    {IN("\r\r\nPING\r\n"), "E I[PING]", PONG},
    {IN("ECHO hello\r\n"), "I[ECHO][hello]", "$5\r\nhello\r\n"},
    {IN("FOO a b\r\n"), "I[FOO][a][b]", UNKNOWN("FOO", "'a' 'b' ")},
    {IN(" *1\r\n"), "I[*1]", UNKNOWN("*1", "")},
    {IN("\"\"\r\n"), "I[]", UNKNOWN("", "")},
    {IN("\"\" a\r\n"), "I[][a]", UNKNOWN("", "'a' ")},
    /* sdssplitargs: quotes and escapes */
    {IN("X \"a b\"\r\n"), "I[X][a b]", UNKNOWN("X", "'a b' ")},
    {IN("X \"\\x41\\x4a\\xzz\"\r\n"), "I[X][AJxzz]", UNKNOWN("X", "'AJxzz' ")},
    {IN("X \"\\x4\"\r\n"), "I[X][x4]", UNKNOWN("X", "'x4' ")},
    {IN("X \"\\x\"\r\n"), "I[X][x]", UNKNOWN("X", "'x' ")},
    {IN("X \"\\x4g\"\r\n"), "I[X][x4g]", UNKNOWN("X", "'x4g' ")},
    {IN("X \"\\x7F\\xff\\xFf\"\r\n"), "I[X][\\x7f\\xff\\xff]", UNKNOWN("X", "'\x7f\xff\xff' ")},
    {IN("X \"\\q\\\"\\\\\"\r\n"), "I[X][q\"\\\\]", UNKNOWN("X", "'q\"\\' ")},
    {IN("X \"a\\nb\\r\\tc\"\r\n"), "I[X][a\\nb\\r\\tc]", UNKNOWN("X", "'a b \tc' ")},
    {IN("X \"\\a\\b\"\r\n"), "I[X][\\x07\\x08]", UNKNOWN("X", "'\a\b' ")},
    {IN("X 'a\\'b'\r\n"), "I[X][a'b]", UNKNOWN("X", "'a'b' ")},
    {IN("X 'a\\nb'\r\n"), "I[X][a\\\\nb]", UNKNOWN("X", "'a\\nb' ")},
    {IN("X 'a\\\\b'\r\n"), "I[X][a\\\\\\\\b]", UNKNOWN("X", "'a\\\\b' ")},
    {IN("X 'a\"b'\r\n"), "I[X][a\"b]", UNKNOWN("X", "'a\"b' ")},
    {IN("X a'b c'\r\n"), "I[X][ab c]", UNKNOWN("X", "'ab c' ")},
    {IN("X \\\"a\"\r\n"), "I[X][\\\\a]", UNKNOWN("X", "'\\a' ")},
    {IN("X \"\" ''\r\n"), "I[X][][]", UNKNOWN("X", "'' '' ")},
    {IN("X \"a\"\tb\r\n"), "I[X][a][b]", UNKNOWN("X", "'a' 'b' ")},
    {IN("X \"a\"\x0b" "b\r\n"), "I[X][a][b]", UNKNOWN("X", "'a' 'b' ")},
    {IN("X \"a\"  \"b\"\r\n"), "I[X][a][b]", UNKNOWN("X", "'a' 'b' ")},
    {IN("X \"a\"\rb\r\n"), "I[X][a][b]", UNKNOWN("X", "'a' 'b' ")},
    /* white space: \v and \f separate args only before one starts */
    {IN("X a\tb\x0b" "c\x0c" "d\r\n"), "I[X][a][b\\x0bc\\x0cd]", UNKNOWN("X", "'a' 'b\x0b" "c\x0c" "d' ")},
    {IN("X \x0b" "a\r\n"), "I[X][a]", UNKNOWN("X", "'a' ")},
    {IN("X a\rb\r\n"), "I[X][a][b]", UNKNOWN("X", "'a' 'b' ")},
    {IN("X\r\r\n"), "I[X]", UNKNOWN("X", "")},
    {IN("X x\\ny\r\n"), "I[X][x\\\\ny]", UNKNOWN("X", "'x\\ny' ")},
    /* unbalanced quotes */
    {IN("X \"a\r\n"), "!" E_QUOTES, E_QUOTES "\r\n"},
    {IN("X 'a\r\n"), "!" E_QUOTES, E_QUOTES "\r\n"},
    {IN("X a\"b c\"d\r\n"), "!" E_QUOTES, E_QUOTES "\r\n"},
    {IN("X \"a\"b\r\n"), "!" E_QUOTES, E_QUOTES "\r\n"},
    {IN("X 'a'b\r\n"), "!" E_QUOTES, E_QUOTES "\r\n"},
    {IN("X a\"\r\n"), "!" E_QUOTES, E_QUOTES "\r\n"},
    {IN("X \"\\\r\n"), "!" E_QUOTES, E_QUOTES "\r\n"},
    {IN("X \"a\\\"\r\n"), "!" E_QUOTES, E_QUOTES "\r\n"},
    {IN("X 'a\\\r\n"), "!" E_QUOTES, E_QUOTES "\r\n"},
    {IN("PING \"a\r\n"), "!" E_QUOTES, E_QUOTES "\r\n"},
    /* a NUL hides the "\n" */
    {IN("PING\0x\r\n"), "?", ""},
    {IN("\0\r\n"), "?", ""},

    /* unknown commands: how redis-server shows the name and args */
    {IN("*1\r\n$200\r\n" X200 "\r\n"), "*1 $200:" X200, UNKNOWN(X128, "")},
    {IN("*2\r\n$3\r\nfoo\r\n$200\r\n" Y200 "\r\n"), "*2 $3:foo $200:" Y200, UNKNOWN("foo", "'" Y128 "' ")},
    {IN("*4\r\n$3\r\nfoo\r\n$60\r\n" A60 "\r\n$60\r\n" B60 "\r\n$60\r\n" C60 "\r\n"),
     "*4 $3:foo $60:" A60 " $60:" B60 " $60:" C60, UNKNOWN("foo", "'" A60 "' '" B60 "' 'cc' ")},
    {IN("*2\r\n$3\r\nfoo\r\n$126\r\n" A126 "\r\n"), "*2 $3:foo $126:" A126, UNKNOWN("foo", "'" A126 "' ")},
    {IN("*3\r\n$3\r\nfoo\r\n$125\r\n" A125 "\r\n$1\r\nb\r\n"), "*3 $3:foo $125:" A125 " $1:b", UNKNOWN("foo", "'" A125 "' ")},
    {IN("*3\r\n$3\r\nfoo\r\n$4\r\na\r\nb\r\n$3\r\nc\nd\r\n"), "*3 $3:foo $4:a\\r\\nb $3:c\\nd", UNKNOWN("foo", "'a  b' 'c d' ")},
    {IN("*1\r\n$4\r\nfo\ro\r\n"), "*1 $4:fo\\ro", UNKNOWN("fo o", "")},
    {IN("*1\r\n$6\r\n\r\nfoo\n\r\n"), "*1 $6:\\r\\nfoo\\n", UNKNOWN("  foo ", "")},
    {IN("*2\r\n$3\r\nfoo\r\n$3\r\n\0\x01\xff\r\n"), "*2 $3:foo $3:\\x00\\x01\\xff", UNKNOWN("foo", "'' ")},
    {IN("*2\r\n$3\r\nfoo\r\n$3\r\n\x01\xff\x7f\r\n"), "*2 $3:foo $3:\\x01\\xff\\x7f", UNKNOWN("foo", "'\x01\xff\x7f' ")},
    {IN("*1\r\n$3\r\nf\0o\r\n"), "*1 $3:f\\x00o", UNKNOWN("f", "")},
    {IN("*2\r\n$130\r\n" X128 "xx\r\n$1\r\na\r\n"), "*2 $130:" X128 "xx $1:a", UNKNOWN(X128, "'a' ")},
    {IN("*21\r\n$3\r\nfoo\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n"
        "$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n"
        "$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n"),
     "*21 $3:foo $1:a $1:a $1:a $1:a $1:a $1:a $1:a $1:a $1:a $1:a $1:a $1:a $1:a $1:a $1:a $1:a $1:a $1:a $1:a $1:a",
     UNKNOWN("foo", "'a' 'a' 'a' 'a' 'a' 'a' 'a' 'a' 'a' 'a' 'a' 'a' 'a' 'a' 'a' 'a' 'a' 'a' 'a' 'a' ")},
};
/* clang-format on */

static void test_request_golden(void **state)
{
    (void)state;
    for (size_t i = 0; i < WN_ARRAY_SIZE(req_cases); i++) {
        const req_case_t *c = &req_cases[i];
        trace_t t;
        last_req_t l = {.n = 0};
        play_req(c->in, c->len, NULL, c->len, 0, &t, &l);
        assert_trace(&t, c->trace, c->in, c->len);
        if (c->redis == NULL)
            continue;
        /* a protocol error ends the trace with redis-server's very line */
        const char *bang = strrchr(c->trace, '!');
        if (bang != NULL && strncmp(c->redis, "-ERR Protocol", 13) == 0) {
            trace_t want = {{0}, 0};
            tr_bytes(&want, c->redis, strlen(c->redis) - 2);
            assert_string_equal(bang + 1, want.s);
        }
        /* an unknown command: compose the error from what we parsed */
        if (strncmp(c->redis, "-ERR unknown command", 20) == 0) {
            char e[WN_RESP_UNKNOWN_CMD_MAX];
            assert_true(l.n >= 1);
            int n = wn_resp_compose_unknown_cmd(e, sizeof e, l.args[0].s, l.args[0].len, l.args + 1,
                                                l.n - 1);
            assert_int_equal(n, strlen(c->redis));
            assert_memory_equal(e, c->redis, (size_t)n);
        }
    }
}

/* Every row again, revealed in two pieces split at every point, and byte by
 * byte: the same trace, from exactly-sized copies. */
static void test_request_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < WN_ARRAY_SIZE(req_cases); i++) {
        const req_case_t *c = &req_cases[i];
        trace_t t;
        last_req_t l;
        for (size_t k = 0; k <= c->len; k++) {
            play_req(c->in, c->len, NULL, k, 0, &t, &l);
            assert_trace(&t, c->trace, c->in, c->len);
        }
        play_req(c->in, c->len, NULL, 0, 1, &t, &l);
        assert_trace(&t, c->trace, c->in, c->len);
        play_req(c->in, c->len, NULL, 1, 3, &t, &l);
        assert_trace(&t, c->trace, c->in, c->len);
    }
}

/* One call on `s` with fresh state and limits `lim`. */
static int req_once(const char *s, size_t n, const wn_resp_limits_t *lim, wn_resp_req_tok_t *tok,
                    wn_resp_req_parser_t *out)
{
    wn_resp_req_parser_t p;
    wn_resp_req_parser_init(&p, lim);
    char *b = exact_copy(s, n);
    int rc = wn_resp_request_next(&p, b, n, tok);
    free(b);
    if (out != NULL)
        *out = p;
    return rc;
}

static void assert_req_err(const char *s, size_t n, const wn_resp_limits_t *lim,
                           wn_resp_req_err_t err)
{
    wn_resp_req_tok_t tok;
    wn_resp_req_parser_t p;
    assert_int_equal(req_once(s, n, lim, &tok, &p), WN_EPROTO);
    assert_int_equal(p.err, err);
}

/* A parser about to read a "*N" line (lead 0) or, inside "*1", a "$N" one. */
static void parser_at_count_line(wn_resp_req_parser_t *p, int lead)
{
    wn_resp_req_tok_t tok;
    wn_resp_req_parser_init(p, NULL);
    if (lead)
        assert_int_equal(wn_resp_request_next(p, "*1\r\n", 4, &tok), 4);
}

/* line (no "\r" that counts in its first 64 KiB + 1 bytes) waits for
 * 64 KiB, and is too big one byte later. */
static void too_big_past_64k(const char *line, int lead, wn_resp_req_err_t big_err)
{
    wn_resp_req_parser_t p;
    wn_resp_req_tok_t tok;
    parser_at_count_line(&p, lead);
    assert_int_equal(wn_resp_request_next(&p, line, WN_RESP_MAX_INLINE, &tok), WN_EAGAIN);
    assert_int_equal(wn_resp_request_next(&p, line, WN_RESP_MAX_INLINE + 1, &tok), WN_EPROTO);
    assert_int_equal(p.err, big_err);
}

static void test_request_limits(void **state)
{
    (void)state;
    wn_resp_req_tok_t tok;
    wn_resp_limits_t lim = {.max_args = 3, .max_bulk = 10, .max_inline = 16, .max_line = 32};

    /* args: max and max + 1 */
    assert_int_equal(req_once("*3\r\n", 4, &lim, &tok, NULL), 4);
    assert_int_equal(tok.nargs, 3);
    assert_req_err("*4\r\n", 4, &lim, WN_RESP_REQERR_MBULK_LEN);

    /* counts and lengths of 18 to 20 digits, around INT64_MAX: refused,
     * never wrapped into a negative count (an empty request) or length */
    static const char *const wide[] = {"999999999999999999", "9223372036854775807",
                                       "9223372036854775808", "18446744073709551617",
                                       "99999999999999999999"};
    for (size_t i = 0; i < WN_ARRAY_SIZE(wide); i++) {
        char hl[40];
        int hn = snprintf(hl, sizeof hl, "*%s\r\n", wide[i]);
        assert_req_err(hl, (size_t)hn, NULL, WN_RESP_REQERR_MBULK_LEN);
        wn_resp_req_parser_t hp;
        wn_resp_req_parser_init(&hp, NULL);
        assert_int_equal(wn_resp_request_next(&hp, "*1\r\n", 4, &tok), 4);
        hn = snprintf(hl, sizeof hl, "$%s\r\n", wide[i]);
        assert_int_equal(wn_resp_request_next(&hp, hl, (size_t)hn, &tok), WN_EPROTO);
        assert_int_equal(hp.err, WN_RESP_REQERR_BULK_LEN);
    }

    /* bulk: max and max + 1 */
    wn_resp_req_parser_t p;
    wn_resp_req_parser_init(&p, &lim);
    assert_int_equal(wn_resp_request_next(&p, "*2\r\n", 4, &tok), 4);
    assert_int_equal(wn_resp_request_next(&p, "$10\r\n", 5, &tok), 5);
    assert_int_equal(tok.bulk_len, 10);
    assert_int_equal(wn_resp_request_next(&p, "$11\r\n", 5, &tok), WN_EPROTO);
    assert_int_equal(p.err, WN_RESP_REQERR_BULK_LEN);

    /* "*" lines: the "\r" must come within max_inline bytes, or max_line - 2
     * where that is more (here); up to that many without it are merely
     * incomplete */
    char line[64];
    memset(line, '1', sizeof line);
    line[0] = '*';
    assert_int_equal(req_once(line, 30, &lim, &tok, NULL), WN_EAGAIN);
    assert_req_err(line, 31, &lim, WN_RESP_REQERR_MBULK_TOO_BIG);
    memcpy(line + 30, "\r\n", 2); /* a 32-byte line: framed, then its count refused */
    assert_req_err(line, 32, &lim, WN_RESP_REQERR_MBULK_LEN);
    memset(line, '1', sizeof line);
    line[0] = '*';
    memcpy(line + 31, "\r\n", 2); /* 33 bytes */
    assert_req_err(line, 33, &lim, WN_RESP_REQERR_MBULK_TOO_BIG);
    /* the longest valid lines fit the smallest max_line */
    wn_resp_limits_t tiny = {.max_line = 1};
    assert_int_equal(wn_resp_limits_resolve(&tiny).max_line, WN_RESP_LINE_MIN);
    assert_int_equal(req_once("*-9223372036854775808\r\n", 23, &tiny, &tok, NULL), 23);
    assert_int_equal(tok.type, WN_RESP_REQ_EMPTY);
    wn_resp_req_parser_init(&p, &tiny);
    assert_int_equal(wn_resp_request_next(&p, "*1\r\n", 4, &tok), 4);
    assert_int_equal(wn_resp_request_next(&p, "$536870912\r\n", 12, &tok), 12);

    /* the defaults: a "*N" or "$N" line may run to 64 KiB before its "\r",
     * as in redis-server: longer numbers are refused as numbers, not as
     * lines (measured: 62 digits, 100 leading zeros: "invalid bulk length") */
    size_t wide_n = WN_RESP_MAX_INLINE + 8;
    char *wl = malloc(wide_n);
    assert_non_null(wl);
    for (int lead = 0; lead < 2; lead++) {
        memset(wl, '0', wide_n);
        wl[0] = lead ? '$' : '*';
        wn_resp_req_err_t len_err = lead ? WN_RESP_REQERR_BULK_LEN : WN_RESP_REQERR_MBULK_LEN;
        wn_resp_req_err_t big_err =
            lead ? WN_RESP_REQERR_BULK_TOO_BIG : WN_RESP_REQERR_MBULK_TOO_BIG;
        for (size_t len = 63; len <= WN_RESP_MAX_INLINE; len += WN_RESP_MAX_INLINE - 63) {
            memset(wl + 1, '9', len - 1);
            memcpy(wl + len, "\r\n", 2);
            wn_resp_req_parser_t wp;
            parser_at_count_line(&wp, lead);
            for (size_t k = 1; k < len + 2; k += 4096) /* as it arrives */
                assert_int_equal(wn_resp_request_next(&wp, wl, k, &tok), WN_EAGAIN);
            assert_int_equal(wn_resp_request_next(&wp, wl, len + 2, &tok), WN_EPROTO);
            assert_int_equal(wp.err, len_err);
        }
        memset(wl + 1, '0', 100); /* leading zeros */
        memcpy(wl + 101, "4\r\n", 3);
        wn_resp_req_parser_t zp;
        parser_at_count_line(&zp, lead);
        assert_int_equal(wn_resp_request_next(&zp, wl, 104, &tok), WN_EPROTO);
        assert_int_equal(zp.err, len_err);
        memset(wl + 1, '9', wide_n - 1); /* no "\r" at all */
        too_big_past_64k(wl, lead, big_err);
        wl[2] = '\0'; /* a NUL hides a "\r" after it, as from redis-server's strchr */
        wl[3] = '\r';
        too_big_past_64k(wl, lead, big_err);
    }
    free(wl);

    /* inline: max_inline bytes before the "\n", as redis-server counts */
    char in[32];
    memset(in, 'a', sizeof in);
    in[16] = '\n';
    assert_int_equal(req_once(in, 17, &lim, &tok, NULL), 17);
    assert_int_equal(tok.content_len, 16);
    assert_int_equal(req_once(in, 16, &lim, &tok, NULL), WN_EAGAIN);
    in[16] = 'a';
    assert_req_err(in, 17, &lim, WN_RESP_REQERR_INLINE_TOO_BIG);
    in[15] = '\r';
    in[16] = '\n';
    assert_int_equal(req_once(in, 17, &lim, &tok, NULL), 17);
    assert_int_equal(tok.content_len, 15);

    /* the defaults: redis-server's 64 KiB inline, 512 MiB bulk */
    size_t big = WN_RESP_MAX_INLINE + 2;
    char *huge = malloc(big);
    assert_non_null(huge);
    memset(huge, 'a', big);
    assert_int_equal(req_once(huge, WN_RESP_MAX_INLINE, NULL, &tok, NULL), WN_EAGAIN);
    assert_req_err(huge, WN_RESP_MAX_INLINE + 1, NULL, WN_RESP_REQERR_INLINE_TOO_BIG);
    huge[WN_RESP_MAX_INLINE] = '\n';
    assert_int_equal(req_once(huge, big, NULL, &tok, NULL), WN_RESP_MAX_INLINE + 1);
    assert_int_equal(tok.nargs, 1);
    free(huge);
}

/* Measured on a redis-server 7.0.15 with requirepass, before AUTH:
 * "*10" waits for args, "*11" gets "-ERR Protocol error: unauthenticated
 * multibulk length"; "$16384" waits, "$16385" gets "... unauthenticated
 * bulk length"; both close the connection. */
static void test_request_unauth(void **state)
{
    (void)state;
    wn_resp_req_parser_t p;
    wn_resp_req_tok_t tok;
    wn_resp_req_parser_init(&p, NULL);
    assert_false(p.unauth);
    wn_resp_req_parser_set_unauth(&p, true);
    assert_int_equal(wn_resp_request_next(&p, "*10\r\n", 5, &tok), 5);
    assert_int_equal(wn_resp_request_next(&p, "$16384\r\n", 8, &tok), 8);
    wn_resp_req_parser_init(&p, NULL);
    wn_resp_req_parser_set_unauth(&p, true);
    assert_int_equal(wn_resp_request_next(&p, "*11\r\n", 5, &tok), WN_EPROTO);
    char e[WN_RESP_REQERR_MAX];
    int n = wn_resp_req_error(&p, e, sizeof e);
    static const char mb[] = "-ERR Protocol error: unauthenticated multibulk length\r\n";
    assert_int_equal(n, sizeof mb - 1);
    assert_memory_equal(e, mb, sizeof mb - 1);
    /* the ordinary check comes first */
    wn_resp_req_parser_init(&p, NULL);
    wn_resp_req_parser_set_unauth(&p, true);
    assert_int_equal(wn_resp_request_next(&p, "*2147483648\r\n", 13, &tok), WN_EPROTO);
    assert_int_equal(p.err, WN_RESP_REQERR_MBULK_LEN);
    /* then the unauthenticated one, before walnut's own bound on arguments
     * (redis-server: "unauthenticated multibulk length" up to INT_MAX) */
    static const char *const over[] = {"*1048577\r\n", "*2147483647\r\n"};
    for (size_t i = 0; i < 2; i++) {
        wn_resp_req_parser_init(&p, NULL);
        wn_resp_req_parser_set_unauth(&p, true);
        assert_int_equal(wn_resp_request_next(&p, over[i], strlen(over[i]), &tok), WN_EPROTO);
        assert_int_equal(p.err, WN_RESP_REQERR_MBULK_UNAUTH);
        wn_resp_req_parser_set_unauth(&p, false);
        wn_resp_req_parser_init(&p, NULL);
        assert_int_equal(wn_resp_request_next(&p, over[i], strlen(over[i]), &tok), WN_EPROTO);
        assert_int_equal(p.err, WN_RESP_REQERR_MBULK_LEN);
    }
    wn_resp_req_parser_init(&p, NULL);
    wn_resp_req_parser_set_unauth(&p, true);
    assert_int_equal(wn_resp_request_next(&p, "*2\r\n", 4, &tok), 4);
    assert_int_equal(wn_resp_request_next(&p, "$16385\r\n", 8, &tok), WN_EPROTO);
    n = wn_resp_req_error(&p, e, sizeof e);
    static const char b[] = "-ERR Protocol error: unauthenticated bulk length\r\n";
    assert_int_equal(n, sizeof b - 1);
    assert_memory_equal(e, b, sizeof b - 1);
    /* after AUTH, the ordinary limits */
    wn_resp_req_parser_init(&p, NULL);
    wn_resp_req_parser_set_unauth(&p, true);
    wn_resp_req_parser_set_unauth(&p, false);
    assert_int_equal(wn_resp_request_next(&p, "*11\r\n", 5, &tok), 5);
    assert_int_equal(wn_resp_request_next(&p, "$16385\r\n", 8, &tok), 8);
}

/* A growing buffer is searched once: the parser resumes where it stopped. */
static void test_request_resume(void **state)
{
    (void)state;
    size_t n = 60000;
    char *s = malloc(n);
    assert_non_null(s);
    memset(s, 'a', n);
    s[n - 1] = '\n';
    wn_resp_req_parser_t p;
    wn_resp_req_parser_init(&p, NULL);
    wn_resp_req_tok_t tok;
    for (size_t k = 1000; k < n; k += 1000) {
        assert_int_equal(wn_resp_request_next(&p, s, k, &tok), WN_EAGAIN);
        assert_int_equal(p.scanned, k);
    }
    assert_int_equal(wn_resp_request_next(&p, s, n, &tok), (int)n);
    assert_int_equal(p.scanned, 0);
    /* a buffer that shrank is searched from its start again */
    assert_int_equal(wn_resp_request_next(&p, s, 100, &tok), WN_EAGAIN);
    p.scanned = 5000;
    assert_int_equal(wn_resp_request_next(&p, s, 100, &tok), WN_EAGAIN);
    assert_int_equal(p.scanned, 100);
    free(s);
}

/* Inline args: raw spans, direct values, and what must be copied. */
static void test_inline_args(void **state)
{
    (void)state;
    static const char line[] = "SET k\"ey\" \"v a\" 'x' \"\\n\" plain \"\"\r\n";
    wn_resp_req_tok_t tok;
    assert_int_equal(req_once(line, sizeof line - 1, NULL, &tok, NULL), (int)sizeof line - 1);
    assert_int_equal(tok.type, WN_RESP_REQ_INLINE);
    assert_int_equal(tok.nargs, 7);
    assert_true(tok.last);
    assert_int_equal(tok.content_len, sizeof line - 3);
    struct {
        uint32_t raw_off, raw_len, len;
        bool direct;
        uint32_t val_off;
    } want[] = {
        {0, 3, 3, true, 0},   /* SET */
        {4, 5, 3, false, 0},  /* k"ey": the quote breaks the span */
        {10, 5, 3, true, 11}, /* "v a" */
        {16, 3, 1, true, 17}, /* 'x' */
        {20, 4, 1, false, 0}, /* "\n" */
        {25, 5, 5, true, 25}, /* plain */
        {31, 2, 0, true, 32}, /* "" */
    };
    uint32_t cursor = 0;
    wn_resp_inline_arg_t a;
    char v[16];
    for (size_t i = 0; i < WN_ARRAY_SIZE(want); i++) {
        assert_true(wn_resp_inline_next(line, &tok, &cursor, &a));
        assert_int_equal(a.raw.off, want[i].raw_off);
        assert_int_equal(a.raw.len, want[i].raw_len);
        assert_int_equal(a.len, want[i].len);
        assert_int_equal(a.direct, want[i].direct);
        if (a.direct) {
            assert_int_equal(a.val.off, want[i].val_off);
            assert_int_equal(a.val.len, a.len);
        }
        assert_int_equal(wn_resp_inline_unescape(line, &a, v), a.len);
    }
    assert_false(wn_resp_inline_next(line, &tok, &cursor, &a));
    assert_false(wn_resp_inline_next(line, &tok, &cursor, &a));
    cursor = 0;
    for (int i = 0; i < 5; i++)
        assert_true(wn_resp_inline_next(line, &tok, &cursor, &a));
    assert_int_equal(wn_resp_inline_unescape(line, &a, v), 1);
    assert_int_equal(v[0], '\n');

    /* not an inline token */
    wn_resp_req_tok_t arr;
    assert_int_equal(req_once("*1\r\n", 4, NULL, &arr, NULL), 4);
    cursor = 0;
    assert_false(wn_resp_inline_next("*1\r\n", &arr, &cursor, &a));
}

static void test_request_errors(void **state)
{
    (void)state;
    wn_resp_req_parser_t p;
    wn_resp_req_parser_init(&p, NULL);
    char e[WN_RESP_REQERR_MAX];
    /* no error yet: nothing to say */
    assert_int_equal(wn_resp_req_error(&p, e, sizeof e), 0);
    assert_int_equal(wn_resp_request_bulk_end(&p, '\r', '\n'), 0);
    assert_int_equal(wn_resp_request_bulk_end(&p, '\n', '\r'), WN_EPROTO);
    assert_int_equal(p.err, WN_RESP_REQERR_BULK_CRLF);
    /* every text fits WN_RESP_REQERR_MAX; a short buffer is refused */
    for (int err = 1; err < WN_RESP_REQERR_COUNT; err++) {
        p.err = (uint8_t)err;
        p.got = 'z';
        int n = wn_resp_req_error(&p, e, sizeof e);
        assert_true(n > 2 && n <= WN_RESP_REQERR_MAX);
        assert_memory_equal(e, "-ERR Protocol error: ", 21);
        assert_memory_equal(e + n - 2, "\r\n", 2);
        memset(e, '#', sizeof e);
        assert_int_equal(wn_resp_req_error(&p, e, (size_t)n - 1), WN_ETOOBIG);
        assert_int_equal(e[0], '#');
    }
    /* after an error the parser starts over at a request */
    wn_resp_req_tok_t tok;
    assert_int_equal(wn_resp_request_next(&p, PING, sizeof PING - 1, &tok), 4);
    assert_int_equal(tok.type, WN_RESP_REQ_ARRAY);
}

/* ---- playing a server stream ------------------------------------------- */

/*
 * The trace of a reply stream: each line as <depth><type><value>, a '$'
 * payload after ':', '.' when it completed a reply; "!EPROTO" "!ETOOBIG"
 * for errors, "!TRAILER" when a payload is not followed by "\r\n", "?" when
 * the stream ends mid-line or mid-payload. A '+' or '-' line that comes in
 * pieces (over lim's max_text) is traced once, whole, at its last piece: the
 * trace is the same as with a limit it fits in.
 */
static void play_rsp(const char *in, size_t len, const wn_resp_limits_t *lim, size_t first,
                     size_t step, trace_t *t)
{
    wn_resp_rsp_parser_t *p = malloc(sizeof(*p));
    assert_non_null(p);
    wn_resp_rsp_parser_init(p, lim);
    reveal_t r = {len, WN_MIN(first, len), step};
    size_t pos = 0;
    char text[4096]; /* a long line's text so far, and its type and depth */
    size_t ntext = 0;
    char text_type = 0;
    uint32_t text_depth = 0;
    memset(t, 0, sizeof(*t));
    for (;;) {
        char *b = exact_copy(in + pos, r.vis - pos);
        wn_resp_rsp_tok_t tok;
        int rc = wn_resp_reply_next(p, b, r.vis - pos, &tok);
        if (rc == WN_EAGAIN) {
            free(b);
            if (reveal_more(&r))
                continue;
            if (pos < len || !wn_resp_reply_idle(p)) {
                tr_sep(t);
                tr_add(t, "?");
            }
            break;
        }
        if (rc < 0 || !(tok.partial || tok.cont))
            tr_sep(t); /* a long line's: at its last piece */
        if (rc < 0) {
            free(b);
            assert_true(rc == WN_EPROTO || rc == WN_ETOOBIG);
            tr_add(t, "!%s", rc == WN_EPROTO ? "EPROTO" : "ETOOBIG");
            assert_true(wn_resp_reply_idle(p));
            break;
        }
        assert_int_equal(rc, tok.line_len);
        assert_int_equal(tok.done, wn_resp_reply_idle(p) && !(tok.type == '*' && tok.number > 0));
        if (tok.partial || tok.cont) {
            /* a piece of a long line: the same type and depth throughout */
            assert_true(tok.type == '+' || tok.type == '-');
            assert_int_equal(tok.cont, text_type != 0);
            assert_true(!tok.cont || (tok.type == text_type && tok.depth == text_depth));
            assert_int_equal(tok.text.off, tok.cont ? 0 : 1);
            assert_int_equal(tok.text.len, tok.line_len - tok.text.off - (tok.partial ? 0 : 2));
            assert_true(!tok.partial || !tok.done);
            assert_true(ntext + tok.text.len <= sizeof text);
            memcpy(text + ntext, b + tok.text.off, tok.text.len);
            ntext += tok.text.len;
            text_type = tok.type;
            text_depth = tok.depth;
            free(b);
            pos += (size_t)rc;
            if (tok.partial)
                continue;
            tr_sep(t);
            tr_add(t, "%u%c", tok.depth, tok.type);
            tr_bytes(t, text, ntext);
            ntext = 0;
            text_type = 0;
            if (tok.done)
                tr_add(t, ".");
            continue;
        }
        assert_int_equal(text_type, 0);
        tr_add(t, "%u%c", tok.depth, tok.type);
        if (tok.type == '+' || tok.type == '-') {
            assert_int_equal(tok.text.off, 1);
            assert_int_equal(tok.text.len, tok.line_len - 3);
            tr_bytes(t, b + tok.text.off, tok.text.len);
        } else {
            tr_add(t, "%lld", (long long)tok.number);
        }
        free(b);
        pos += (size_t)rc;
        if (tok.type == '$' && tok.number >= 0) {
            assert_int_equal(tok.bulk_len, (uint64_t)tok.number);
            while (r.vis - pos < tok.bulk_len + 2 && reveal_more(&r))
                ;
            if (r.vis - pos < tok.bulk_len + 2) {
                tr_add(t, " ?");
                break;
            }
            tr_add(t, ":");
            tr_bytes(t, in + pos, tok.bulk_len);
            pos += tok.bulk_len;
            if (!wn_resp_crlf_ok(in[pos], in[pos + 1])) {
                tr_add(t, " !TRAILER");
                break;
            }
            pos += 2;
        } else {
            assert_int_equal(tok.bulk_len, 0);
        }
        if (tok.done)
            tr_add(t, ".");
    }
    free(p);
}

typedef struct rsp_case {
    const char *in;
    size_t len;
    const char *trace;
} rsp_case_t;

/* clang-format off */
static const rsp_case_t rsp_cases[] = {
    /* every RESP2 type */
    {IN("+OK\r\n"), "0+OK."},
    {IN("+\r\n"), "0+."},
    {IN("-ERR unknown command 'x'\r\n"), "0-ERR unknown command 'x'."},
    {IN("-WRONGTYPE Operation against a key\r\n"), "0-WRONGTYPE Operation against a key."},
    {IN("+a\0b\xff\r\n"), "0+a\\x00b\\xff."},
    {IN(":0\r\n"), "0:0."},
    {IN(":-1\r\n"), "0:-1."},
    {IN(":9223372036854775807\r\n"), "0:9223372036854775807."},
    {IN(":-9223372036854775808\r\n"), "0:-9223372036854775808."},
    {IN("$3\r\nfoo\r\n"), "0$3:foo."},
    {IN("$0\r\n\r\n"), "0$0:."},
    {IN("$4\r\na\r\nb\r\n"), "0$4:a\\r\\nb."},
    {IN("$-1\r\n"), "0$-1."},
    {IN("*-1\r\n"), "0*-1."},
    {IN("*0\r\n"), "0*0."},
    /* arrays and nesting */
    {IN("*3\r\n$1\r\na\r\n$-1\r\n$2\r\nbc\r\n"), "0*3 1$1:a 1$-1 1$2:bc."},
    {IN("*2\r\n*1\r\n:1\r\n*0\r\n"), "0*2 1*1 2:1 1*0."},
    {IN("*3\r\n*2\r\n+a\r\n-b\r\n:3\r\n*1\r\n*1\r\n$-1\r\n"), "0*3 1*2 2+a 2-b 1:3 1*1 2*1 3$-1."},
    {IN("*1\r\n*1\r\n*1\r\n*1\r\n*-1\r\n"), "0*1 1*1 2*1 3*1 4*-1."},
    {IN("*2\r\n*2\r\n*2\r\n:1\r\n:2\r\n:3\r\n:4\r\n"), "0*2 1*2 2*2 3:1 3:2 2:3 1:4."},
    /* a pipeline of replies */
    {IN("+OK\r\n:1\r\n$-1\r\n*0\r\n*1\r\n+x\r\n"), "0+OK. 0:1. 0$-1. 0*0. 0*1 1+x."},
    /* incomplete */
    {IN(""), ""},
    {IN("+OK"), "?"},
    {IN("+OK\r"), "?"},
    {IN("*2\r\n$1\r\na\r\n"), "0*2 1$1:a ?"},
    {IN("$3\r\nfo"), "0$3 ?"},
    {IN("$536870912\r\n"), "0$536870912 ?"},
    /* RESP3 and other types */
    {IN("_\r\n"), "!EPROTO"},
    {IN(",1.5\r\n"), "!EPROTO"},
    {IN("#t\r\n"), "!EPROTO"},
    {IN("!3\r\nerr\r\n"), "!EPROTO"},
    {IN("=3\r\ntxt\r\n"), "!EPROTO"},
    {IN("(1\r\n"), "!EPROTO"},
    {IN("|1\r\n"), "!EPROTO"},
    {IN("~1\r\n"), "!EPROTO"},
    {IN(">1\r\n"), "!EPROTO"},
    {IN("%1\r\n"), "!EPROTO"},
    {IN("*2\r\n:1\r\n%0\r\n"), "0*2 1:1 !EPROTO"},
    {IN("\r\n"), "!EPROTO"},
    {IN("OK\r\n"), "!EPROTO"},
    /* line ends: "\r\n" only, and no CR or LF inside */
    {IN("+OK\n"), "!EPROTO"},
    {IN("+OK\rx"), "!EPROTO"},
    {IN("+O\nK\r\n"), "!EPROTO"},
    {IN("+O\rK\r\n"), "!EPROTO"},
    {IN(":1\n"), "!EPROTO"},
    /* numbers: strict */
    {IN(":\r\n"), "!EPROTO"},
    {IN(":+1\r\n"), "!EPROTO"},
    {IN(":01\r\n"), "!EPROTO"},
    {IN(":-0\r\n"), "!EPROTO"},
    {IN(":-\r\n"), "!EPROTO"},
    {IN(": 1\r\n"), "!EPROTO"},
    {IN(":1 \r\n"), "!EPROTO"},
    {IN(":1.5\r\n"), "!EPROTO"},
    {IN(":9223372036854775808\r\n"), "!EPROTO"},
    {IN(":-9223372036854775809\r\n"), "!EPROTO"},
    {IN(":\0" "1\r\n"), "!EPROTO"},
    {IN("$-2\r\n"), "!EPROTO"},
    {IN("$-0\r\n"), "!EPROTO"},
    {IN("$01\r\na\r\n"), "!EPROTO"},
    {IN("$+1\r\na\r\n"), "!EPROTO"},
    {IN("$\r\n"), "!EPROTO"},
    {IN("$99999999999999999999\r\n"), "!EPROTO"},
    {IN("$123456789012345678901\r\n"), "!EPROTO"},
    {IN("$18446744073709551616\r\n"), "!EPROTO"},
    {IN("*-2\r\n"), "!EPROTO"},
    {IN("*+1\r\n:1\r\n"), "!EPROTO"},
    {IN("*1x\r\n"), "!EPROTO"},
    /* over the default limits */
    {IN("$536870913\r\n"), "!ETOOBIG"},
    {IN("*2147483648\r\n"), "!ETOOBIG"},
    {IN("$" D70 "\r\n"), "!ETOOBIG"},
    {IN(":" D70), "!ETOOBIG"},
    /* payloads must end in "\r\n" */
    {IN("$1\r\nab\r\n"), "0$1:a !TRAILER"},
    {IN("$1\r\na\n\r"), "0$1:a !TRAILER"},
    {IN("*1\r\n$0\r\nxx"), "0*1 1$0: !TRAILER"},
};
/* clang-format on */

static void test_reply_golden(void **state)
{
    (void)state;
    for (size_t i = 0; i < WN_ARRAY_SIZE(rsp_cases); i++) {
        const rsp_case_t *c = &rsp_cases[i];
        trace_t t;
        play_rsp(c->in, c->len, NULL, c->len, 0, &t);
        assert_trace(&t, c->trace, c->in, c->len);
    }
}

/* Long '+' and '-' lines under the smallest max_text (32): in pieces, traced
 * as whole lines, at every split point; where a long line breaks the rules. */
static const rsp_case_t long_text_cases[] = {
    {IN("+" X40 "\r\n"), "0+" X40 "."},
    {IN("-ERR " X40 X40 X40 "\r\n:1\r\n"), "0-ERR " X40 X40 X40 ". 0:1."},
    {IN("+" X40 "x\r\n"), "0+" X40 "x."},
    {IN("*3\r\n+" X40 "\r\n*1\r\n-" X40 "\r\n$1\r\na\r\n"), "0*3 1+" X40 " 1*1 2-" X40 " 1$1:a."},
    {IN("+" X40), "?"},
    {IN("+" X40 "\r"), "?"},
    {IN("+" X40 "\rx\r\n"), "!EPROTO"},
    {IN("+" X40 "\nx\r\n"), "!EPROTO"},
    {IN("-" X40 "\n"), "!EPROTO"},
    {IN("+" X40 "\r\r\n"), "!EPROTO"},
};

static int run_rsp(const char *s, size_t len, const wn_resp_limits_t *lim, uint32_t *deepest,
                   size_t *replies);

static void test_reply_long_text(void **state)
{
    (void)state;
    wn_resp_limits_t lim = {.max_text = WN_RESP_LINE_MIN};
    for (size_t i = 0; i < WN_ARRAY_SIZE(long_text_cases); i++) {
        const rsp_case_t *c = &long_text_cases[i];
        trace_t t;
        play_rsp(c->in, c->len, NULL, c->len, 0, &t); /* whole: the default limit */
        assert_trace(&t, c->trace, c->in, c->len);
        for (size_t k = 0; k <= c->len; k++) {
            play_rsp(c->in, c->len, &lim, k, 0, &t);
            assert_trace(&t, c->trace, c->in, c->len);
        }
        play_rsp(c->in, c->len, &lim, 0, 1, &t);
        assert_trace(&t, c->trace, c->in, c->len);
    }
    /* the text of a line in pieces is bounded as a bulk's is: max_bulk bytes */
    uint32_t deepest;
    size_t replies;
    wn_resp_limits_t small = {.max_text = WN_RESP_LINE_MIN, .max_bulk = 40};
    static const char at[] = "+" X40 "\r\n", over[] = "-" X40 "x\r\n";
    assert_int_equal(run_rsp(at, sizeof at - 1, &small, &deepest, &replies), 12);
    assert_int_equal(replies, 1);
    assert_int_equal(run_rsp(over, sizeof over - 1, &small, &deepest, &replies), WN_ETOOBIG);
    assert_int_equal(run_rsp(over, sizeof over - 3, &small, &deepest, &replies), WN_ETOOBIG);
}

static void test_reply_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < WN_ARRAY_SIZE(rsp_cases); i++) {
        const rsp_case_t *c = &rsp_cases[i];
        trace_t t;
        for (size_t k = 0; k <= c->len; k++) {
            play_rsp(c->in, c->len, NULL, k, 0, &t);
            assert_trace(&t, c->trace, c->in, c->len);
        }
        play_rsp(c->in, c->len, NULL, 0, 1, &t);
        assert_trace(&t, c->trace, c->in, c->len);
    }
}

/* `levels` nested one-element arrays around ":1". */
static char *nested(uint32_t levels, size_t *len)
{
    char *s = malloc((size_t)levels * 4 + 5);
    assert_non_null(s);
    for (uint32_t i = 0; i < levels; i++)
        memcpy(s + (size_t)i * 4, "*1\r\n", 4);
    memcpy(s + (size_t)levels * 4, ":1\r\n", 4);
    *len = (size_t)levels * 4 + 4;
    return s;
}

/* Run a whole reply stream; the last result and the deepest depth seen. */
static int run_rsp(const char *s, size_t len, const wn_resp_limits_t *lim, uint32_t *deepest,
                   size_t *replies)
{
    wn_resp_rsp_parser_t *p = malloc(sizeof(*p));
    assert_non_null(p);
    wn_resp_rsp_parser_init(p, lim);
    size_t pos = 0;
    int rc = WN_EAGAIN;
    *deepest = 0;
    *replies = 0;
    while (pos < len) {
        wn_resp_rsp_tok_t tok;
        rc = wn_resp_reply_next(p, s + pos, len - pos, &tok);
        if (rc <= 0)
            break;
        *deepest = WN_MAX(*deepest, tok.depth);
        *replies += tok.done;
        pos += (size_t)rc + (tok.type == '$' && tok.number >= 0 ? tok.bulk_len + 2 : 0);
    }
    free(p);
    return rc;
}

static void test_reply_limits(void **state)
{
    (void)state;
    uint32_t deepest;
    size_t replies, len;

    /* depth: 512 levels tracked one by one; deeper ones are counted together,
     * with no limit (redis-server sends 601 levels for a 600-deep Lua table) */
    char *s = nested(WN_RESP_MAX_DEPTH, &len);
    assert_int_equal(run_rsp(s, len, NULL, &deepest, &replies), 4);
    assert_int_equal(deepest, WN_RESP_MAX_DEPTH);
    assert_int_equal(replies, 1);
    free(s);
    s = nested(5000, &len);
    assert_int_equal(run_rsp(s, len, NULL, &deepest, &replies), 4);
    assert_int_equal(deepest, WN_RESP_MAX_DEPTH + 1);
    assert_int_equal(replies, 1);
    free(s);

    /* max_depth 3: beyond it, arrays of several elements, empty and null ones,
     * and bulks end the reply exactly where they should */
    wn_resp_limits_t lim = {.max_depth = 3, .max_elems = 5, .max_bulk = 10, .max_text = 32};
    static const char d3[] = "*1\r\n*1\r\n*2\r\n*0\r\n*-1\r\n";
    assert_int_equal(run_rsp(d3, sizeof d3 - 1, &lim, &deepest, &replies), 5);
    assert_int_equal(deepest, 3);
    assert_int_equal(replies, 1);
    static const char d6[] = "*2\r\n*1\r\n*2\r\n*2\r\n*2\r\n:1\r\n*0\r\n$1\r\nx\r\n"
                             "*-1\r\n:2\r\n+next\r\n";
    assert_int_equal(run_rsp(d6, sizeof d6 - 1, &lim, &deepest, &replies), 7);
    assert_int_equal(deepest, 4);
    assert_int_equal(replies, 2);
    static const char d6short[] = "*2\r\n*1\r\n*2\r\n*2\r\n*2\r\n:1\r\n*0\r\n$1\r\nx\r\n"
                                  "*-1\r\n";
    assert_int_equal(run_rsp(d6short, sizeof d6short - 1, &lim, &deepest, &replies), 5);
    assert_int_equal(replies, 0);
    lim.max_depth = WN_RESP_MAX_DEPTH + 100;
    assert_int_equal(wn_resp_limits_resolve(&lim).max_depth, WN_RESP_MAX_DEPTH);
    lim.max_depth = 3;

    /* array counts and bulk lengths: max and max + 1 */
    assert_int_equal(run_rsp("*5\r\n", 4, &lim, &deepest, &replies), 4);
    assert_int_equal(run_rsp("*6\r\n", 4, &lim, &deepest, &replies), WN_ETOOBIG);
    assert_int_equal(run_rsp("$10\r\n0123456789\r\n", 17, &lim, &deepest, &replies), 5);
    assert_int_equal(replies, 1);
    assert_int_equal(run_rsp("$11\r\n", 5, &lim, &deepest, &replies), WN_ETOOBIG);

    /* text lines: max_text bytes with "\r\n" come whole; one more byte and
     * the line comes in pieces (test_reply_long_text) */
    char line[40];
    memset(line, 'x', sizeof line);
    line[0] = '+';
    memcpy(line + 30, "\r\n", 2);
    assert_int_equal(run_rsp(line, 32, &lim, &deepest, &replies), 32);
    memset(line, 'x', sizeof line);
    line[0] = '-';
    memcpy(line + 31, "\r\n", 2);
    assert_int_equal(run_rsp(line, 30, &lim, &deepest, &replies), WN_EAGAIN);
    wn_resp_limits_t text_lim = {.max_text = 32}; /* (lim's max_bulk 10 bounds the pieces) */
    assert_int_equal(run_rsp(line, 31, &text_lim, &deepest, &replies), 31); /* a first piece */
    assert_int_equal(replies, 0);
    assert_int_equal(run_rsp(line, 33, &text_lim, &deepest, &replies), 2); /* the last piece */
    assert_int_equal(replies, 1);
    assert_int_equal(run_rsp(line, 33, &lim, &deepest, &replies), WN_ETOOBIG);

    /* resolve: 0 means the default, small lines are raised */
    wn_resp_limits_t d = wn_resp_limits_resolve(NULL);
    assert_int_equal(d.max_args, WN_RESP_MAX_ARGS);
    assert_true(d.max_bulk == WN_RESP_MAX_BULK);
    assert_int_equal(d.max_inline, WN_RESP_MAX_INLINE);
    assert_int_equal(d.max_line, WN_RESP_MAX_LINE);
    assert_int_equal(d.max_text, WN_RESP_MAX_TEXT);
    assert_int_equal(d.max_elems, WN_RESP_MAX_ELEMS);
    assert_int_equal(d.max_depth, WN_RESP_MAX_DEPTH);
    wn_resp_limits_t odd = {.max_args = UINT32_MAX, .max_bulk = UINT64_MAX, .max_text = 3};
    d = wn_resp_limits_resolve(&odd);
    assert_int_equal(d.max_args, INT32_MAX);
    assert_true(d.max_bulk == (uint64_t)INT64_MAX - 2);
    assert_int_equal(d.max_text, WN_RESP_LINE_MIN);
}

/* A reply parser searches a growing line once, and keeps its state across
 * replies: depth comes back to 0 after each. */
static void test_reply_resume(void **state)
{
    (void)state;
    wn_resp_rsp_parser_t *p = malloc(sizeof(*p));
    assert_non_null(p);
    wn_resp_rsp_parser_init(p, NULL);
    char s[1000];
    memset(s, 'a', sizeof s);
    s[0] = '+';
    memcpy(s + sizeof s - 2, "\r\n", 2);
    wn_resp_rsp_tok_t tok;
    for (size_t k = 100; k < sizeof s - 1; k += 100) {
        assert_int_equal(wn_resp_reply_next(p, s, k, &tok), WN_EAGAIN);
        assert_int_equal(p->scanned, k);
    }
    assert_int_equal(wn_resp_reply_next(p, s, sizeof s - 1, &tok), WN_EAGAIN);
    assert_int_equal(wn_resp_reply_next(p, s, sizeof s, &tok), (int)sizeof s);
    assert_true(tok.done);
    assert_int_equal(p->scanned, 0);
    free(p);
}

/* ---- composers --------------------------------------------------------- */

/* f(dst, cap) writes `want`; exactly its size fits, one byte less is
 * refused with dst untouched. */
#define ASSERT_COMPOSE(call_with_cap, want)                                                        \
    do {                                                                                           \
        char dst_[512];                                                                            \
        size_t want_len_ = sizeof(want) - 1;                                                       \
        size_t cap = sizeof dst_;                                                                  \
        char *dst = dst_;                                                                          \
        assert_int_equal((call_with_cap), (int)want_len_);                                         \
        assert_memory_equal(dst_, want, want_len_);                                                \
        cap = want_len_;                                                                           \
        assert_int_equal((call_with_cap), (int)want_len_);                                         \
        memset(dst_, '#', sizeof dst_);                                                            \
        cap = want_len_ - 1;                                                                       \
        assert_int_equal((call_with_cap), WN_ETOOBIG);                                             \
        assert_int_equal(dst_[0], '#');                                                            \
    } while (0)

static void test_compose(void **state)
{
    (void)state;
    ASSERT_COMPOSE(wn_resp_array_head(dst, cap, 0), "*0\r\n");
    ASSERT_COMPOSE(wn_resp_array_head(dst, cap, 3), "*3\r\n");
    ASSERT_COMPOSE(wn_resp_array_head(dst, cap, UINT32_MAX), "*4294967295\r\n");
    assert_int_equal(wn_resp_array_head_size(UINT32_MAX), WN_RESP_ARRAY_HEAD_MAX);
    assert_int_equal(wn_resp_array_head_size(10), 5);
    ASSERT_COMPOSE(wn_resp_bulk_head(dst, cap, 0), "$0\r\n");
    ASSERT_COMPOSE(wn_resp_bulk_head(dst, cap, 8388608), "$8388608\r\n");
    ASSERT_COMPOSE(wn_resp_bulk_head(dst, cap, UINT64_MAX), "$18446744073709551615\r\n");
    assert_int_equal(wn_resp_bulk_head_size(UINT64_MAX), WN_RESP_BULK_HEAD_MAX);
    ASSERT_COMPOSE(wn_resp_compose_bulk(dst, cap, "mget", 4), "$4\r\nmget\r\n");
    ASSERT_COMPOSE(wn_resp_compose_bulk(dst, cap, "", 0), "$0\r\n\r\n");
    ASSERT_COMPOSE(wn_resp_compose_bulk(dst, cap, "a\r\n\0", 4), "$4\r\na\r\n\0\r\n");
    assert_int_equal(wn_resp_bulk_size(4), 10);
    ASSERT_COMPOSE(wn_resp_compose_int(dst, cap, 0), ":0\r\n");
    ASSERT_COMPOSE(wn_resp_compose_int(dst, cap, 4), ":4\r\n");
    ASSERT_COMPOSE(wn_resp_compose_int(dst, cap, -1), ":-1\r\n");
    ASSERT_COMPOSE(wn_resp_compose_int(dst, cap, INT64_MAX), ":9223372036854775807\r\n");
    ASSERT_COMPOSE(wn_resp_compose_int(dst, cap, INT64_MIN), ":-9223372036854775808\r\n");
    assert_int_equal(wn_resp_int_size(INT64_MIN), WN_RESP_INT_MAX);
    assert_int_equal(wn_resp_int_size(-10), 6);
    ASSERT_COMPOSE(wn_resp_compose_simple(dst, cap, "OK", 2), WN_RESP_OK);
    ASSERT_COMPOSE(wn_resp_compose_simple(dst, cap, "PONG", 4), WN_RESP_PONG);
    ASSERT_COMPOSE(wn_resp_compose_error(dst, cap, "ERR Connection refused", 22),
                   "-ERR Connection refused\r\n");
    ASSERT_COMPOSE(wn_resp_compose_error(dst, cap, "ERR a\r\nb\nc\rd", 12), "-ERR a  b c d\r\n");
    char d[16];
    assert_int_equal(wn_resp_compose_simple(d, sizeof d, "a\nb", 3), WN_EINVAL);
    assert_int_equal(wn_resp_compose_simple(d, sizeof d, "a\rb", 3), WN_EINVAL);
    ASSERT_COMPOSE(wn_resp_compose_cmd_head(dst, cap, "mget", 4, 2), "*3\r\n$4\r\nmget\r\n");
    ASSERT_COMPOSE(wn_resp_compose_cmd_head(dst, cap, "mset", 4, 998), "*999\r\n$4\r\nmset\r\n");
    ASSERT_COMPOSE(wn_resp_compose_cmd_head(dst, cap, "del", 3, 9), "*10\r\n$3\r\ndel\r\n");
    ASSERT_COMPOSE(wn_resp_compose_cmd_head(dst, cap, "x", 1, UINT32_MAX),
                   "*4294967296\r\n$1\r\nx\r\n");
    assert_int_equal(wn_resp_cmd_head_size(4, 9), 15);
    assert_int_equal(wn_resp_cmd_head_size(1, UINT32_MAX), 20);
}

/* A split's sub-command, composed from heads and the keys' bulks, frames
 * back to the same args. */
static void test_compose_roundtrip(void **state)
{
    (void)state;
    static const char *keys[] = {"a", "", "k\r\n3", "key:4"};
    char buf[256];
    size_t n = 0;
    int rc = wn_resp_compose_cmd_head(buf, sizeof buf, "del", 3, 4);
    assert_true(rc > 0);
    n += (size_t)rc;
    for (size_t i = 0; i < 4; i++) {
        rc = wn_resp_compose_bulk(buf + n, sizeof buf - n, keys[i], strlen(keys[i]));
        assert_true(rc > 0);
        n += (size_t)rc;
    }
    trace_t t;
    last_req_t l;
    play_req(buf, n, NULL, n, 0, &t, &l);
    assert_string_equal(t.s, "*5 $3:del $1:a $0: $4:k\\r\\n3 $5:key:4");
}

/* redis-server 7's arity error names the command in lowercase. */
static void test_arity_error(void **state)
{
    (void)state;
    ASSERT_COMPOSE(wn_resp_compose_arity_error(dst, cap, "GeT", 3),
                   "-ERR wrong number of arguments for 'get' command\r\n");
    ASSERT_COMPOSE(wn_resp_compose_arity_error(dst, cap, "mset", 4),
                   "-ERR wrong number of arguments for 'mset' command\r\n");
    ASSERT_COMPOSE(wn_resp_compose_arity_error(dst, cap, "georadiusbymember_ro", 20),
                   "-ERR wrong number of arguments for 'georadiusbymember_ro' command\r\n");
    /* the unknown-command text at its longest fits its bound */
    char name[300], e[WN_RESP_UNKNOWN_CMD_MAX];
    memset(name, 'n', sizeof name);
    wn_resp_str_t args[50];
    for (size_t i = 0; i < 50; i++)
        args[i] = (wn_resp_str_t){name, i == 0 ? 128 : 300};
    int n = wn_resp_compose_unknown_cmd(e, sizeof e, name, sizeof name, args, 50);
    assert_true(n > 0 && n <= WN_RESP_UNKNOWN_CMD_MAX);
    assert_int_equal(n, 22 + 128 + 29 + 131 + 2);
    for (size_t i = 0; i < 50; i++)
        args[i] = (wn_resp_str_t){"", 0};
    n = wn_resp_compose_unknown_cmd(e, sizeof e, "x", 1, args, 50);
    assert_int_equal(n, 22 + 1 + 29 + 43 * 3 + 2);
    assert_int_equal(wn_resp_compose_unknown_cmd(e, (size_t)n - 1, "x", 1, args, 50), WN_ETOOBIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_golden),    cmocka_unit_test(test_request_split),
        cmocka_unit_test(test_request_limits),    cmocka_unit_test(test_request_resume),
        cmocka_unit_test(test_inline_args),       cmocka_unit_test(test_request_errors),
        cmocka_unit_test(test_reply_golden),      cmocka_unit_test(test_reply_split),
        cmocka_unit_test(test_reply_long_text),   cmocka_unit_test(test_reply_limits),
        cmocka_unit_test(test_reply_resume),      cmocka_unit_test(test_compose),
        cmocka_unit_test(test_compose_roundtrip), cmocka_unit_test(test_arity_error),
        cmocka_unit_test(test_request_unauth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
