"""fakes.py: misbehaving memcached and Redis backends for the hostile tests.

Each fake is a small threaded TCP server on 127.0.0.1 with a kernel-chosen
port. It frames the memcached text protocol just enough (request lines, and
the data block of storage commands) and answers through reply(), which a
subclass overrides to misbehave in one controlled way. A reply is bytes, or a
list of (bytes, delay_before_seconds) steps to send slowly; every delay is
cut short by stop(). Health probes (`version`) are answered normally unless
a subclass says otherwise, so walnut's control thread sees a live server.

Every thread ends when stop() closes the listener and the connections; the
tests register stop() as a cleanup.
"""

import select
import socket
import threading
import time

HOST = "127.0.0.1"
# a reply step's delay: until the connection's next request has come (10 s at most)
NEXT_REQUEST = "next request"
STORAGE = (b"set", b"add", b"replace", b"append", b"prepend", b"cas")


class FakeBackend:
    """Base: accepts, frames requests, sends whatever reply() returns."""

    VERSION = b"VERSION 1.6.18\r\n"

    def __init__(self, name="fake", rcvbuf=None):
        self.name = name
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf is not None:  # connections accepted take it: a small kernel buffer
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.lsock.bind((HOST, 0))
        self.lsock.listen(128)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.conns = []
        self.threads = []
        self.received = []      # (connection number, request line) in arrival order
        self.nconns = 0
        t = threading.Thread(target=self._accept, name="%s-accept" % name, daemon=True)
        t.start()
        self.threads.append(t)

    @property
    def addr(self):
        return "%s:%d" % (HOST, self.port)

    # -- override ------------------------------------------------------------

    def reply(self, cid, parts, data):
        """The answer to one request: bytes, or [(bytes, delay_before_s), ...]."""
        if parts and parts[0] == b"version":
            return self.VERSION
        return b"ERROR\r\n"

    # -- machinery -----------------------------------------------------------

    def requests(self, ignore_probes=True):
        with self.lock:
            out = list(self.received)
        if ignore_probes:
            out = [(c, line) for c, line in out if line != b"version"]
        return out

    def _accept(self):
        while not self.stop_event.is_set():
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                if self.stop_event.is_set():
                    conn.close()
                    return
                self.nconns += 1
                cid = self.nconns
                self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, cid),
                                 name="%s-conn%d" % (self.name, cid), daemon=True)
            t.start()
            with self.lock:
                self.threads.append(t)

    def _send(self, conn, reply):
        if isinstance(reply, (bytes, bytearray)):
            if reply:
                conn.sendall(reply)
            return True
        for chunk, delay in reply:
            if delay == NEXT_REQUEST:
                if not self._wait_readable(conn):
                    return False
            elif delay and self.stop_event.wait(delay):
                return False
            if chunk:
                conn.sendall(chunk)
        return True

    dripping = frozenset()  # connections read only when wait_turn() allows

    def wait_turn(self):
        """Wait until a connection in `dripping` may be read; True: stopping."""
        return False

    def _wait_readable(self, conn, cap=10.0):
        """Wait until conn has bytes to read (the next request came), at most
        cap seconds; False: stopping."""
        end = time.monotonic() + cap
        while time.monotonic() < end:
            if self.stop_event.is_set():
                return False
            if select.select([conn], [], [], 0.05)[0]:
                return True
        return True

    def _serve(self, conn, cid):
        buf = b""
        try:
            while not self.stop_event.is_set():
                if cid in self.dripping and self.wait_turn():
                    return
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while True:
                    i = buf.find(b"\r\n")
                    if i < 0:
                        break
                    line = buf[:i]
                    parts = line.split()
                    need = i + 2
                    if parts and parts[0] in STORAGE and len(parts) >= 5 and parts[4].isdigit():
                        need = i + 2 + int(parts[4]) + 2
                        if len(buf) < need:
                            break
                    data = buf[i + 2:need - 2] if need > i + 2 else b""
                    buf = buf[need:]
                    with self.lock:
                        self.received.append((cid, line))
                    if not self._send(conn, self.reply(cid, parts, data)):
                        return
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def stop(self):
        self.stop_event.set()
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        except OSError:
            pass
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
            threads = list(self.threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass
        for t in threads:
            t.join(5)


class ProbeOnlyBackend(FakeBackend):
    """Answers the health probe (`version`) and nothing else: every real
    request gets a line no memcached would send."""

    def reply(self, cid, parts, data):
        if parts and parts[0] == b"version":
            return self.VERSION
        return b"HELLO\r\n"


class BoomBackend(FakeBackend):
    """A memcached that answers probes and every `get` (END), but answers a
    get of a key starting `boom` with a line no memcached sends: one failed
    request exactly when the test asks for one."""

    def reply(self, cid, parts, data):
        if parts and parts[0] == b"version":
            return self.VERSION
        if len(parts) >= 2 and parts[0] == b"get":
            return b"HELLO\r\n" if parts[1].startswith(b"boom") else b"END\r\n"
        return b"ERROR\r\n"


class ServerErrorBackend(FakeBackend):
    """Answers the probe; every other request gets the one line it was given
    (say a long SERVER_ERROR)."""

    def __init__(self, line, name="server-error"):
        self.line = line
        super().__init__(name)

    def reply(self, cid, parts, data):
        if parts and parts[0] == b"version":
            return self.VERSION
        return self.line


class PartFailBackend(FakeBackend):
    """A memcached failing a get part-way, as it does out of memory: the
    hits for its first `hits` keys (each value `value`), then
    `SERVER_ERROR out of memory writing get response`, no END; with fewer
    keys than that, every hit and END. Each reply `delay` seconds late."""

    LINE = b"SERVER_ERROR out of memory writing get response\r\n"

    def __init__(self, value, hits=1, delay=0.0, name="part-fail"):
        self.value, self.hits, self.delay = value, hits, delay
        super().__init__(name)

    def reply(self, cid, parts, data):
        if parts and parts[0] == b"version":
            return self.VERSION
        if parts and parts[0] == b"get":
            out = b"".join(b"VALUE %s 0 %d\r\n%s\r\n" % (k, len(self.value), self.value)
                           for k in parts[1:1 + self.hits])
            return [(out + (self.LINE if len(parts) - 1 > self.hits else b"END\r\n"),
                     self.delay)]
        return b"ERROR\r\n"


class LeakyBackend(FakeBackend):
    """Answers `get <k>` from a small dict, correctly, then appends a VALUE
    block nobody asked for (a stray reply meant for no one)."""

    EXTRA = b"VALUE secret 0 6\r\nsecret\r\nEND\r\n"

    def __init__(self, values, name="leaky"):
        self.values = dict(values)  # {key bytes: value bytes}
        super().__init__(name)

    def reply(self, cid, parts, data):
        if parts and parts[0] == b"version":
            return self.VERSION
        if parts and parts[0] in (b"get", b"gets"):
            out = b""
            for k in parts[1:]:
                if k in self.values:
                    v = self.values[k]
                    out += b"VALUE %s 0 %d\r\n%s\r\n" % (k, len(v), v)
            return out + b"END\r\n" + self.EXTRA
        return b"ERROR\r\n"


class MixupBackend(FakeBackend):
    """Answers every get and mg with another key's item (`secret`): a get
    with its VALUE line, an mg with the request's own O token (so the tag
    matches) and, when asked for k, `ksecret`; an ms with k, HD `ksecret`."""

    def reply(self, cid, parts, data):
        if parts and parts[0] == b"version":
            return self.VERSION
        if parts and parts[0] == b"get":
            return b"VALUE secret 0 6\r\nSECRET\r\nEND\r\n"
        if parts and parts[0] in (b"mg", b"ms"):
            flags = parts[2:] if parts[0] == b"mg" else parts[3:]
            echo = [f for f in flags if f[:1] == b"O"]
            if b"k" in flags:
                echo.append(b"ksecret")
            if parts[0] == b"ms":
                return b" ".join([b"HD"] + echo) + b"\r\n"
            return b" ".join([b"VA 6"] + echo) + b"\r\nSECRET\r\n"
        return b"ERROR\r\n"


class SlowValueBackend(FakeBackend):
    """`get <key>` of its one big value: the reply goes out in `chunks` pieces,
    `gap` seconds apart (steady progress, slower in total than any timeout).
    With stall_after set, it sends that many pieces and then nothing more
    (it stays connected) for `stall` seconds."""

    def __init__(self, key, value, chunks, gap, stall_after=None, stall=30.0, name="slow"):
        self.key, self.value = key, value
        self.chunks, self.gap = chunks, gap
        self.stall_after, self.stall = stall_after, stall
        super().__init__(name)

    def full_reply(self):
        return b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (self.key, len(self.value), self.value)

    def reply(self, cid, parts, data):
        if parts and parts[0] == b"version":
            return self.VERSION
        if parts and parts[0] in (b"get", b"gets") and parts[1:] == [self.key]:
            whole = self.full_reply()
            size = -(-len(whole) // self.chunks)
            pieces = [whole[i:i + size] for i in range(0, len(whole), size)]
            steps = [(p, 0 if i == 0 else self.gap) for i, p in enumerate(pieces)]
            if self.stall_after is not None:
                steps = steps[:self.stall_after] + [(b"", self.stall)]
            return steps
        if parts and parts[0] in (b"get", b"gets"):
            return b"END\r\n"
        return b"ERROR\r\n"


class StallingBackend(FakeBackend):
    """Answers the probe; on a connection's first storage command it stops
    reading that connection (it stays open) until go() is called, then
    stores everything it is sent (STORED) and answers gets from what it
    stored. While stalled, what walnut writes to it backs up in walnut."""

    def __init__(self, name="stalling", rcvbuf=None):
        self.go_event = threading.Event()
        self.stalled = 0
        self.store = {}
        super().__init__(name, rcvbuf)

    def go(self):
        self.go_event.set()

    def reply(self, cid, parts, data):
        if parts and parts[0] == b"version":
            return self.VERSION
        if parts and parts[0] in STORAGE:
            if not self.go_event.is_set():
                with self.lock:
                    self.stalled += 1
                while not self.go_event.wait(0.05):
                    if self.stop_event.is_set():
                        return b""
            with self.lock:
                self.store[parts[1]] = data
            return b"STORED\r\n"
        if parts and parts[0] in (b"get", b"gets"):
            out = b""
            with self.lock:
                for k in parts[1:]:
                    if k in self.store:
                        v = self.store[k]
                        out += b"VALUE %s 0 %d\r\n%s\r\n" % (k, len(v), v)
            return out + b"END\r\n"
        return b"ERROR\r\n"


class PhasedReadBackend(FakeBackend):
    """Answers the probe, and every storage command STORED; a connection that
    has carried one is read only `read_for` seconds in every `read_for +
    pause_for` (a server that stops reading and reads again, over and over;
    probes are answered at once)."""

    def __init__(self, read_for=0.5, pause_for=2.0, name="phased-read", rcvbuf=None):
        self.read_for, self.pause_for = read_for, pause_for
        self.t0 = time.monotonic()
        self.dripping = set()
        super().__init__(name, rcvbuf)

    def wait_turn(self):
        cycle = self.read_for + self.pause_for
        into = (time.monotonic() - self.t0) % cycle
        return into >= self.read_for and self.stop_event.wait(cycle - into)

    def reply(self, cid, parts, data):
        if parts and parts[0] == b"version":
            return self.VERSION
        if parts and parts[0] in STORAGE:
            self.dripping.add(cid)
            return b"STORED\r\n"
        return b"ERROR\r\n"


class SlowProbeBackend(FakeBackend):
    """Answers the health probe `delay` seconds late (every other request
    ERROR); `probes` counts the probes it has read."""

    def __init__(self, delay, name="slow-probe"):
        self.delay = delay
        self.probes = 0
        super().__init__(name)

    def reply(self, cid, parts, data):
        if parts and parts[0] == b"version":
            with self.lock:
                self.probes += 1
            return [(self.VERSION, self.delay)]
        return b"ERROR\r\n"


class MuteBackend(FakeBackend):
    """Answers the probe; reads every other request and answers none (a
    server paused, or shedding load by silence)."""

    def reply(self, cid, parts, data):
        if parts and parts[0] == b"version":
            return self.VERSION
        return b""


class BatchReplyBackend(FakeBackend):
    """Answers the probe; reads every storage command at once but answers none
    of them (STORED each, in order) until it has `n` of them."""

    def __init__(self, n, name="batch-reply"):
        self.n = n
        self.pending = 0
        super().__init__(name)

    def reply(self, cid, parts, data):
        if parts and parts[0] == b"version":
            return self.VERSION
        if parts and parts[0] in STORAGE:
            with self.lock:
                self.pending += 1
                if self.pending < self.n:
                    return b""
                k, self.pending = self.pending, 0
            return b"STORED\r\n" * k
        return b"ERROR\r\n"


# ---------------------------------------------------------------------------
# Redis fakes


def resp_bulk(v):
    return b"$%d\r\n%s\r\n" % (len(v), v)


class FakeRedis(FakeBackend):
    """A tiny Redis (RESP2, in-memory strings) that records every request.

    Frames multibulk and inline requests; received holds (connection number,
    [args]). PING, AUTH, SELECT (what walnut sends on its own) and GET, SET,
    DEL answer as redis-server would; reply() may be overridden to misbehave.
    """

    PROBES = (b"PING", b"AUTH", b"SELECT")

    def __init__(self, name="fake-redis", values=None):
        self.store = dict(values or {})
        super().__init__(name)

    def reply(self, cid, args):
        cmd = args[0].upper() if args else b""
        if cmd == b"PING":
            return b"+PONG\r\n"
        if cmd in (b"AUTH", b"SELECT"):
            return b"+OK\r\n"
        if cmd == b"GET" and len(args) == 2:
            v = self.store.get(args[1])
            return b"$-1\r\n" if v is None else resp_bulk(v)
        if cmd == b"SET" and len(args) >= 3:
            self.store[args[1]] = args[2]
            return b"+OK\r\n"
        if cmd == b"DEL":
            return b":%d\r\n" % sum(self.store.pop(k, None) is not None for k in args[1:])
        if cmd == b"MGET":
            return b"*%d\r\n" % (len(args) - 1) + b"".join(
                b"$-1\r\n" if self.store.get(k) is None else resp_bulk(self.store[k])
                for k in args[1:])
        return b"-ERR unknown command '%s'\r\n" % (args[0] if args else b"")

    def requests(self, ignore_probes=True):
        with self.lock:
            out = list(self.received)
        if ignore_probes:
            out = [(c, a) for c, a in out if not a or a[0].upper() not in self.PROBES]
        return out

    @staticmethod
    def frame(buf):
        """(args, rest) of the first request in buf, or None if incomplete."""
        if not buf.startswith(b"*"):
            i = buf.find(b"\n")
            if i < 0:
                return None
            return buf[:i].strip().split(), buf[i + 1:]
        i = buf.find(b"\r\n")
        if i < 0:
            return None
        n, pos, args = int(buf[1:i]), i + 2, []
        for _ in range(max(n, 0)):
            j = buf.find(b"\r\n", pos)
            if j < 0:
                return None
            ln = int(buf[pos + 1:j])
            if len(buf) < j + 2 + ln + 2:
                return None
            args.append(buf[j + 2:j + 2 + ln])
            pos = j + 2 + ln + 2
        return args, buf[pos:]

    def _send(self, conn, reply):
        """As FakeBackend's; a step (None, delay) closes the connection."""
        if isinstance(reply, list) and any(chunk is None for chunk, _ in reply):
            steps = []
            for chunk, delay in reply:
                if chunk is None:
                    if self.stop_event.wait(delay):
                        return False
                    conn.shutdown(socket.SHUT_RDWR)
                    return False
                steps.append((chunk, delay))
            return super()._send(conn, steps)
        return super()._send(conn, reply)

    def _serve(self, conn, cid):
        buf = b""
        try:
            while not self.stop_event.is_set():
                chunk = conn.recv(1 << 20)
                if not chunk:
                    return
                buf += chunk
                while True:
                    got = self.frame(buf)
                    if got is None:
                        break
                    args, buf = got
                    with self.lock:
                        self.received.append((cid, args))
                    if not self._send(conn, self.reply(cid, args)):
                        return
        except (OSError, ValueError):
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass


class HalfReplyRedis(FakeRedis):
    """A server that dies in the middle of a reply: GET gets the start of a
    bulk (`$<size>\r\n` and `sent` bytes of it), MGET an array whose first
    element is such a bulk; then the connection closes."""

    def __init__(self, size=10, sent=3, delay=0.0, name="half-redis"):
        self.size, self.sent, self.delay = size, sent, delay
        super().__init__(name)

    def reply(self, cid, args):
        cmd = args[0].upper() if args else b""
        head = b"$%d\r\n" % self.size + b"h" * self.sent
        if cmd == b"GET":
            return [(head, self.delay), (None, 0.05)]
        if cmd == b"MGET":
            return [(b"*%d\r\n" % (len(args) - 1) + head, self.delay), (None, 0.05)]
        return super().reply(cid, args)


class StrayReplyRedis(FakeRedis):
    """Answers GET correctly, then sends a second reply nobody asked for. With
    `delay`, both come that many seconds late, or (NEXT_REQUEST) once the
    connection's next request has come (another client's request queued
    behind the GET on a shared connection)."""

    STRAY = b"$6\r\nsecret\r\n"

    def __init__(self, delay=0.0, name="stray-redis"):
        self.delay = delay
        super().__init__(name)

    def reply(self, cid, args):
        r = super().reply(cid, args)
        if args and args[0].upper() == b"GET":
            return [(r + self.STRAY, self.delay)]
        return r


class ExtraIntegerRedis(FakeRedis):
    """Answers INCR with its integer twice: the second is a well-formed reply
    nobody asked for. With `delay`, both come that many seconds late, or
    (NEXT_REQUEST) once the connection's next request has come (another
    client's request queued behind the INCR on a shared connection)."""

    def __init__(self, delay=0.0, name="extra-int-redis"):
        self.delay = delay
        super().__init__(name)

    def reply(self, cid, args):
        if len(args) == 2 and args[0].upper() == b"INCR":
            n = int(self.store.get(args[1], b"0")) + 1
            self.store[args[1]] = b"%d" % n
            return [(b":%d\r\n:%d\r\n" % (n, n), self.delay)]
        return super().reply(cid, args)


class GarbageRedis(FakeRedis):
    """Answers GET with bytes that are no RESP2 reply (garbage)."""

    GARBAGE = b"!garbage \x00\xff\r\n"

    def reply(self, cid, args):
        if args and args[0].upper() == b"GET":
            return self.GARBAGE
        return super().reply(cid, args)


class ErrorRedis(FakeRedis):
    """Answers every data command (not the probes) with one fixed error line,
    e.g. -LOADING as a server loading its dataset says it."""

    def __init__(self, line, name="error-redis"):
        self.line = line
        super().__init__(name)

    def reply(self, cid, args):
        if args and args[0].upper() in self.PROBES:
            return super().reply(cid, args)
        return self.line


class SlowBulkRedis(FakeRedis):
    """GET <key> of one big value: the bulk reply goes out in `chunks` pieces,
    `gap` seconds apart (steady progress, slower in total than any timeout)."""

    def __init__(self, key, value, chunks, gap, name="slow-redis"):
        self.key, self.value, self.chunks, self.gap = key, value, chunks, gap
        super().__init__(name)

    def reply(self, cid, args):
        if args and args[0].upper() == b"GET" and args[1:] == [self.key]:
            whole = resp_bulk(self.value)
            size = -(-len(whole) // self.chunks)
            pieces = [whole[i:i + size] for i in range(0, len(whole), size)]
            return [(p, 0 if i == 0 else self.gap) for i, p in enumerate(pieces)]
        return super().reply(cid, args)
