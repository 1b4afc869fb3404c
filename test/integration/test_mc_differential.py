#!/usr/bin/python3
"""test_mc_differential.py: walnut against the memcached behind it, byte for byte.

Every record of test/data/mc_differential.txt (its header describes the
format) is sent, on a fresh connection and from a clean state, to

  direct  a memcached asked directly (the reference),
  one     walnut with one memcached as its only server,
  two     walnut with two memcached servers (keys spread over both) and the
          smallest buffer chunks (-m 512),

and what comes back is compared byte for byte: direct against one, and direct
against two with the cas uniques of VALUE lines masked (in front of two
servers they depend on placement). Replies are read up to a sentinel sent after
each part of a record (a noreply set and a get of a fresh value), up to EOF,
or, when the record ends with @eof, after half-closing the connection. The
three memcached servers start every record flushed and with the same cas
counter, so uniques are equal in the direct and one runs.

A difference fails the test unless the table ALLOWED lists it (what walnut
answers instead and why: walnut answers stats itself, swallows the data block
of a rejected storage line, serves lines memcached would close on, ...)
or KNOWN_BUGS lists it (a reported defect; the test fails when the defect is
gone, so that the entry is removed). An ALLOWED entry that no longer matches
what walnut does fails too.

Beyond the corpus: libmemcached's command-line tools and pymemcache run
against memcached and against walnut, and their results are compared under the
same two tables (names tool:* and pymemcache:*).

Run with Debian's /usr/bin/python3; WALNUT_BIN names the binary.
WALNUT_MCDIFF_ONLY=glob runs only the corpus records whose name matches;
WALNUT_MCDIFF_SHOW=1 prints every record's transcripts; WALNUT_MCDIFF_DUMP=file.json
writes them (hex) for a closer look.
"""

import fnmatch
import os
import re
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

HOST = h.HOST
CORPUS = os.path.join(h.source_dir(), "test", "data", "mc_differential.txt")
STEP_DEADLINE = 10.0       # seconds to wait for one part's replies (a hang shows as <<TIMEOUT>>)
SENTINEL_KEY = b"mcdiff:sentinel"
SYNC_KEY = b"mcdiff:sync"

# ---------------------------------------------------------------------------
# the corpus


class CorpusError(Exception):
    pass


class Record:
    """One request sequence: parts separated by boundaries.

    steps: [(pieces, boundary)], pieces a list of bytes or CAS (the unique
    placeholder); boundary None (end), ("wait",), ("pause", s), ("delay", s)
    or ("peek", command bytes).
    """

    def __init__(self, name, flags, steps, lineno):
        self.name, self.flags, self.steps, self.lineno = name, flags, steps, lineno

    def __repr__(self):
        return "<record %s (line %d)>" % (self.name, self.lineno)


CAS = object()  # \U: the last cas unique seen on this connection
NAME_RX = re.compile(r"[A-Za-z0-9_.:+\-]+\Z")
FLAGS = {"@eof", "@one", "@vsentinel"}


def parse_payload(text, lineno):
    """Turn a payload's escapes into steps (see the corpus header)."""
    steps, pieces, cur = [], [], bytearray()
    i, n = 0, len(text)

    def flush_cur():
        if cur:
            pieces.append(bytes(cur))
            cur.clear()

    def braces(j):
        if j >= n or text[j] != "{":
            raise CorpusError("line %d: '{' expected after \\%s" % (lineno, text[j - 1]))
        depth, k = 0, j + 1
        while k < n:  # \{...} may nest
            if text[k] == "\\":
                depth += text[k + 1:k + 2] == "{"
                k += 2
                continue
            if text[k] == "}":
                if depth == 0:
                    return text[j + 1:k], k + 1
                depth -= 1
            k += 1
        raise CorpusError("line %d: unterminated {" % lineno)

    def boundary(b):
        nonlocal pieces
        flush_cur()
        steps.append((pieces, b))
        pieces = []

    simple = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\", "s": b" "}
    while i < n:
        c = text[i]
        if c != "\\":
            cur += c.encode("utf-8")
            i += 1
            continue
        if i + 1 >= n:
            raise CorpusError("line %d: trailing backslash" % lineno)
        e = text[i + 1]
        i += 2
        if e in simple:
            cur += simple[e]
        elif e == "x":
            try:
                cur.append(int(text[i:i + 2], 16))
            except ValueError:
                raise CorpusError("line %d: bad \\x escape" % lineno) from None
            i += 2
        elif e == "{":
            body, i = braces(i - 1)
            count, sep, rep = body.partition("*")
            if not sep or not count.isdigit() or not rep:
                raise CorpusError("line %d: \\{N*TEXT} expected, not \\{%s}" % (lineno, body))
            inner = parse_payload(rep, lineno)
            if len(inner) != 1 or any(p is CAS for p in inner[0][0]):
                raise CorpusError("line %d: only byte escapes inside \\{N*TEXT}" % lineno)
            cur += b"".join(inner[0][0]) * int(count)
        elif e == "U":
            flush_cur()
            pieces.append(CAS)
        elif e == "W":
            boundary(("wait",))
        elif e in "PD":
            body, i = braces(i)
            if not body.isdigit():
                raise CorpusError("line %d: \\%s{ms} expected" % (lineno, e))
            boundary(("pause" if e == "P" else "delay", int(body) / 1000.0))
        elif e == "M":
            body, i = braces(i)
            if len(body.split()) < 2:
                raise CorpusError("line %d: \\M{<meta command> <key> ...} expected" % lineno)
            boundary(("peek", body.encode("utf-8")))
        else:
            raise CorpusError("line %d: unknown escape \\%s" % (lineno, e))
    flush_cur()
    steps.append((pieces, None))
    return steps


def load_corpus(path=CORPUS):
    records, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line != line.rstrip(" \t"):
                raise CorpusError("line %d: trailing whitespace (write \\s or \\t)" % lineno)
            fields = line.split(" ")
            name, flags, rest = fields[0], set(), 1
            while rest < len(fields) and fields[rest] in FLAGS:
                flags.add(fields[rest])
                rest += 1
            if not NAME_RX.match(name):
                raise CorpusError("line %d: bad record name %r" % (lineno, name))
            if name in seen:
                raise CorpusError("line %d: record %s already defined on line %d"
                                  % (lineno, name, seen[name]))
            seen[name] = lineno
            payload = " ".join(fields[rest:])
            if not payload:
                raise CorpusError("line %d: record %s has no payload" % (lineno, name))
            records.append(Record(name, flags, parse_payload(payload, lineno), lineno))
    return records


# ---------------------------------------------------------------------------
# transcripts


VALUE_CAS_RX = re.compile(rb"(VALUE \S+ \d+ \d+ )(\d+)\r\n")
PEEK_TTL_RX = re.compile(rb" t(\d+)")
VERSION_END_RX = re.compile(rb"VERSION [^\r\n]*\r\n\Z")


def last_cas(data):
    m = None
    for m in VALUE_CAS_RX.finditer(data):
        pass
    return m.group(2) if m else None


META_CAS_RX = re.compile(rb"(?m)^((?:HD|VA|EN|NF|NS|EX)\b[^\r\n]*? c)(\d+)(?=[ \r])")
ME_CAS_RX = re.compile(rb"(?m)^(ME \S+ [^\r\n]*?cas=)(\d+)")


def mask_cas(t):
    """Hide cas uniques (VALUE lines, meta c flags and me's cas=; pymemcache results
    tagged by tag_cas())."""
    t = VALUE_CAS_RX.sub(rb"\1<cas>\r\n", t)
    t = ME_CAS_RX.sub(rb"\1<cas>", META_CAS_RX.sub(rb"\1<cas>", t))
    return re.sub(rb"cas:\d+", b"cas:<cas>", t)


class Side:
    """Where a record is sent (a port) and how its backend state is peeked."""

    def __init__(self, name, port, peek_servers):
        self.name, self.port, self.peek_servers = name, port, peek_servers


class Runner:
    def __init__(self):
        self.nonce = 0

    def sentinel(self):
        self.nonce += 1
        v = b"%016x" % self.nonce
        req = b"set %s 0 0 %d noreply\r\n%s\r\nget %s\r\n" % (SENTINEL_KEY, len(v), v, SENTINEL_KEY)
        rep = b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (SENTINEL_KEY, len(v), v)
        return req, rep

    def run(self, rec, side):
        """The record's transcript on side: replies, with <<...>> markers between parts."""
        out = []
        seen = b""
        sock = socket.create_connection((HOST, side.port), timeout=STEP_DEADLINE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        closed = False
        # @eof half-closes after the last part that sends bytes; peeks may follow it
        last_send = max([i for i, (pieces, _) in enumerate(rec.steps) if pieces] or [0])
        try:
            for idx, (pieces, bnd) in enumerate(rec.steps):
                last = idx == last_send
                if not closed:
                    data = b"".join(
                        (last_cas(seen) or b"<no-cas-seen>") if p is CAS else p for p in pieces)
                    if bnd is not None and bnd[0] == "delay":
                        self._send(sock, data)
                        time.sleep(bnd[1])
                        continue
                    if last and "@eof" in rec.flags:
                        got, _, timed_out = self._exchange(sock, data, None, half_close=True)
                        closed = True
                    elif "@vsentinel" in rec.flags:
                        got, closed, timed_out = self._exchange(sock, data + b"version\r\n",
                                                                VERSION_END_RX)
                    else:
                        req, rep = self.sentinel()
                        got, closed, timed_out = self._exchange(sock, data + req, rep)
                    seen += got
                    out.append(got)
                    out.append(b"<<TIMEOUT>>" if timed_out else b"<<EOF>>" if closed else b"<<W>>")
                if bnd is None:
                    break
                if bnd[0] == "pause":
                    time.sleep(bnd[1])
                elif bnd[0] == "peek":
                    out.append(b"<<M " + self.peek(side, bnd[1]) + b">>")
        finally:
            sock.close()
        return b"".join(out)

    @staticmethod
    def _send(sock, data):
        try:
            sock.sendall(data)
        except OSError:
            pass

    def _exchange(self, sock, data, until, half_close=False):
        """Send data (from a thread: replies may be large) and read until `until`
        ends the input, EOF, or the deadline. Returns (bytes, eof, timed_out);
        the sentinel's reply is cut off."""
        err = []

        def writer():
            try:
                sock.sendall(data)
                if half_close:
                    sock.shutdown(socket.SHUT_WR)
            except OSError as e:
                err.append(e)

        t = None
        if len(data) > 65536:
            t = threading.Thread(target=writer, daemon=True)
            t.start()
        else:
            writer()
        buf = b""
        eof = timed_out = False
        end = time.monotonic() + STEP_DEADLINE
        while True:
            if isinstance(until, bytes) and buf.endswith(until):
                buf = buf[:-len(until)]
                break
            if isinstance(until, re.Pattern):
                m = until.search(buf)
                if m:
                    buf = buf[:m.start()]
                    break
            left = end - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            sock.settimeout(left)
            try:
                chunk = sock.recv(1 << 20)
            except socket.timeout:
                timed_out = True
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                eof = True
                break
            buf += chunk
        if t is not None:
            t.join(STEP_DEADLINE)
        return buf, eof, timed_out

    @staticmethod
    def peek(side, cmd):
        """A meta command asked of the backend(s) directly; with several, the one that has the key."""
        replies = [h.mc_command(port, cmd + b"\r\n", b"\r\n") for port in side.peek_servers]
        hits = [r for r in replies if not r.startswith(b"EN")]
        r = hits[0] if hits else replies[0]
        # TTLs count down: compare them to the nearest 10 seconds
        r = PEEK_TTL_RX.sub(lambda m: b" t~%d" % (round(int(m.group(1)) / 10.0) * 10), r)
        return r.rstrip(b"\r\n")


# ---------------------------------------------------------------------------
# memcached state between records


class Admin:
    """A kept connection to one memcached for resets between records."""

    def __init__(self, mc):
        self.mc = mc
        self.c = h.Raw(mc.port)

    def close(self):
        self.c.close()

    def cas_counter(self):
        self.c.send(b"set %s 0 0 1\r\nx\r\ngets %s\r\n" % (SYNC_KEY, SYNC_KEY))
        self.c.expect(b"STORED\r\n")
        line = self.c.recv_line()
        m = re.fullmatch(rb"VALUE \S+ 0 1 (\d+)\r\n", line)
        if not m:
            raise AssertionError("%s: gets %r -> %r" % (self.mc.name, SYNC_KEY, line))
        self.c.expect(b"x\r\nEND\r\n")
        return int(m.group(1))

    def bump(self, n):
        if n > 0:
            self.c.send(b"set %s 0 0 1 noreply\r\nx\r\n" % SYNC_KEY * n)

    def flush(self, deep=False):
        """flush_all; deep: also unlink what was flushed (the LRU crawler reclaims it).

        memcached flushes lazily: a flushed item stays in memory until it is
        touched or crawled, and a later delayed flush (flush_all 1000) makes it
        readable again. A record must not see the items of the records before.
        The keys the random pipelines use (a..h) are also deleted outright, so
        no crawl that missed one can let a delayed flush bring it back."""
        if deep:
            self.c.send(b"".join(b"delete %s noreply\r\n" % bytes([k])
                                 for k in b"abcdefgh"))
        self.c.send(b"verbosity 0\r\nflush_all\r\n")
        self.c.expect(b"OK\r\nOK\r\n", what="%s: reset" % self.mc.name)
        if not deep:
            return
        end = time.monotonic() + 10
        while True:  # the crawler may be busy with a crawl of memcached's own
            self.c.send(b"lru_crawler crawl all\r\n")
            line = self.c.recv_line()
            if line == b"OK\r\n":
                break
            if not line.startswith(b"BUSY") or time.monotonic() > end:
                raise AssertionError("%s: lru_crawler crawl all -> %r" % (self.mc.name, line))
            time.sleep(0.001)
        while True:  # a metadump is refused while the crawl runs
            self.c.send(b"lru_crawler metadump all\r\n")
            line = self.c.recv_line()
            if not line.startswith(b"BUSY"):
                break
            if time.monotonic() > end:
                raise AssertionError("%s: the LRU crawler is still busy" % self.mc.name)
            time.sleep(0.001)
        if line != b"END\r\n":
            self.c.recv_until(b"END\r\n")


def reset(admins):
    """Flush every server and bring their cas counters to the same value.

    The first flush also ends a delayed flush_all a record left pending."""
    for a in admins:
        a.flush(deep=True)
    counts = [a.cas_counter() for a in admins]
    top = max(counts)
    for a, n in zip(admins, counts):
        a.bump(top - n)
    for a in admins:
        # Unlinked, not only flushed: a flushed item stays visible to
        # `stats cachedump` until memcached reclaims it, whenever that is.
        a.c.send(b"delete %s noreply\r\n" % SYNC_KEY)
        a.flush()


# ---------------------------------------------------------------------------
# allowed differences and known bugs
#
# An entry names records (globs over record names; an entry naming a record
# exactly wins over a glob) and modes: "one" and "two" (the corpus through
# walnut in front of one or two memcached servers), "tool" and "tool2" (client
# tools and pymemcache through walnut in front of one or two servers:
# test_clients).
#
# ALLOWED: a deliberate difference. expect(memcached's transcript, record)
# gives walnut's exact transcript, and/or normalize() is applied to both sides
# first (for text that legitimately varies, such as counters). A covered record
# must then match exactly; one where walnut and memcached agree byte for byte
# fails (the entry is stale).
#
# KNOWN_BUGS: a defect of walnut, reported to the lead (ref). now is a regex
# that walnut's transcript fully matches while the defect stands; the record
# fails when walnut answers as expected (remove the entry) or answers anything
# else (look again, then update the entry).


class Entry:
    def __init__(self, records, what, why="", modes=("one", "two"), expect=None,
                 normalize=None, ref="", now=None, timing=False, may_agree=False):
        self.records = tuple(records) if isinstance(records, (list, tuple)) else (records,)
        self.what, self.why, self.modes, self.ref = what, why, modes, ref
        # timing: memcached's side depends on how its reads split the input (\D{ms});
        # a loaded machine may merge them, so agreeing with memcached is no staleness
        # may_agree: memcached's side depends on its state (an empty memcached agrees)
        self.timing = timing or may_agree
        self.expect, self.normalize = expect, normalize
        self.now = re.compile(now, re.S) if isinstance(now, bytes) else now
        self.used = 0

    def matches(self, name, mode):
        return mode in self.modes and any(fnmatch.fnmatchcase(name, p) for p in self.records)


STATS_BLOCK_RX = re.compile(rb"(?:STAT [^\r\n]*\r\n)+END\r\n")
VERSION_RX = re.compile(rb"VERSION [^\r\n]*\r\n")
ERROR_LINE_RX = re.compile(rb"(?:\A|(?<=\n))ERROR\r\n")
README = "README, How walnut serves memcached"


def normalize_stats(t):
    return STATS_BLOCK_RX.sub(b"<STATS>", t)


def drop_block_reply(t, rec):
    """memcached runs the data block of a rejected storage line as commands; walnut
    swallows it. In these records the block is one short word that memcached
    answers ERROR: drop that (the first line that is exactly ERROR)."""
    m = ERROR_LINE_RX.search(t)
    if m is None:
        raise ValueError("no ERROR line in memcached's transcript")
    return t[:m.start()] + t[m.end():]


def closed_after(reply):
    """walnut closes after `reply` (framing lost) where memcached reads on."""
    def expect(t, rec):
        i = t.index(reply) + len(reply)
        return t[:i] + b"<<EOF>>"
    return expect


def literal(b):
    return lambda t, rec: b


def normalize_memcstat(t):
    """memcstat prints each server's stats: keep the exit status and the server line."""
    return b"\n".join(line for line in t.split(b"\n")
                      if line.startswith((b"rc=", b"Server: ", b"stdout:", b"stderr:")))


def normalize_pymemcache_stats(t):
    m = re.match(rb"stats -> (\[.*\])\Z", t)
    if not m:
        return t
    names = set(re.findall(rb"\(b'([^']+)'", m.group(1)))
    need = {b"pid", b"uptime", b"time", b"version", b"curr_connections", b"cmd_get", b"cmd_set",
            b"get_hits", b"get_misses"}
    return b"stats -> <a dict with %s>" % b", ".join(sorted(need & names))


SWALLOWED = [
    "cas.unique_2p64", "cas.unique_neg", "cas.unique_junk", "cas.missing_unique",
    "cas.noreply_as_unique", "cas.two_extra_args", "key.len251_set", "key.len251_set_noreply",
    "key.len251_add", "key.len251_append", "key.len251_cas", "key.len251_replace",
    "key.len251_prepend", "key.len1000_set", "noreply.twice",
    "noreply.as_flags", "noreply.as_exptime", "noreply.before_extra",
    "noreply.cas_before_unique", "noreply.bad_flags", "noreply.bad_key_len",
    "args.*.two_extra", "args.set.many_tokens", "args.set.23_tokens", "args.set.24_tokens",
    "args.cas.five", "pipe.swallow_then_commands", "meta.key.long", "tokens.cas_30",
] + ["num.flags." + n for n in (
    "neg1", "hex", "junk_after", "alpha", "dot", "exp", "neg2p31", "neg2p31m1", "neg2p63",
    "2p64", "huge", "fullwidth1", "minus_alone", "plus_alone", "2p63_minus_after_tab")] + [
    "num.exptime." + n for n in (
        "hex", "junk_after", "alpha", "dot", "exp", "2p63", "u64max", "2p64", "huge",
        "fullwidth1", "spaces_plus", "minus_alone", "plus_alone", "neg_u64max")] + [
    "num.cas." + n for n in (
        "neg1", "hex", "junk_after", "alpha", "dot", "exp", "neg2p31", "neg2p31m1", "neg2p63",
        "2p64", "huge", "fullwidth1", "spaces_plus", "minus_alone", "plus_alone")]

ALLOWED = [
    Entry("stats.plain*", "stats is answered with walnut's own counters",
          "walnut answers stats itself, summed over its workers (%s)" % README,
          normalize=normalize_stats),
    Entry(["stats.group.slabs", "stats.group.items", "stats.group.settings", "stats.group.conns"],
          "a stats group describing one memcached's internals is answered as a memcached "
          "holding nothing answers it", "walnut has no slabs, items, settings or connections "
          "of a memcached and cannot merge its servers' (%s)" % README,
          expect=lambda t, rec: {
              "stats.group.slabs": b"STAT active_slabs 0\r\nSTAT total_malloced 0\r\nEND\r\n",
              "stats.group.items": b"END\r\n",
              "stats.group.settings": b"END\r\n",
              "stats.group.conns": b"END\r\n",
          }[rec.name] + b"END\r\n<<W>>", may_agree=True),
    Entry("stats.group.sizes_enable", "stats sizes_enable: STAT sizes_status error, "
          "STAT sizes_error not_supported (no END, as memcached)", "walnut keeps no item size "
          "histogram (%s)" % README,
          expect=lambda t, rec: t.replace(b"STAT sizes_status enabled\r\n",
                                          b"STAT sizes_status error\r\n"
                                          b"STAT sizes_error not_supported\r\n", 1)),
    Entry(["odd.admin_shutdown", "odd.slabs_reassign", "odd.cache_memlimit"],
          "admin commands answer ERROR", "they act on one memcached; walnut forwards no "
          "admin command (unknown words get ERROR, %s)" % README,
          expect=lambda t, rec: b"ERROR\r\n" + t[t.index(b"\r\n") + 2:]),
    Entry(["odd.watch", "odd.lru_crawler"], "admin commands answer ERROR",
          "as above; watch and lru_crawler metadump take over memcached's connection",
          expect=literal(b"ERROR\r\n<<EOF>>")),
    Entry(SWALLOWED, "the data block of a rejected storage line is swallowed",
          "memcached runs it as commands, so a value could smuggle one (%s)" % README,
          expect=drop_block_reply),
    Entry("pipe.smuggle_delete", "the data block of a rejected storage line is swallowed: "
          "the `delete v` inside it is not run", "as above",
          expect=literal(b"STORED\r\nCLIENT_ERROR bad command line format\r\n"
                         b"VALUE v 0 1\r\n1\r\nEND\r\n<<W>>")),
    Entry(["key.len251_multi_drops_pipelined_replies", "key.len251_multi_after_get"],
          "earlier pipelined replies are kept when a get line has a key over 250 bytes",
          "memcached 1.6.18 frees every reply not yet written (conn_release_items() in "
          "process_get_command()) when a get's key is too long, losing the STORED of earlier "
          "pipelined commands; walnut answers every request",
          expect=lambda t, rec: {
              "key.len251_multi_drops_pipelined_replies":
                  b"STORED\r\nSTORED\r\nCLIENT_ERROR bad command line format\r\n"
                  b"VALUE b 0 1\r\n2\r\nEND\r\n<<W>>",
              "key.len251_multi_after_get":
                  b"STORED\r\nVALUE a 0 1\r\n1\r\nEND\r\nSTORED\r\n"
                  b"CLIENT_ERROR bad command line format\r\nVALUE b 0 1\r\n2\r\nEND\r\n<<W>>",
          }[rec.name]),
    Entry("size.bytes_int_max_minus2", "a storage line larger than half the "
          "client_buffer_limit is "
          "answered as soon as the line is read", "walnut cannot hold it to forward it (%s); "
          "memcached answers only once the whole data block has arrived (never, if the client "
          "closes first); walnut answers at once and swallows the block as it comes" % README,
          expect=literal(b"SERVER_ERROR object too large for cache\r\n<<EOF>>")),
    Entry(["line.unknown_16k", "line.set_16k", "line.gat_20k_keys", "line.split_set_2k",
           "line.split_gat_3k", "line.split_gats_3k", "line.split_incr_3k",
           "line.split_leading_spaces_get"],
          "lines memcached refuses by closing the connection are served",
          "memcached 1.6.18 closes a connection once 2048 bytes of a line are buffered without "
          "its LF, unless the line starts with `get `/`gets ` after at most 100 spaces, and "
          "cannot hold a line of 16 KiB; walnut reads lines up to 64 KiB (retrieval lines of "
          "any length, parsed as they arrive) and sends its servers only lines they take: rebuilt from their tokens, a long "
          "gat/gats split into several",
          expect=lambda t, rec: {
              "line.unknown_16k": b"ERROR\r\nEND\r\n<<W>>",
              "line.set_16k": b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n<<EOF>>",
              "line.gat_20k_keys": b"STORED\r\n<<W>>VALUE k 0 1\r\nx\r\nEND\r\n<<EOF>>",
              "line.split_set_2k": b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n<<W>>",
              "line.split_gat_3k": b"STORED\r\n<<W>>VALUE k 0 1\r\nx\r\nEND\r\n<<W>>",
              "line.split_gats_3k": b"STORED\r\n<<W>>VALUE k 0 1 <cas>\r\nx\r\nEND\r\n<<W>>",
              "line.split_incr_3k": b"STORED\r\n<<W>>2\r\nVALUE k 0 1\r\n2\r\nEND\r\n<<W>>",
              "line.split_leading_spaces_get":
                  b"STORED\r\n<<W>>VALUE k 0 1\r\nx\r\nEND\r\n<<W>>",
          }[rec.name], normalize=lambda t: VALUE_CAS_RX.sub(rb"\1<cas>\r\n", t), timing=True),
    Entry("bound.get_100001_keys", "a get of more than 100,000 keys: CLIENT_ERROR too many "
          "keys", "a bound against hostile clients (%s); memcached and pymemcache send a few "
          "thousand keys at most" % README,
          expect=literal(b"STORED\r\nCLIENT_ERROR too many keys\r\nVALUE k7 0 1\r\nx\r\n"
                         b"END\r\n<<W>>")),
    Entry("line.set_70k", "a line over walnut's 64 KiB limit: CLIENT_ERROR line too long, "
          "then close", "memcached closes without a word",
          expect=literal(b"CLIENT_ERROR line too long\r\n<<EOF>>")),
]

ALLOWED += [
    Entry("tokens.mg_19_without_O", "a meta line at memcached's 19-token limit without an O "
          "token of its own is refused as memcached refuses one token more", "walnut adds its "
          "own O token to every meta line to match the reply to it; untagged, a server that "
          "drops or repeats a reply could hand another client's value to this one (%s)" % README,
          # (the refused line's T30 never ran: the next mg sees no TTL)
          expect=lambda t, rec: re.sub(rb"VA 1 f0 c[0-9<>a-z]+ s1 t-1 h0 l0\r\n1\r\n",
                                       b"CLIENT_ERROR options flags are too long\r\n", t,
                                       count=1).replace(b" t30 ", b" t-1 ")),
]

KNOWN_BUGS = [
]


ALLOWED += [
    Entry("tool:memcstat", "memcstat prints walnut's own stats", "walnut answers stats itself",
          modes=("tool",), normalize=normalize_memcstat),
    Entry("tool:memcstat_args_slabs", "memcstat --args=slabs prints the two totals of a "
          "memcached holding nothing", "walnut has no slabs (%s)" % README, modes=("tool",),
          expect=lambda t, rec: re.sub(rb"(?s)(Server: [^\n]*\n).*?(\n\nstderr)",
                                       rb"\1\tactive_slabs: 0\n\ttotal_malloced: 0\2", t)),
    Entry("tool:memcdump", "memcdump lists no keys", "memcdump walks `stats items` and `stats "
          "cachedump`, which a proxy answers as a memcached holding nothing (%s); memcached's own "
          "list depends on whether the item is in its LRU listing yet" % README, modes=("tool",),
          expect=lambda t, rec: re.sub(rb"(?s)(stdout:\n).*?(\nstderr)", rb"\1\2", t),
          may_agree=True),
    Entry("pymemcache:stats", "stats() returns walnut's counters", "walnut answers stats itself",
          modes=("tool", "tool2"), normalize=normalize_pymemcache_stats),
    Entry(["pymemcache:stats_slabs", "pymemcache:stats_settings"], "stats(<group>) returns what "
          "a memcached holding nothing returns", "stats groups describe one memcached (%s)"
          % README, modes=("tool", "tool2"), expect=lambda t, rec: {
              b"stats slabs": b"stats slabs -> [(b'active_slabs', 0), (b'total_malloced', 0)]",
              b"stats settings": b"stats settings -> []"}[t.split(b" -> ")[0]]),
]


# ---------------------------------------------------------------------------
# judging


def show(b, limit=700):
    return h.show(b, limit)


class Judge:
    """Decides, for one record and mode, whether walnut's transcript is acceptable."""

    def __init__(self):
        self.failures, self.xfails, self.allowed, self.passed = [], [], [], 0

    @staticmethod
    def find(table, name, mode):
        hits = [e for e in table if e.matches(name, mode)]
        exact = [e for e in hits if name in e.records]
        if len(hits) > 1 and len(exact) == 1:
            return exact[0]
        if len(hits) > 1:
            raise AssertionError("%s (%s): %d entries of one table match" % (name, mode, len(hits)))
        return hits[0] if hits else None

    def judge(self, name, mode, mc, wn, rec=None):
        allow = self.find(ALLOWED, name, mode)
        bug = self.find(KNOWN_BUGS, name, mode)
        want, got = mc, wn
        if allow is not None:
            allow.used += 1
            if allow.expect is not None:
                try:
                    want = allow.expect(mc, rec)
                except (ValueError, IndexError, KeyError) as e:
                    want = b"<<ALLOWED.expect does not apply: %s>>" % str(e).encode()
            if allow.normalize is not None:
                want, got = allow.normalize(want), allow.normalize(got)
        same = want == got
        where = "%s [%s]" % (name, mode)
        detail = "\n    memcached: %s\n    walnut:    %s" % (show(mc), show(wn))
        if allow is not None:
            detail += "\n    expected (ALLOWED: %s): %s" % (allow.what, show(want))
        if bug is not None:
            bug.used += 1
            if same:
                self.failures.append("%s: KNOWN_BUGS %s (%s): walnut now answers as expected; "
                                     "remove the entry%s" % (where, bug.ref, bug.what, detail))
            elif bug.now is not None and not bug.now.fullmatch(wn):
                self.failures.append("%s: KNOWN_BUGS %s (%s): walnut's answer changed and is "
                                     "still wrong; look again and update the entry%s"
                                     % (where, bug.ref, bug.what, detail))
            else:
                self.xfails.append((bug.ref, where))
            return
        if not same:
            self.failures.append("%s: walnut differs%s" % (where, detail))
        elif allow is not None and mc == wn and not allow.timing:
            self.failures.append("%s: ALLOWED entry '%s' covers it but walnut and memcached "
                                 "agree exactly; drop the entry or narrow it" % (where, allow.what))
        elif allow is not None:
            self.allowed.append(where)
        else:
            self.passed += 1

    def unused(self, modes):
        out = []
        for table, label in ((ALLOWED, "ALLOWED"), (KNOWN_BUGS, "KNOWN_BUGS")):
            for e in table:
                if not e.used and any(m in modes for m in e.modes):
                    out.append("%s entry '%s' matches nothing that ran" % (label, e.what))
        return out

    def report(self, what, stream=sys.stderr):
        stream.write("\n%s: %d identical, %d allowed differences, %d known bugs, %d failures\n"
                     % (what, self.passed, len(self.allowed), len(self.xfails),
                        len(self.failures)))
        by_ref = {}
        for ref, where in self.xfails:
            by_ref.setdefault(ref, []).append(where)
        for ref in sorted(by_ref):
            stream.write("  known bug %s: %s\n" % (ref, ", ".join(by_ref[ref])))
        stream.flush()


# ---------------------------------------------------------------------------
# clients: libmemcached's tools and pymemcache, against memcached and walnut


def normalize_ports(t, ports):
    for p in ports:
        t = re.sub(rb"(?<!\d)%d(?!\d)" % p, b"<port>", t)
    return t


def run_tool(argv, cwd=None, timeout=60):
    """One tool run as a transcript: exit status, stdout, stderr."""
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                       cwd=cwd)
    return b"rc=%d\nstdout:\n%s\nstderr:\n%s" % (r.returncode, r.stdout, r.stderr)


def tool(*names):
    return h.find_tool(*names, package="libmemcached-tools")


def tool_checks(tmp):
    """[(name, fn(port) -> transcript)] for libmemcached's command-line tools."""
    files = {"small.txt": b"hello walnut\n" * 3,
             "large.bin": bytes((i * 131 + 7) & 0xff for i in range(600000)),
             "empty": b""}
    for name, data in files.items():
        with open(os.path.join(tmp.path, name), "wb") as f:
            f.write(data)

    def srv(port):
        return "--servers=%s:%d" % (HOST, port)

    def cp_cat_rm(port):
        out = [run_tool([tool("memccp"), srv(port)] + sorted(files), cwd=tmp.path)]
        for name in sorted(files):
            out.append(run_tool([tool("memccat"), srv(port), name]))
        out.append(run_tool([tool("memcexist"), srv(port), "small.txt"]))
        out.append(run_tool([tool("memctouch"), srv(port), "--expire=100", "small.txt"]))
        out.append(run_tool([tool("memcrm"), srv(port), "small.txt"]))
        for name in ("small.txt", "nope"):
            out.append(run_tool([tool("memccat"), srv(port), name]))
            out.append(run_tool([tool("memcexist"), srv(port), name]))
            out.append(run_tool([tool("memctouch"), srv(port), "--expire=100", name]))
            out.append(run_tool([tool("memcrm"), srv(port), name]))
        out.append(run_tool([tool("memcflush"), srv(port)]))
        out.append(run_tool([tool("memccat"), srv(port), "large.bin"]))
        return b"\n----\n".join(out)

    def dump(port):
        run_tool([tool("memccp"), srv(port), "small.txt"], cwd=tmp.path)
        return run_tool([tool("memcdump"), srv(port)], timeout=30)

    def slap(port):
        out = []
        for test in ("set", "get", "mget"):
            t = run_tool([tool("memcslap"), srv(port), "--concurrency=2", "--execute-number=300",
                          "--test=%s" % test])
            out.append(re.sub(rb"\d+\.\d+ seconds", b"<t> seconds", t))
        return b"\n----\n".join(out)

    def aslap(port):
        t = run_tool([tool("memcaslap"), "-s", "%s:%d" % (HOST, port), "-x", "2000", "-T", "1",
                      "-c", "1"])
        keep = [line for line in t.split(b"\n") if re.match(
            rb"rc=|(cmd_get|cmd_set|get_misses|verify_misses|expired_get): ", line)]
        return b"\n".join(keep)

    return [
        ("tool:memcping", lambda port: run_tool([tool("memcping"), srv(port)])),
        ("tool:memcstat", lambda port: run_tool([tool("memcstat"), srv(port)])),
        ("tool:memcstat_server_version",
         lambda port: run_tool([tool("memcstat"), "--server-version", srv(port)])),
        ("tool:memcstat_args_slabs",
         lambda port: run_tool([tool("memcstat"), "--args=slabs", srv(port)])),
        ("tool:memccp_memccat_memcrm", cp_cat_rm),
        ("tool:memcdump", dump),
        ("tool:memccapable", lambda port: run_tool(
            [tool("memccapable"), "-h", HOST, "-p", str(port), "-a", "-t", "5"], timeout=120)),
        ("tool:memcslap", slap),
        ("tool:memcaslap", aslap),
    ]


def tag_cas(value_cas):
    """(value, cas) from gets, the cas marked so that mask_cas() can hide it."""
    value, cas = value_cas
    return value, "cas:%s" % (cas.decode() if cas is not None else None)


def pymemcache_checks():
    """[(name, fn(port) -> transcript)] for pymemcache's client calls."""
    from pymemcache.client.base import Client
    from pymemcache.exceptions import MemcacheError

    def calls(port, script):
        c = Client((HOST, port), connect_timeout=10, timeout=h.IO_TIMEOUT, default_noreply=False)
        out = []
        try:
            for what, fn in script:
                try:
                    r = fn(c)
                except MemcacheError as e:
                    r = "%s(%s)" % (type(e).__name__, e)
                if isinstance(r, dict):
                    r = sorted(r.items())
                out.append("%s -> %r" % (what, r))
        finally:
            c.close()
        return "\n".join(out).encode()

    big = bytes((i * 7) & 0xff for i in range(1000000))
    keys = [b"pm:%d" % i for i in range(12)]
    ops = [
        ("set", lambda c: c.set(b"a", b"1")),
        ("get", lambda c: c.get(b"a")),
        ("get missing", lambda c: c.get(b"missing")),
        ("set_many", lambda c: c.set_many({k: b"v" + k for k in keys})),
        ("get_many", lambda c: c.get_many(keys + [b"missing"])),
        ("gets", lambda c: tag_cas(c.gets(b"a"))),
        ("cas right", lambda c: c.cas(b"a", b"2", c.gets(b"a")[1])),
        ("cas wrong", lambda c: c.cas(b"a", b"3", b"1")),
        ("cas missing", lambda c: c.cas(b"missing", b"3", b"1")),
        ("gets_many", lambda c: {k: tag_cas(v) for k, v in c.gets_many(keys[:4]).items()}),
        ("add existing", lambda c: c.add(b"a", b"x")),
        ("add new", lambda c: c.add(b"n", b"10")),
        ("replace", lambda c: c.replace(b"n", b"20")),
        ("replace missing", lambda c: c.replace(b"missing", b"x")),
        ("append", lambda c: c.append(b"a", b"+")),
        ("prepend", lambda c: c.prepend(b"a", b"-")),
        ("get a", lambda c: c.get(b"a")),
        ("incr", lambda c: c.incr(b"n", 5)),
        ("decr", lambda c: c.decr(b"n", 100)),
        ("incr wrap", lambda c: (c.incr(b"n", 18446744073709551615), c.incr(b"n", 2))),
        ("incr missing", lambda c: c.incr(b"missing", 1)),
        ("incr non-numeric", lambda c: c.incr(b"a", 1)),
        ("touch", lambda c: c.touch(b"a", 100)),
        ("touch missing", lambda c: c.touch(b"missing", 100)),
        ("set big", lambda c: c.set(b"big", big)),
        ("get big", lambda c: c.get(b"big") == big),
        ("noreply set", lambda c: c.set(b"q", b"q", noreply=True)),
        ("get q", lambda c: c.get(b"q")),
        ("delete", lambda c: c.delete(b"a")),
        ("delete missing", lambda c: c.delete(b"a")),
        ("delete_many", lambda c: c.delete_many(keys)),
        ("get_many after", lambda c: c.get_many(keys)),
        ("flush_all", lambda c: c.flush_all()),
        ("get after flush", lambda c: c.get(b"n")),
        ("flush_all delayed", lambda c: c.flush_all(delay=1000)),
        ("quit", lambda c: c.quit()),
    ]
    return [
        ("pymemcache:version", lambda port: calls(port, [("version", lambda c: c.version())])),
        ("pymemcache:stats", lambda port: calls(port, [("stats", lambda c: c.stats())])),
        ("pymemcache:stats_slabs", lambda port: calls(
            port, [("stats slabs", lambda c: c.stats("slabs"))])),
        ("pymemcache:stats_settings", lambda port: calls(
            port, [("stats settings", lambda c: c.stats("settings"))])),
        ("pymemcache:commands", lambda port: calls(port, ops)),
        ("pymemcache:set_too_big", lambda port: calls(port, [
            ("set", lambda c: c.set(b"big", b"old")),
            ("set too big", lambda c: c.set(b"big", big + big)),
            ("get big after", lambda c: c.get(b"big"))])),
    ]


class McDifferential(h.SharedProxyCase):
    admins = ()

    @classmethod
    def start_shared(cls):
        a, b, c = (cls.shared_server(h.Memcached, n) for n in ("direct", "b", "c"))
        cls.admins = [Admin(m) for m in cls.servers]
        # walnut even under WALNUT_TEST_PROXY=nutcracker: the tables describe walnut
        one = cls.shared_proxy({"one": h.pool([b], timeout=10000)}, workers=2, kind="walnut",
                               name="walnut-one")
        # the smallest buffer chunks (-m 512): lines and values straddle them
        two = cls.shared_proxy({"two": h.pool([b, c], timeout=10000)}, workers=2, kind="walnut",
                               name="walnut-two", extra=("-m", "512"))
        cls.direct = Side("direct", a.port, [a.port])
        cls.one = Side("one", one.port(), [b.port])
        cls.two = Side("two", two.port(), [b.port, c.port])

    @classmethod
    def _stop_all(cls, check):
        try:
            for a in cls.admins:
                a.close()
        finally:
            super()._stop_all(check)

    def test_corpus(self):
        records = load_corpus()
        only = os.environ.get("WALNUT_MCDIFF_ONLY")
        if only:
            records = [r for r in records if fnmatch.fnmatchcase(r.name, only)]
        showall = bool(os.environ.get("WALNUT_MCDIFF_SHOW"))
        dump_path = os.environ.get("WALNUT_MCDIFF_DUMP")
        dump = [] if dump_path else None
        runner, judge = Runner(), Judge()
        a, b, c = self.admins
        corpus_errors = []
        t0 = time.monotonic()
        slow = []
        for rec in records:
            t1 = time.monotonic()
            reset(self.admins)
            mc = runner.run(rec, self.direct)
            if b"<<TIMEOUT>>" in mc:
                corpus_errors.append("%s (line %d): memcached itself did not answer the "
                                     "sentinel; end the record with @eof or complete it: %s"
                                     % (rec.name, rec.lineno, show(mc)))
            one = runner.run(rec, self.one)
            for m in (b, c):
                m.flush(deep=True)
            two = runner.run(rec, self.two) if "@one" not in rec.flags else None
            if showall:
                sys.stderr.write("%s\n  mc:  %s\n  one: %s\n  two: %s\n" % (
                    rec.name, show(mc), show(one), show(two) if two is not None else "-"))
            if dump is not None:
                dump.append({"name": rec.name, "mc": mc.hex(), "one": one.hex(),
                             "two": two.hex() if two is not None else None})
            judge.judge(rec.name, "one", mc, one, rec)
            if two is not None:
                judge.judge(rec.name, "two", mask_cas(mc), mask_cas(two), rec)
            self.assertProxyAlive()
            if time.monotonic() - t1 > 1.0:
                slow.append("%s %.1fs" % (rec.name, time.monotonic() - t1))
        if slow:
            sys.stderr.write("mc differential: slow records: %s\n" % ", ".join(slow))
        if dump_path:
            import json
            with open(dump_path, "w") as f:
                json.dump(dump, f, indent=0)
        elapsed = time.monotonic() - t0
        judge.report("mc differential")
        sys.stderr.write("mc differential: %d records in %.1fs\n" % (len(records), elapsed))
        if not only:
            judge.failures += judge.unused(("one", "two"))
        problems = corpus_errors + judge.failures
        if problems:
            self.fail("%d problem(s):\n%s" % (len(problems), "\n".join(problems)))

    def test_clients(self):
        """libmemcached's tools and pymemcache against memcached and against walnut."""
        judge = Judge()
        ports = [m.port for m in self.servers] + [self.one.port, self.two.port]
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        checks = [(n, fn, ("tool",)) for n, fn in tool_checks(tmp)] + \
                 [(n, fn, ("tool", "tool2")) for n, fn in pymemcache_checks()]
        for name, fn, modes in checks:
            t1 = time.monotonic()
            reset(self.admins)  # as for the corpus: b is untouched while direct runs
            mc = normalize_ports(fn(self.direct.port), ports)
            wn = normalize_ports(fn(self.one.port), ports)
            judge.judge(name, "tool", mc, wn)
            if "tool2" in modes:
                for m in self.admins[1:]:
                    m.flush(deep=True)
                wn2 = normalize_ports(fn(self.two.port), ports)
                judge.judge(name, "tool2", mask_cas(mc), mask_cas(wn2))
            self.assertProxyAlive()
            if os.environ.get("WALNUT_MCDIFF_SHOW"):
                sys.stderr.write("%s: %.1fs\n" % (name, time.monotonic() - t1))
        judge.report("clients")
        problems = judge.failures + judge.unused(("tool", "tool2"))
        if problems:
            self.fail("%d problem(s):\n%s" % (len(problems), "\n".join(problems)))


if __name__ == "__main__":
    h.main()
