"""test_limits.py: client_connections is enforced (twemproxy 0.5.0 ignores it).

Each worker takes its share of the pool's limit (the limit divided by the
workers, rounded up): with one worker and client_connections 2, the third
connection is closed at once and counted as rejected; closing one makes room.
"""

import os
import socket
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class TestClientConnections(h.ProxyTestCase):
    def setUp(self):
        if h.UNDER_NUTCRACKER:
            self.skipTest("walnut-only: twemproxy 0.5.0 does not enforce client_connections")
        tmp = self.tmpdir()
        self.mcs = self.start_memcached(tmp, n=1)
        self.px = self.start_proxy(tmp, {"alpha": h.pool(self.mcs, client_connections=2)},
                                   workers=1)
        self.port = self.px.port()

    def connect(self):
        c = h.Raw(self.port)
        self.addCleanup(c.close)
        return c

    def stat(self, c, name):
        c.send(b"stats\r\n")
        while True:
            line = c.recv_line()
            self.assertTrue(line, "connection closed during stats")
            if line == b"END\r\n":
                self.fail("no STAT %s" % name)
            parts = line.split()
            if parts[1] == name.encode():
                value = int(parts[2])
                # drain to END so the connection stays in step
                while c.recv_line() != b"END\r\n":
                    pass
                return value

    def test_third_connection_is_refused_then_room_is_made(self):
        a = self.connect()
        # The harness's readiness check connected too; wait until walnut saw it go.
        h.wait_until(lambda: self.stat(a, "curr_connections") == 1, deadline=10.0,
                     what="only this client connected")
        b = self.connect()
        b.send(b"version\r\n")
        self.assertTrue(b.recv_line().startswith(b"VERSION "))

        # A plain socket: the harness's reader treats a close as a failure.
        extra = socket.create_connection((h.HOST, self.port), timeout=h.IO_TIMEOUT)
        self.addCleanup(extra.close)
        try:
            extra.sendall(b"version\r\n")
            reply = extra.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            reply = b""
        self.assertEqual(reply, b"", "a third client must be closed at once, unanswered")
        self.assertEqual(self.stat(a, "rejected_connections"), 1)

        b.close()
        # Room again once the worker has seen b go (poll: the close is asynchronous).
        def admitted():
            c = h.Raw(self.port)
            try:
                c.send(b"version\r\n")
                return c.recv_line().startswith(b"VERSION ")
            except OSError:
                return False
            finally:
                c.close()
        h.wait_until(admitted, deadline=10.0, what="a new client admitted after one left")
        self.px.stop(check=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
