#!/usr/bin/python3
"""Differential test: the corpus test/data/redis_differential.txt (every command
class, wrong arity for every command, unknown commands, binary and empty keys,
big values, inline requests, malformed multibulk, pipelined mixes) is sent to
one redis-server directly and then through walnut with that same server as its
only backend (emptied before each pass). The replies must be equal byte for
byte, command by command, except where ALLOWED below says why walnut answers
otherwise; every entry of ALLOWED must still be needed by some case.

Run with Debian's /usr/bin/python3; WALNUT_BIN names the binary.
"""

import ast
import os
import re
import socket
import sys
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

# twemproxy closes the connection at most of what these tests send (unknown
# commands, wrong arity, PING <msg>, ECHO, SELECT, HELLO, ...): see
# test/data/placement/redis_routing.json and twemproxy-reference.md section 4.
NC_SKIP = "walnut's Redis behaviour, far beyond twemproxy's"

CORPUS = os.path.join(h.source_dir(), "test", "data", "redis_differential.txt")
SENTINEL = b"--walnut-differential-sentinel--"

REFUSED = (rb"-ERR unsupported command '[a-z_|-]+': (transactions need a dedicated server "
           rb"connection|pub/sub needs a dedicated server connection|blocking commands would "
           rb"stall a shared server connection|the keyspace is spread over all servers|it "
           rb"describes one server; ask that server directly|server administration goes to each "
           rb"server directly|scripts and functions are managed on each server directly|walnut "
           rb"is not a Redis Cluster node|streams are not supported)\r\n")


def check_hello(direct, walnut):
    """HELLO's map: redis-server's fields and values but the id and version,
    plus walnut's `proxy` field."""
    d, w = h.resp_parse(direct)[0], h.resp_parse(walnut)[0]
    if not (isinstance(d, list) and isinstance(w, list)):
        return False
    dm, wm = dict(zip(d[0::2], d[1::2])), dict(zip(w[0::2], w[1::2]))
    proxy = wm.pop(b"proxy", b"")
    for m in (dm, wm):
        m.pop(b"id", None)
        m.pop(b"version", None)
    return dm == wm and proxy.startswith(b"walnut ") and w[0::2][:-1] == d[0::2]


# Every difference walnut is allowed. `cmd`: re.search on a command as written
# in the corpus (one command of a line); `line`: re.search on a whole raw line.
# `walnut`: re.fullmatch on walnut's reply to it, or a function (direct, walnut).
ALLOWED = [
    dict(name="hello", cmd=r"^HELLO( 2)?( SETNAME hn)?$", walnut=check_hello,
         why="HELLO is answered by walnut: its own client id, version 7.0.0 and an extra "
             "'proxy' field (walnut <version>)"),
    dict(name="client id", cmd=r"^CLIENT ID$", walnut=rb":\d+\r\n",
         why="client ids are walnut's own (worker number in the top bits)"),
    dict(name="client info", cmd=r"^CLIENT INFO$",
         walnut=rb"\$\d+\r\nid=\d+ addr=\S+ laddr=\S+ fd=\d+ name=\S* age=\d+ idle=0 flags=N "
                rb"db=0 (\S+=\S+ )+proxy=walnut worker=\d+\n\r\n",
         why="CLIENT INFO describes the client's connection to walnut, not to a server"),
    dict(name="client other", cmd=r"^CLIENT (LIST|NOSUCH)$",
         walnut=rb"-ERR CLIENT \w+ is not supported by walnut: a client's connection to a "
                rb"server is shared with other clients\r\n",
         why="CLIENT subcommands about server connections make no sense behind a proxy"),
    dict(name="select", cmd=r"^SELECT (1|15)$",
         walnut=rb"-ERR walnut serves one database per pool \(redis_db 0\); SELECT 0 only\r\n",
         why="a pool serves one database (redis_db); other SELECTs are refused"),
    dict(name="refused", cmd=r"^(MULTI|EXEC|DISCARD|WATCH|UNWATCH|SUBSCRIBE|PUBLISH|PUBSUB|"
                             r"BLPOP|BRPOP|BZPOPMIN|BLMOVE|WAIT|KEYS|SCAN|DBSIZE|RANDOMKEY|INFO|"
                             r"TIME|LASTSAVE|ROLE|CONFIG|OBJECT|DEBUG|MEMORY|SLOWLOG|XADD|"
                             r"XLEN|XRANGE|ACL|LATENCY|READONLY|FLUSHDB|FLUSHALL) ",
         walnut=REFUSED,
         why="transactions, pub/sub, blocking, keyspace-wide, per-server, admin, function "
             "management, stream and cluster commands are refused, saying why (twemproxy "
             "closes the connection)"),
    dict(name="refused, no args", cmd=r"^(MULTI|EXEC|DISCARD|UNWATCH|DBSIZE|RANDOMKEY|INFO|"
                                      r"TIME|LASTSAVE|ROLE|READONLY|FLUSHDB|FLUSHALL)$",
         walnut=REFUSED, why="as above"),
    dict(name="script about one server", cmd=r"^SCRIPT (KILL|DEBUG)( |$)",
         walnut=rb"-ERR unsupported command 'script (kill|debug)': it is about one server "
                rb"\(walnut sends SCRIPT LOAD, EXISTS and FLUSH to every server\)\r\n",
         why="SCRIPT LOAD, EXISTS and FLUSH go to every server; KILL and DEBUG are about one"),
    dict(name="move", cmd=r"^MOVE \S+ \d+$",
         walnut=rb"-ERR unsupported command 'move': walnut serves one database per pool "
                rb"\(redis_db\); the key would leave it\r\n",
         why="MOVE would take the key to a database walnut does not serve (twemproxy closes "
             "the connection)"),
    dict(name="after move", cmd=r"^EXISTS k10$", walnut=rb":1\r\n",
         why="the refused MOVE left the key where it was"),
    dict(name="refused transaction", cmd=r"^MULTI$",
         walnut=rb"-ERR unsupported command 'multi': transactions need a dedicated server "
                rb"connection; what follows is not run until EXEC or DISCARD\r\n",
         why="transactions need a dedicated server connection; the error says that what "
             "follows is not run (below)"),
    dict(name="refused transaction, body", cmd=r"^SET tx 1$",
         walnut=rb"-ERR not run: walnut refused this connection's MULTI \(transactions need a "
                rb"dedicated server connection\); EXEC or DISCARD ends it\r\n",
         why="MULTI is refused, so nothing after it runs until EXEC or DISCARD "
             "(redis-server: +QUEUED)"),
    dict(name="refused transaction, exec", cmd=r"^EXEC$",
         walnut=rb"-EXECABORT Transaction discarded because walnut refused its MULTI "
                rb"\(transactions need a dedicated server connection\)\r\n",
         why="EXEC ends the refused transaction, as redis-server ends one that cannot run"),
    dict(name="refused transaction, nothing ran", cmd=r"^GET tx$", walnut=rb"\$-1\r\n",
         why="the SET inside the refused transaction did not run (redis-server ran it at EXEC)"),
    dict(name="no transaction, dbsize", cmd=r"^GET s2$", walnut=rb"\$1\r\ny\r\n",
         why="FLUSHDB and FLUSHALL are refused, so the key is still there"),
    dict(name="bulk crlf", line=r'^raw "\*1\\r\\n\$4\\r\\nPINGxx',
         walnut=rb"-ERR Protocol error: bulk data not followed by CRLF\r\n",
         why="redis-server skips the two bytes after a bulk unseen; walnut checks them and "
             "closes (a request that lost its framing must not be forwarded)"),
    dict(name="max args", line=r'^raw "\*2000000\\r\\n"$',
         walnut=rb"-ERR Protocol error: invalid multibulk length\r\n",
         why="walnut bounds a request at 1,048,576 arguments (redis-server: 2^31-1, and waits "
             "for them)"),
]


def parse_args(text):
    out = []
    for tok in re.findall(r'"(?:[^"\\]|\\.)*"|<\d+\*[^>\s]*>|\S+', text):
        if tok.startswith('"'):
            out.append(ast.literal_eval("b" + tok))
        elif re.fullmatch(r"<\d+\*[^>\s]*>", tok):
            n, t = tok[1:-1].split("*", 1)
            out.append(ast.literal_eval('b"%s"' % t) * int(n))
        else:
            out.append(tok.encode())
    return out


class Case:
    def __init__(self, lineno, text):
        self.lineno, self.text = lineno, text
        self.fresh = text.startswith("fresh ")
        body = text[6:] if self.fresh else text
        self.raw = body.startswith("raw ")
        if self.raw:
            self.data = b"".join(ast.literal_eval("b" + q)
                                 for q in re.findall(r'"(?:[^"\\]|\\.)*"', body[4:]))
            self.cmds = None
        else:
            self.cmds = [c.strip() for c in body.split(" ;; ")]
            self.data = b"".join(h.resp(*parse_args(c)) for c in self.cmds)


def load_corpus():
    cases = []
    with open(CORPUS) as f:
        for i, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if line.strip() and not line.startswith("#"):
                cases.append(Case(i, line))
    return cases


def split_replies(data, n):
    """Up to n replies' raw bytes from data, and the bytes left over."""
    out, pos = [], 0
    while len(out) < n and pos < len(data):
        try:
            got = h.resp_parse(data, pos)
        except ValueError:
            break
        if got is None:
            break
        out.append(data[pos:got[1]])
        pos = got[1]
    return out, data[pos:]


class Runner:
    """One pass over the corpus against one port: (bytes, closed) per case."""

    def __init__(self, port):
        self.port, self.c = port, None

    def conn(self):
        if self.c is None:
            self.c = h.Raw(self.port, timeout=30)
        return self.c

    def drop(self):
        if self.c is not None:
            self.c.close()
            self.c = None

    def run(self, case):
        if case.fresh:
            self.drop()
            c = self.conn()
            c.send(case.data + h.resp("QUIT"))
            out = c.recv_until_closed(timeout=30)
            self.drop()
            if out.endswith(b"+OK\r\n"):
                return out[:-5], False
            return out, True
        c = self.conn()
        mark = b"$%d\r\n%s\r\n" % (len(SENTINEL), SENTINEL)
        try:
            c.send(case.data + h.resp("ECHO", SENTINEL))
        except OSError:
            pass
        end = time.monotonic() + 30
        while not c.buf.endswith(mark):
            try:
                more = c._fill(end)
            except ConnectionResetError:
                more = False
            except socket.timeout:
                out = c.buf + b"<no more within 30 s>"
                self.drop()
                return out, False
            if not more:
                out = c.buf
                self.drop()
                return out, True
        out = c.buf[:-len(mark)]
        c.buf = b""
        return out, False


@unittest.skipIf(h.UNDER_NUTCRACKER, NC_SKIP)
class TestRedisDifferential(h.ProxyTestCase):

    def test_corpus_through_walnut_equals_direct(self):
        cases = load_corpus()
        self.assertGreater(sum(len(c.cmds or [1]) for c in cases), 500)
        tmp = self.tmpdir()
        server = h.RedisServer(tmp, name="diff").start()
        self.addCleanup(server.stop)
        px = self.start_proxy(tmp, {"p": h.pool([server], redis=True, timeout=10000)},
                              workers=2, name="diff")
        results = {}
        for name, port in (("direct", server.port), ("walnut", px.port())):
            server.call("FLUSHALL")
            r = Runner(port)
            results[name] = [r.run(c) for c in cases]
            r.drop()
        used = set()
        problems = []
        for case, (dbytes, dclosed), (wbytes, wclosed) in zip(cases, results["direct"],
                                                              results["walnut"]):
            problems += self.compare(case, dbytes, dclosed, wbytes, wclosed, used)
        unused = [a["name"] for a in ALLOWED if a["name"] not in used]
        msg = "\n".join(problems)
        if unused:
            msg += "\nALLOWED entries no case needs any more: %s" % unused
        try:
            self.assertTrue(px.alive(), "walnut died")
            px.stop()
        except AssertionError as e:
            msg += "\nand walnut did not stop cleanly: %s" % str(e)[:3000]
            problems.append("stop")
        if problems or unused:
            self.fail("%d difference(s) from redis-server not in ALLOWED:\n%s" % (
                len(problems), msg))

    def allowed(self, key, text, direct, walnut, used):
        for a in ALLOWED:
            pat = a.get(key)
            if pat is None or not re.search(pat, text):
                continue
            w = a["walnut"]
            ok = w(direct, walnut) if callable(w) else re.fullmatch(w, walnut, re.S) is not None
            if ok:
                used.add(a["name"])
                return True
        return False

    def compare(self, case, dbytes, dclosed, wbytes, wclosed, used):
        where = "line %d" % case.lineno
        if case.raw:
            if (dbytes, dclosed) == (wbytes, wclosed):
                return []
            if self.allowed("line", case.text, dbytes, wbytes, used):
                return []
            return ["%s: %s\n    redis-server: %s closed=%s\n    walnut:       %s closed=%s" % (
                where, case.text[:120], h.show(dbytes, 240), dclosed, h.show(wbytes, 240),
                wclosed)]
        out = []
        dr, drest = split_replies(dbytes, len(case.cmds))
        wr, wrest = split_replies(wbytes, len(case.cmds))
        for i, cmd in enumerate(case.cmds):
            d = dr[i] if i < len(dr) else None
            w = wr[i] if i < len(wr) else None
            if d == w:
                continue
            if d is not None and w is not None and self.allowed("cmd", cmd, d, w, used):
                continue
            out.append("%s, command %d: %s\n    redis-server: %s\n    walnut:       %s" % (
                where, i + 1, cmd[:100], h.show(d or b"<nothing>", 240),
                h.show(w or b"<nothing>", 240)))
        if (drest, dclosed) != (wrest, wclosed):
            out.append("%s: after the replies, redis-server: %s closed=%s; walnut: %s closed=%s"
                       % (where, h.show(drest, 120), dclosed, h.show(wrest, 120), wclosed))
        return out


if __name__ == "__main__":
    h.main()
