"""harness.py: shared helpers for walnut's integration tests.

Starts and stops real backends (memcached, redis-server) and the proxy under
test (walnut by default; the real twemproxy with WALNUT_TEST_PROXY=nutcracker)
on ephemeral loopback ports, writes twemproxy YAML configs, and offers raw
socket helpers with exact-bytes assertions. Every process it starts is
stopped by PID (in cleanups and, as a last resort, at exit); every wait has a
deadline. Run the tests with Debian's /usr/bin/python3 and the stdlib only.

Environment:
  WALNUT_BIN          path of the walnut binary (default: <source>/build/walnut)
  WALNUT_SOURCE_DIR   the source tree (default: two levels above this file)
  WALNUT_TEST_PROXY   walnut (default) or nutcracker: which proxy serves the
                      data-path tests. Assertions where twemproxy is known to
                      differ from walnut's specification are marked with
                      ProxyTestCase.nc_differs() and reported, not failed,
                      under nutcracker.
  WALNUT_NUTCRACKER_BIN  path of nutcracker (default: found on PATH, /usr/sbin)
  WALNUT_TEST_KEEP    if set, keep temp dirs (configs, logs) for inspection
"""

import atexit
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

HOST = "127.0.0.1"
PROXY = os.environ.get("WALNUT_TEST_PROXY", "walnut").strip() or "walnut"
if PROXY not in ("walnut", "nutcracker"):
    raise SystemExit("harness: WALNUT_TEST_PROXY must be 'walnut' or 'nutcracker', not %r" % PROXY)
UNDER_NUTCRACKER = PROXY == "nutcracker"

# Generous: the machine may be slow (2 cores, sanitizer builds).
START_DEADLINE = 30.0
STOP_DEADLINE = 15.0
IO_TIMEOUT = 20.0

# twemproxy's SERVER_ERROR texts are strerror() strings of the failure.
TWEMPROXY_SERVER_ERRORS = (
    "Connection refused", "Connection reset by peer", "Connection timed out",
    "Broken pipe", "Host is down", "No route to host", "Network is unreachable",
    "Connection aborted", "Software caused connection abort", "Unknown error",
    "Transport endpoint is not connected", "Invalid argument",
)


class HarnessError(Exception):
    """A precondition of the test environment is not met (tool missing, start failed)."""


# ---------------------------------------------------------------------------
# paths and tools


def source_dir():
    d = os.environ.get("WALNUT_SOURCE_DIR")
    if d:
        return os.path.abspath(d)
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def walnut_bin():
    p = os.environ.get("WALNUT_BIN")
    if not p:
        p = os.path.join(source_dir(), "build", "walnut")
    if not (os.path.isfile(p) and os.access(p, os.X_OK)):
        raise HarnessError("walnut binary not found or not executable: %r "
                           "(set WALNUT_BIN to the built binary)" % p)
    return os.path.abspath(p)  # tests may run it from another directory


_SEARCH_DIRS = ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin", "/sbin", "/bin"]


def find_tool(*names, package=None, how=None):
    """The first of names found on PATH or in the usual bin dirs; HarnessError if none,
    naming the Debian package to install, or `how` to get a tool that is not one."""
    dirs = os.environ.get("PATH", "").split(os.pathsep) + _SEARCH_DIRS
    for name in names:
        for d in dirs:
            if not d:
                continue
            p = os.path.join(d, name)
            if os.path.isfile(p) and os.access(p, os.X_OK):
                return p
    hint = " (%s)" % how if how else \
        " (Debian package %s; see test/install-deps.sh)" % package if package else ""
    raise HarnessError("required tool not found: %s%s" % (" or ".join(names), hint))


_sanitizer = []


def sanitizer():
    """"asan" or "tsan" if the walnut binary was built with that sanitizer, else None."""
    if not _sanitizer:
        with open(walnut_bin(), "rb") as f:
            data = f.read()
        _sanitizer.append("asan" if b"__asan_init" in data else
                          "tsan" if b"__tsan_init" in data else None)
    return _sanitizer[0]


def sanitized():
    """True if the walnut binary was built with ASan or TSan (its RSS means little)."""
    return sanitizer() is not None


def nutcracker_bin():
    p = os.environ.get("WALNUT_NUTCRACKER_BIN")
    if p:
        if not (os.path.isfile(p) and os.access(p, os.X_OK)):
            raise HarnessError("WALNUT_NUTCRACKER_BIN=%r is not an executable" % p)
        return p
    return find_tool("nutcracker", package="nutcracker")


def proxy_bin():
    return nutcracker_bin() if UNDER_NUTCRACKER else walnut_bin()


_ports_given = set()


def free_port(host=HOST):
    """An ephemeral port on host, found by binding port 0 (may race with other
    processes; callers retry). Never one this process was given before: a
    port drawn for a configuration is not bound until walnut starts, so the
    kernel may hand it out again meanwhile, and two pools of one
    configuration on one port make walnut refuse it. (Not seen to happen:
    2,000 runs of seven draws in a row gave no repeat.)"""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(1000):
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise AssertionError("no fresh ephemeral port in 1000 tries")


_refusing = []


def refused_port(host=HOST):
    """A port on host where every connect is refused for as long as this
    process runs: bound and never listened on, without SO_REUSEADDR, so no
    other process can listen there. A free_port() nobody binds may be handed
    to another test running alongside (a memcached), and a server meant to
    be dead answers."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.bind((host, 0))
    _refusing.append(s)
    port = s.getsockname()[1]
    _ports_given.add(port)
    return port


_held_ports = {}  # port -> a socket bound there, so the port stays ours while its server is down


def hold_port(port, host=HOST):
    """Keep a stopped server's port from other processes until it starts again:
    a socket bound there (never listening, without SO_REUSEADDR), as
    refused_port() does; connects are still refused. Otherwise another test
    running alongside may draw the port, and its server answers for ours, or
    ours cannot come back on it. Best effort: a port a connection still has
    in TIME_WAIT cannot be bound so, and nobody else binds it either. Only
    the latest 64 are held."""
    if port is None or port in _held_ports:
        return
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, port))
    except OSError:
        s.close()
        return
    _held_ports[port] = s
    while len(_held_ports) > 64:
        _held_ports.pop(next(iter(_held_ports))).close()


def release_port(port):
    """Let a server bind its held port again (see hold_port)."""
    s = _held_ports.pop(port, None)
    if s is not None:
        s.close()


class TempDir:
    """A temp dir removed on cleanup unless WALNUT_TEST_KEEP is set."""

    def __init__(self, prefix="walnut-it-"):
        self.path = tempfile.mkdtemp(prefix=prefix)

    def join(self, *parts):
        return os.path.join(self.path, *parts)

    def cleanup(self):
        if os.environ.get("WALNUT_TEST_KEEP"):
            sys.stderr.write("harness: keeping %s\n" % self.path)
            return
        shutil.rmtree(self.path, ignore_errors=True)


# ---------------------------------------------------------------------------
# processes

_live_lock = threading.Lock()
_live = {}  # pid -> Popen, every process the harness started and has not reaped


def _register(proc):
    with _live_lock:
        _live[proc.pid] = proc


def _unregister(proc):
    with _live_lock:
        _live.pop(proc.pid, None)


@atexit.register
def _kill_leftovers():
    """Last resort: anything a test forgot is killed by its PID."""
    with _live_lock:
        procs = list(_live.values())
        _live.clear()
    for p in procs:
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGCONT)
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def _stop_proc(proc, sig=signal.SIGTERM, deadline=STOP_DEADLINE):
    """Signal proc by PID, wait up to deadline, then SIGKILL. Returns (rc, graceful)."""
    if proc is None:
        return None, True
    graceful = True
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            graceful = False
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
    _unregister(proc)
    return proc.returncode, graceful


def _connect(host, port, timeout):
    """A connected socket: TCP to (host, port), or a Unix socket when host is a path."""
    if host.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(host)
        except OSError:
            s.close()
            raise
        return s
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def wait_port(host, port, proc=None, deadline=START_DEADLINE):
    """Poll until host:port (or the Unix socket at path host) accepts.

    False if proc exits or time runs out.
    """
    end = time.monotonic() + deadline
    delay = 0.01
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with _connect(host, port, 1.0):
                return True
        except OSError:
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
    return False


def _listening_inodes(port):
    """The socket inodes listening on TCP port (any address) in this network namespace."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def _socket_inodes(pid):
    """The socket inodes process pid holds (empty if it is gone)."""
    fd_dir = "/proc/%d/fd" % pid
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return set()
    held = set()
    for fd in fds:
        try:
            link = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            held.add(link[8:-1])
    return held


def owns_listener(pid, port):
    """Whether process pid holds a socket listening on TCP port. A port drawn by
    free_port() may be drawn by another test running alongside and listened on
    by its server before ours binds it: a connect then succeeds, to the wrong
    process."""
    inodes = _listening_inodes(port)
    return bool(inodes & _socket_inodes(pid))


def listener_shared(pid, port):
    """Whether another process listens on TCP port beside pid: walnut listens
    with SO_REUSEPORT, so a second walnut (another test process drew the same
    free_port()) binds it beside the first without an error, and each gets
    some of the other's clients."""
    return bool(_listening_inodes(port) - _socket_inodes(pid))


def wait_until(pred, deadline=10.0, interval=0.05, what="condition"):
    """Poll pred() until true; returns its value or raises AssertionError at the deadline."""
    end = time.monotonic() + deadline
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - report the last one
            last_exc = e
        if time.monotonic() >= end:
            raise AssertionError("timed out after %.1fs waiting for %s%s" % (
                deadline, what, "; last error: %r" % last_exc if last_exc else ""))
        time.sleep(interval)


def read_text(path, mode="r"):
    """A whole file's contents (closed again at once)."""
    with open(path, mode) as f:
        return f.read()


def tail(path, nbytes=6000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - nbytes))
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        return "<cannot read %s: %s>" % (path, e)


def proc_status(pid, field):
    """A /proc/PID/status field in bytes (VmRSS, VmHWM)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


def rss(pid):
    return proc_status(pid, "VmRSS")


def reset_peak(pid):
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def task_states(pid):
    """The state letter of every thread of pid (from /proc/PID/task/*/stat)."""
    states = []
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        except OSError:
            pass
    return states


def log_time(log, pattern):
    """The time (s) of walnut's first log line matching pattern: its
    timestamp is [YYYY-MM-DD HH:MM:SS.mmm]."""
    for line in log.splitlines():
        m = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3})\]", line)
        if m and re.search(pattern, line):
            return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + \
                int(m.group(2)) / 1000.0
    raise AssertionError("no log line matching %r in:\n%s" % (pattern, log))


def in_kernel(port):
    """Bytes in the kernel on the way to the server on port: the send queues
    of connections to it and the receive queues of its own (/proc/net/tcp)."""
    total = 0
    with open("/proc/net/tcp") as f:
        for row in f.read().splitlines()[1:]:
            cols = row.split()
            tx, rx = (int(x, 16) for x in cols[4].split(":"))
            if int(cols[2].rsplit(":", 1)[1], 16) == port:
                total += tx
            if int(cols[1].rsplit(":", 1)[1], 16) == port:
                total += rx
    return total


def wait_until_still(value, still=1.0, deadline=30.0, what="a value to stop moving"):
    """Wait until value() has not changed for `still` seconds; its last value."""
    end = time.monotonic() + deadline
    last, since = value(), time.monotonic()
    while time.monotonic() - since < still:
        if time.monotonic() > end:
            raise AssertionError("timed out after %.1fs waiting for %s" % (deadline, what))
        time.sleep(0.05)
        now = value()
        if now != last:
            last, since = now, time.monotonic()
    return last


def sigstop_and_wait(pid, deadline=10.0):
    """SIGSTOP pid and wait until every thread is really stopped (kill() returns before)."""
    os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: all(s in "tT" for s in task_states(pid)), deadline=deadline,
               interval=0.005, what="pid %d to stop" % pid)


class Memcached:
    """A real memcached on 127.0.0.1 (ephemeral port), restartable on the same port."""

    def __init__(self, tmp, name="mc", port=None, memory_mb=64, extra=()):
        self.tmp, self.name, self.port = tmp, name, port
        self.memory_mb, self.extra = memory_mb, list(extra)
        self.proc = None
        self.bin = find_tool("memcached", package="memcached")
        self.log_path = os.path.join(tmp.path, "%s.log" % name)

    @property
    def addr(self):
        return "%s:%d" % (HOST, self.port)

    def _cmd(self, port):
        cmd = [self.bin, "-l", HOST, "-p", str(port), "-U", "0", "-m", str(self.memory_mb),
               "-t", "1", "-c", "4096"] + self.extra
        if os.geteuid() == 0:
            cmd[1:1] = ["-u", "nobody"]
        return cmd

    def start(self):
        """Start (or restart on the same port after a kill). Verifies the listener is ours."""
        if self.proc is not None and self.proc.poll() is None:
            raise HarnessError("%s already running (pid %d)" % (self.name, self.proc.pid))
        fixed = self.port is not None
        attempts = 1 if not fixed else 40  # same port: wait for it to be free again
        last = ""
        for _ in range(8 if not fixed else 1):
            port = self.port if fixed else free_port()
            for _ in range(attempts):
                release_port(port)
                log = open(self.log_path, "ab")
                self.proc = subprocess.Popen(self._cmd(port), stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL)
                log.close()
                _register(self.proc)
                if wait_port(HOST, port, self.proc, deadline=START_DEADLINE) and \
                        self._is_ours(port):
                    self.port = port
                    return self
                _stop_proc(self.proc, signal.SIGKILL)
                last = tail(self.log_path, 800)
                if fixed:
                    time.sleep(0.1)
        raise HarnessError("cannot start memcached %s (port %s): %s" % (self.name, self.port, last))

    def _is_ours(self, port):
        try:
            st = mc_stats(port)
        except (OSError, AssertionError):
            return False
        return st.get("pid") == str(self.proc.pid)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL (a crash): the port stays known (and held) for start() again."""
        _stop_proc(self.proc, signal.SIGKILL)
        hold_port(self.port)

    def sigstop(self):
        sigstop_and_wait(self.proc.pid)

    def sigcont(self):
        if self.running():
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self):
        _stop_proc(self.proc, signal.SIGTERM)
        hold_port(self.port)

    # direct access (never through the proxy)
    def flush(self):
        mc_command(self.port, b"flush_all\r\n", b"OK\r\n")

    def keys_held(self, keys):
        return mc_keys_held(self.port, keys)

    def dump_keys(self):
        return mc_dump_keys(self.port)

    def stats(self, arg=""):
        return mc_stats(self.port, arg)


class RedisServer:
    """A real redis-server on 127.0.0.1 (ephemeral port), no persistence.

    password sets requirepass (the harness's own connections authenticate).
    call() and monitor() talk to it directly (see "Redis" below).
    """

    def __init__(self, tmp, name="redis", port=None, extra=(), password=None):
        self.tmp, self.name, self.port, self.extra = tmp, name, port, list(extra)
        self.password = password
        if password is not None:
            self.extra += ["--requirepass", password]
        self.proc = None
        self.bin = find_tool("redis-server", package="redis-server")
        self.log_path = os.path.join(tmp.path, "%s.log" % name)
        self.dir = os.path.join(tmp.path, name + "-data")
        os.makedirs(self.dir, exist_ok=True)

    @property
    def addr(self):
        return "%s:%d" % (HOST, self.port)

    def start(self):
        fixed = self.port is not None
        last = ""
        for _ in range(1 if fixed else 8):
            port = self.port if fixed else free_port()
            for _ in range(40 if fixed else 1):
                release_port(port)
                cmd = [self.bin, "--port", str(port), "--bind", HOST, "--save", "",
                       "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
                       "--logfile", self.log_path, "--protected-mode", "no"] + self.extra
                self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
                _register(self.proc)
                if wait_port(HOST, port, self.proc) and self._is_ours(port):
                    self.port = port
                    return self
                _stop_proc(self.proc, signal.SIGKILL)
                last = tail(self.log_path, 800)
                if fixed:
                    time.sleep(0.1)
        raise HarnessError("cannot start redis-server %s (port %s): %s" % (self.name, self.port, last))

    def _is_ours(self, port):
        try:
            with Raw(port, timeout=5) as c:
                if self.password is not None:
                    c.send(resp("AUTH", self.password))
                    c.expect(b"+OK\r\n")
                c.send(b"INFO server\r\n")
                c.recv_until(b"process_id:")
                pid = int(c.recv_line().strip())
            return pid == self.proc.pid
        except (OSError, AssertionError, ValueError):
            return False

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        _stop_proc(self.proc, signal.SIGKILL)
        hold_port(self.port)

    def sigstop(self):
        sigstop_and_wait(self.proc.pid)

    def sigcont(self):
        if self.running():
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self):
        _stop_proc(self.proc, signal.SIGTERM)
        hold_port(self.port)

    def call(self, *args, db=None):
        """One command, asked directly (AUTH and SELECT db first); the parsed reply."""
        return redis_call(self.port, *args, db=db, password=self.password)

    def pipeline(self, commands, db=None):
        """Several commands in one write, asked directly; their parsed replies."""
        return redis_pipeline(self.port, commands, db=db, password=self.password)

    def monitor(self):
        return RedisMonitor(self.port, password=self.password)


# ---------------------------------------------------------------------------
# configuration


def yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if re.fullmatch(r"[A-Za-z0-9_.:/\-\[\]]+", s) and s not in ("true", "false", "null", "yes", "no"):
        return s
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')


def render_config(pools):
    """twemproxy YAML for pools: {name: {key: value, ..., 'servers': [spec, ...]}}.

    Insertion order is kept (listen first reads best). Server specs are strings
    ("127.0.0.1:11211:1 name") or objects with .addr (weight 1).
    """
    out = ["# written by test/integration/harness.py"]
    for name, pool in pools.items():
        out.append("%s:" % name)
        for key, value in pool.items():
            if key == "servers":
                out.append("  servers:")
                for s in value:
                    spec = s if isinstance(s, str) else "%s:1" % s.addr
                    out.append("   - %s" % spec)
            else:
                out.append("  %s: %s" % (key, yaml_scalar(value)))
        out.append("")
    return "\n".join(out) + "\n"


def pool(servers, listen=None, **settings):
    """One pool's settings with harness defaults; listen=None picks an ephemeral port."""
    p = {"listen": listen or "%s:%d" % (HOST, free_port())}
    p.update({"hash": "fnv1a_64", "distribution": "ketama", "auto_eject_hosts": False})
    p.update(settings)
    p["servers"] = list(servers)
    return p


def listen_port(pool_settings):
    return int(str(pool_settings["listen"]).rsplit(":", 1)[1].split()[0])


def unix_path(pool_settings):
    """The Unix socket path a pool listens on (listen: /path [perm]), else None."""
    listen = str(pool_settings["listen"])
    return listen.split()[0] if listen.startswith("/") else None


class Proxy:
    """The proxy under test (walnut, or nutcracker under WALNUT_TEST_PROXY=nutcracker).

    kind overrides the global choice (e.g. a reference nutcracker beside walnut).
    """

    def __init__(self, tmp, pools, workers=1, verbosity=5, kind=None, name=None, extra=(),
                 nofile=None, env=None, cpus=None, cgroup=None):
        # workers=None: walnut's default (no --workers)
        self.tmp, self.pools, self.workers, self.verbosity = tmp, pools, workers, verbosity
        self.env = env  # extra environment variables for the proxy, if set
        self.nofile = nofile  # RLIMIT_NOFILE for the proxy, if set: N (soft and hard) or (soft, hard)
        self.cpus = cpus  # the CPUs it may run on, if set
        self.cgroup = cgroup  # a cgroup directory it starts in, if set
        self.kind = kind or PROXY
        self.name = name or self.kind
        self.extra = list(extra)
        self.bin = nutcracker_bin() if self.kind == "nutcracker" else walnut_bin()
        self.conf_path = tmp.join("%s.yml" % self.name)
        self.log_path = tmp.join("%s.log" % self.name)
        self.proc = None
        self.stats_port = None

    def port(self, pool_name=None):
        if pool_name is None:
            pool_name = next(iter(self.pools))
        p = self.pools[pool_name]
        return unix_path(p) or listen_port(p)

    def write_config(self):
        with open(self.conf_path, "w") as f:
            f.write(render_config(self.pools))

    def command(self):
        self.stats_port = free_port()
        cmd = [self.bin, "-c", self.conf_path, "-v", str(self.verbosity), "-o", self.log_path,
               "-s", str(self.stats_port), "-a", HOST]
        if self.kind == "walnut" and self.workers is not None:
            cmd += ["--workers", str(self.workers)]
        return cmd + self.extra

    def start(self):
        """Start and wait until every pool's listen port accepts; retries with fresh ports."""
        last = ""
        for attempt in range(4):
            if attempt:
                for p in self.pools.values():  # a port was taken meanwhile: pick new ones
                    if not str(p["listen"]).startswith("/"):
                        p["listen"] = "%s:%d" % (HOST, free_port())
            self.write_config()
            with open(self.log_path + ".stdout", "ab") as out:
                env = dict(os.environ, **self.env) if self.env else None
                self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=subprocess.STDOUT,
                                             preexec_fn=self._preexec(), env=env)
            _register(self.proc)
            ok = all(wait_port(unix_path(p), None, self.proc) if unix_path(p) else
                     wait_port(HOST, listen_port(p), self.proc) for p in self.pools.values())
            if ok and self._owns_ports() and self._logged_start():
                return self
            rc, _ = _stop_proc(self.proc, signal.SIGKILL)
            last = "exit status %s; log:\n%s\n%s" % (rc, tail(self.log_path),
                                                    tail(self.log_path + ".stdout"))
        raise HarnessError("%s did not start serving (config %s): %s" % (
            self.name, self.conf_path, last))

    def _owns_ports(self):
        """Every TCP port of the configuration (pools and stats) is listened on by
        this process, not by another test's server that drew the same port: wait
        until it is, or until the proxy exits (its bind failed: start retries)."""
        ports = [listen_port(p) for p in self.pools.values() if not unix_path(p)]
        ports.append(self.stats_port)
        end = time.monotonic() + START_DEADLINE
        while self.proc.poll() is None:
            if all(owns_listener(self.proc.pid, port) for port in ports):
                # Alone on them: start retries on fresh ports otherwise.
                return not any(listener_shared(self.proc.pid, port) for port in ports)
            if time.monotonic() > end:
                return False
            time.sleep(0.02)
        return False

    def _logged_start(self):
        """walnut listens before its control thread logs "started on pid"
        (after the workers run): wait for that line, so a test reading the
        log right after start sees every start-up line (a slow sanitizer
        build once had not written it yet). Only where NOTICE is logged."""
        if self.kind != "walnut" or self.verbosity < 5:
            return True
        end = time.monotonic() + START_DEADLINE
        while self.proc.poll() is None:
            if "started on pid" in tail(self.log_path, 20000):
                return True
            if time.monotonic() > end:
                return False
            time.sleep(0.01)
        return False

    def _preexec(self):
        if self.nofile is None and self.cpus is None and self.cgroup is None:
            return None
        nofile = self.nofile if isinstance(self.nofile, tuple) else (self.nofile, self.nofile)
        cpus, procs = self.cpus, self.cgroup and os.path.join(self.cgroup, "cgroup.procs")

        def setup():  # runs in the child between fork and exec: no imports here
            if nofile[0] is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (int(nofile[0]), int(nofile[1])))
            if cpus is not None:
                os.sched_setaffinity(0, cpus)
            if procs:
                with open(procs, "w") as f:
                    f.write(str(os.getpid()))
        return setup

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        return tail(self.log_path, 20000) + tail(self.log_path + ".stdout", 4000)

    # The stats port's HTTP (walnut only; an HTTP error status raises).
    def http(self, path, timeout=10):
        """The body of GET path."""
        url = "http://%s:%d%s" % (HOST, self.stats_port, path)
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()

    def http_json(self, path="/stats", timeout=10):
        return json.loads(self.http(path, timeout))

    def metrics(self, timeout=10):
        """/metrics as text."""
        return self.http("/metrics", timeout).decode()

    def expected_term_status(self):
        # walnut exits 0 on SIGTERM; twemproxy 0.5.0 does not handle SIGTERM
        # and dies of it (status -15 here), so no clean status is asserted for it.
        return (1, -signal.SIGTERM) if self.kind == "nutcracker" else (0,)

    def stop(self, check=True):
        """SIGTERM; with check, assert a clean exit within the deadline (log on failure)."""
        if self.proc is None:
            return None
        was_alive = self.proc.poll() is None
        rc, graceful = _stop_proc(self.proc, signal.SIGTERM)
        self.proc_rc = rc
        if check:
            if not was_alive:
                raise AssertionError("%s had already exited (status %s) before SIGTERM; log:\n%s"
                                     % (self.name, rc, self.log()))
            if not graceful:
                raise AssertionError("%s did not exit within %.0fs of SIGTERM; log:\n%s"
                                     % (self.name, STOP_DEADLINE, self.log()))
            if rc not in self.expected_term_status():
                raise AssertionError("%s exited with status %s after SIGTERM, expected %s; log:\n%s"
                                     % (self.name, rc, " or ".join(map(str, self.expected_term_status())),
                                        self.log()))
            if self.kind == "walnut" and "internal: " in self.log():
                raise AssertionError("%s lost count of what its clients or servers hold; log:\n%s"
                                     % (self.name, self.log()))
        return rc

    def kill(self):
        _stop_proc(self.proc, signal.SIGKILL)


def run_walnut(args, timeout=60, input_bytes=None):
    """Run the walnut binary with args (str or bytes); returns CompletedProcess (bytes out)."""
    return subprocess.run([walnut_bin()] + list(args), stdin=subprocess.DEVNULL
                          if input_bytes is None else None, input=input_bytes,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


def build_dns_shim(tmp):
    """Compile shim/flaky_dns.c (the name flaky.walnut.test: 127.0.0.1, or EAI_NONAME while
    the file named by WALNUT_TEST_DNS_DOWN exists; no real DNS); the LD_PRELOAD value for walnut (a sanitizer
    runtime the binary links goes first, as the sanitizers require)."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim", "flaky_dns.c")
    out = tmp.join("flaky_dns.so")
    cc = find_tool("cc", "gcc", "clang")
    r = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", out, src, "-ldl"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    if r.returncode != 0:
        raise HarnessError("cannot build the DNS shim: %s" % r.stdout.decode())
    pre = []
    ldd = subprocess.run(["ldd", walnut_bin()], stdout=subprocess.PIPE, timeout=30)
    for line in ldd.stdout.decode().splitlines():
        m = re.search(r"(lib[at]san\.so[.0-9]*) => (\S+)", line)
        if m:
            pre.append(m.group(2))
    return ":".join(pre + [out])


def in_own_netns(test):
    """Run `test` (a TestCase, in its method) again in a network namespace of
    its own, with only loopback up, when it binds a wildcard address (0.0.0.0,
    ::), which outside one would listen beyond loopback. Returns True in the
    caller outside (the run there is over: its result is asserted here), False
    inside, where the test goes on."""
    if os.environ.get("WALNUT_TEST_NETNS") == "1":
        return False
    unshare = find_tool("unshare", package="util-linux")
    ip = find_tool("ip", package="iproute2")
    script = sys.modules[type(test).__module__].__file__
    name = "%s.%s" % (type(test).__name__, test._testMethodName)
    env = dict(os.environ, WALNUT_TEST_NETNS="1")
    r = subprocess.run([unshare, "--net", "--", "sh", "-c", '"$0" link set lo up && exec "$@"',
                        ip, sys.executable, os.path.abspath(script), name],
                       env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=600)
    out = r.stdout.decode("utf-8", "replace")
    test.assertEqual(r.returncode, 0, "in a network namespace of its own:\n" + out[-6000:])
    test.assertRegex(out, r"\nOK\b", "the test ran (not skipped) in its namespace:\n" + out[-2000:])
    test.assertNotIn("skipped", out)
    return True


def walnut_locate(conf_path, keys, timeout=120):
    """{(pool, key_bytes): (server_name, address)} from `walnut -c conf --locate keys...`."""
    keys = [k if isinstance(k, bytes) else k.encode() for k in keys]
    out = {}
    step = 500  # keep argv comfortably small
    for i in range(0, len(keys), step):
        chunk = keys[i:i + step]
        r = subprocess.run([walnut_bin(), "-c", conf_path, "--locate", "--"] + chunk,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
        if r.returncode != 0:
            raise AssertionError("walnut --locate exited %d: %s" % (
                r.returncode, r.stderr.decode("utf-8", "replace")))
        for line in r.stdout.split(b"\n"):
            if not line:
                continue
            parts = line.split(b"\t")
            if len(parts) != 4:
                raise AssertionError("walnut --locate: line is not pool<TAB>key<TAB>server"
                                     "<TAB>address: %r" % line)
            pool, key, server = (locate_unescape(x) for x in parts[:3])
            out[(pool.decode(), key)] = (server.decode(), parts[3].decode())
    return out


def locate_unescape(field):
    """A key as --locate prints it (control bytes and backslash escaped) back to bytes."""
    named = {b"t": b"\t", b"n": b"\n", b"r": b"\r", b"\\": b"\\"}

    def one(m):
        e = m.group(1)
        return named[e] if e in named else bytes([int(e[1:], 16)])
    return re.sub(rb"\\(x[0-9a-f]{2}|[tnr\\])", one, field)


# ---------------------------------------------------------------------------
# raw sockets


def show(b, limit=300):
    """A bytes value shortened for messages."""
    if len(b) <= limit:
        return repr(b)
    return "%r ... (%d bytes) ... %r" % (b[:limit // 2], len(b), b[-limit // 2:])


def first_diff(a, b):
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n if len(a) != len(b) else -1


def describe_mismatch(expected, got):
    i = first_diff(expected, got)
    lo = max(0, i - 80)
    return ("bytes differ at offset %d (expected %d bytes, got %d)\n  expected[%d:]: %r\n"
            "  got[%d:]:      %r" % (i, len(expected), len(got), lo, expected[lo:i + 120],
                                     lo, got[lo:i + 120]))


class Raw:
    """A raw client: send bytes, read with deadlines, assert exact bytes.

    port is a TCP port on host, or a path (str starting with '/') of a Unix socket.
    """

    def __init__(self, port, host=HOST, timeout=IO_TIMEOUT):
        self.timeout = timeout
        if isinstance(port, str) and port.startswith("/"):
            host, port = port, None
        self.sock = _connect(host, port, timeout)
        self.buf = b""
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def reset(self):
        """Close with RST (SO_LINGER 0) instead of FIN."""
        import struct
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, end):
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline passed")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def recv_until(self, term, timeout=None):
        """Bytes up to and including the first term; AssertionError on EOF or deadline."""
        end = time.monotonic() + (timeout or self.timeout)
        start = 0
        while True:
            i = self.buf.find(term, start)
            if i >= 0:
                out, self.buf = self.buf[:i + len(term)], self.buf[i + len(term):]
                return out
            start = max(0, len(self.buf) - len(term) + 1)
            try:
                if not self._fill(end):
                    raise AssertionError("connection closed before %r; got %s" % (term, show(self.buf)))
            except socket.timeout:
                raise AssertionError("no %r within %.1fs; got %s" % (
                    term, timeout or self.timeout, show(self.buf))) from None

    def recv_line(self, timeout=None):
        return self.recv_until(b"\r\n", timeout)

    def recv_exact(self, n, timeout=None):
        """Exactly n bytes, or whatever came before EOF/deadline (caller compares)."""
        end = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < n:
            try:
                if not self._fill(end):
                    break
            except socket.timeout:
                break
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def expect(self, expected, timeout=None, what=""):
        """Read len(expected) bytes and assert they are exactly expected."""
        got = self.recv_exact(len(expected), timeout)
        if got != expected:
            why = " (EOF)" if self.eof and len(got) < len(expected) else \
                  " (timed out)" if len(got) < len(expected) else ""
            rest = self._rest_of_line(got)
            raise AssertionError("%s%s%s%s" % (what + ": " if what else "",
                                               describe_mismatch(expected, got), why,
                                               "\n  the line went on: %s" % show(rest, 200)
                                               if rest else ""))
        return got

    def _rest_of_line(self, got):
        """After a mismatch: what followed got up to its line end (waiting at most 1 s),
        so a failure shows a whole SERVER_ERROR line, not its first bytes."""
        if b"\r\n" in got or self.eof:
            return b""
        end = time.monotonic() + 1.0
        while b"\r\n" not in self.buf and len(self.buf) < 4096:
            try:
                if not self._fill(end):
                    break
            except (socket.timeout, OSError):
                break
        i = self.buf.find(b"\r\n")
        return self.buf[:i + 2] if i >= 0 else self.buf[:4096]

    def recv_resp(self, timeout=None):
        """The raw bytes of exactly one RESP2 reply; AssertionError on EOF or deadline."""
        end = time.monotonic() + (timeout or self.timeout)
        while True:
            got = resp_parse(self.buf)
            if got is not None:
                n = got[1]
                out, self.buf = self.buf[:n], self.buf[n:]
                return out
            try:
                if not self._fill(end):
                    raise AssertionError("connection closed inside a reply; got %s" % show(self.buf))
            except socket.timeout:
                raise AssertionError("no whole reply within %.1fs; got %s" % (
                    timeout or self.timeout, show(self.buf))) from None

    def call(self, *args, timeout=None):
        """Send one command (multibulk), return its parsed reply (RespError for -ERR...)."""
        self.send(resp(*args))
        return resp_parse(self.recv_resp(timeout))[0]

    def request(self, data, expected, timeout=None, what=""):
        self.send(data)
        return self.expect(expected, timeout, what or show(data, 80))

    def recv_until_closed(self, timeout=None):
        """Everything until EOF; AssertionError if the peer keeps it open past the deadline."""
        end = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                if not self._fill(end):
                    out, self.buf = self.buf, b""
                    return out
            except socket.timeout:
                raise AssertionError("connection not closed within %.1fs; got %s" % (
                    timeout or self.timeout, show(self.buf))) from None
            except ConnectionResetError:
                out, self.buf = self.buf, b""
                return out

    def expect_closed(self, timeout=None, what=""):
        rest = self.recv_until_closed(timeout)
        if rest:
            raise AssertionError("%sexpected the connection to close with no more bytes, got %s"
                                 % (what + ": " if what else "", show(rest)))

    def quiet_for(self, seconds):
        """Assert nothing arrives (and no EOF) for seconds."""
        end = time.monotonic() + seconds
        try:
            while self._fill(end):
                pass
            raise AssertionError("connection closed unexpectedly; got %s" % show(self.buf))
        except socket.timeout:
            pass
        if self.buf:
            raise AssertionError("unexpected bytes: %s" % show(self.buf))


def send_and_read(port, data, nbytes, timeout=IO_TIMEOUT):
    """Send data while reading nbytes back concurrently (avoids deadlock on big pipelines)."""
    with Raw(port, timeout=timeout) as c:
        err = []

        def writer():
            try:
                c.sock.sendall(data)
            except OSError as e:
                err.append(e)

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        got = c.recv_exact(nbytes, timeout)
        t.join(timeout)
        return got, err


def last_replies_then_more(port, asked, more, wait=1.0, eager=False, timeout=IO_TIMEOUT):
    """A client that sends `asked` (requests ending with one after which the
    server closes: quit, or bytes it cannot frame), then `more` bytes the
    server will not look at, and reads nothing for `wait` s through a small
    receive buffer, so the replies are still on their way when the server is
    done. Or, `eager`, reads at once and acknowledges each segment as it
    comes (TCP_QUICKACK), so the server's kernel holds nothing unacknowledged
    when its last write returns while `more` still comes. Returns (what it
    then read, "EOF" or "RST"). The sender runs on a thread of its own:
    `more` may be larger than the sockets take."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if eager:
        wait = 0
    else:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(timeout)
    try:
        s.connect((HOST, port))
        if eager:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

        def writer():
            try:
                s.sendall(asked + more)
            except OSError:
                pass

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        time.sleep(wait)
        got = []
        end = "EOF"
        try:
            while True:
                d = s.recv(1 << 16)
                if not d:
                    break
                got.append(d)
        except ConnectionResetError:
            end = "RST"
        t.join(timeout)
        return b"".join(got), end
    finally:
        s.close()


# ---------------------------------------------------------------------------
# Redis: RESP2 encoding and parsing, redis-server asked directly


class RespError(bytes):
    """An error reply: its text without the '-' and CRLF (b"ERR unknown ...")."""


def resp_arg(a):
    if isinstance(a, bytes):
        return a
    if isinstance(a, (bytearray, memoryview)):
        return bytes(a)
    return str(a).encode()


def resp(*args):
    """A command as a RESP multibulk request; args are bytes, str or int."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        a = resp_arg(a)
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


def warm_up(sock, redis=False, n=40):
    """Make a client walnut has seen small replies for: walnut lets a client
    have 32 requests in flight until its replies are seen, then as many as
    the size of its recent replies allows (1024 for small ones, after a few
    dozen). n requests walnut answers itself (Redis PING, memcached an
    unknown word: ERROR), their replies read. For tests of what many
    requests in flight do to a server that never answers them."""
    req, rep = (resp("PING"), b"+PONG\r\n") if redis else (b"warm-up\r\n", b"ERROR\r\n")
    sock.sendall(req * n)
    want, got = len(rep) * n, b""
    while len(got) < want:
        d = sock.recv(want - len(got))
        if not d:
            raise AssertionError("warm-up: EOF after %r" % got[-40:])
        got += d
    if got != rep * n:
        raise AssertionError("warm-up: %r" % got[:80])


def resp_parse(data, pos=0):
    """(value, end) of the RESP2 reply starting at data[pos], or None if incomplete.

    Values: bytes (simple strings and bulks), RespError, int, list, None (nulls).
    ValueError on bytes that are no RESP2.
    """
    nl = data.find(b"\r\n", pos)
    if nl < 0:
        return None
    t, line = data[pos:pos + 1], data[pos + 1:nl]
    after = nl + 2
    if t == b"+":
        return bytes(line), after
    if t == b"-":
        return RespError(line), after
    if t == b":":
        return int(line), after
    if t == b"$":
        n = int(line)
        if n < 0:
            return None, after
        if len(data) < after + n + 2:
            return None
        if data[after + n:after + n + 2] != b"\r\n":
            raise ValueError("bulk not followed by CRLF at %d" % (after + n))
        return bytes(data[after:after + n]), after + n + 2
    if t == b"*":
        n = int(line)
        if n < 0:
            return None, after
        out = []
        for _ in range(n):
            got = resp_parse(data, after)
            if got is None:
                return None
            out.append(got[0])
            after = got[1]
        return out, after
    raise ValueError("not a RESP2 reply at %d: %s" % (pos, show(bytes(data[pos:pos + 40]))))


def resp_parse_all(data):
    """Every complete reply in data, parsed; ValueError if bytes are left over."""
    out, pos = [], 0
    while pos < len(data):
        got = resp_parse(data, pos)
        if got is None:
            raise ValueError("incomplete reply at %d: %s" % (pos, show(data[pos:])))
        out.append(got[0])
        pos = got[1]
    return out


def _redis_conn(port, db, password, timeout):
    c = Raw(port, timeout=timeout)
    if password is not None:
        c.send(resp("AUTH", password))
        c.expect(b"+OK\r\n", what="AUTH on :%d" % port)
    if db is not None:
        c.send(resp("SELECT", db))
        c.expect(b"+OK\r\n", what="SELECT %s on :%d" % (db, port))
    return c


def redis_call(port, *args, db=None, password=None, timeout=IO_TIMEOUT):
    """One command on a fresh connection; the parsed reply."""
    with _redis_conn(port, db, password, timeout) as c:
        return c.call(*args)


def redis_pipeline(port, commands, db=None, password=None, timeout=IO_TIMEOUT):
    """[args, ...] in one write on a fresh connection; their parsed replies."""
    with _redis_conn(port, db, password, timeout) as c:
        c.send(b"".join(resp(*a) for a in commands))
        return [resp_parse(c.recv_resp())[0] for _ in commands]


def redis_placement(backends, keys, db=None):
    """{key: backend} by EXISTS on every backend directly; AssertionError if a key
    is on no backend or on two."""
    keys = [resp_arg(k) for k in keys]
    where = {}
    for b in backends:
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            for k, n in zip(chunk, b.pipeline([("EXISTS", k) for k in chunk], db=db)):
                if n == 1:
                    if k in where:
                        raise AssertionError("key %r is on both %s and %s" % (
                            k, where[k].addr, b.addr))
                    where[k] = b
    missing = [k for k in keys if k not in where]
    if missing:
        raise AssertionError("%d keys on no backend, e.g. %r" % (len(missing), missing[:5]))
    return where


def _unrepr(s):
    """redis-server's sdscatrepr() undone: \\n \\r \\t \\a \\b \\" \\\\ \\xHH."""
    out, i = bytearray(), 0
    esc = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("a"): 7, ord("b"): 8}
    while i < len(s):
        c = s[i]
        if c == 0x5c and i + 1 < len(s):
            d = s[i + 1]
            if d == ord("x") and i + 3 < len(s):
                out.append(int(s[i + 2:i + 4], 16))
                i += 4
                continue
            out.append(esc.get(d, d))
            i += 2
            continue
        out.append(c)
        i += 1
    return bytes(out)


_MONITOR_RE = re.compile(rb'^\+\d+\.\d+ \[(\d+) ([^\]]*)\] (.*)$')
_MONITOR_ARG_RE = re.compile(rb'"((?:[^"\\]|\\.)*)"')


class RedisMonitor:
    """MONITOR on a redis-server: every command it runs, as (db, client, [args]).

    A thread reads until stop(); commands() returns what arrived so far, and
    wait_for(pred) polls for an entry. Commands from the harness's own
    connections show up too; filter by content.
    """

    def __init__(self, port, password=None):
        self.port, self.password, self.syncs = port, password, 0
        self.c = _redis_conn(port, None, password, IO_TIMEOUT)
        self.c.send(b"MONITOR\r\n")
        self.c.expect(b"+OK\r\n", what="MONITOR")
        self.lock = threading.Lock()
        self.lines = []
        self.stopped = False
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        while not self.stopped:
            try:
                line = self.c.recv_line(timeout=0.2)
            except (AssertionError, OSError, AttributeError):
                if self.c.eof or self.c.sock is None:
                    return
                continue
            with self.lock:
                self.lines.append(line[:-2])

    def commands(self):
        with self.lock:
            lines = list(self.lines)
        out = []
        for line in lines:
            m = _MONITOR_RE.match(line)
            if m is None:
                continue
            args = [_unrepr(a) for a in _MONITOR_ARG_RE.findall(m.group(3))]
            out.append((int(m.group(1)), m.group(2).decode(), args))
        return out

    def clear(self):
        """Forget everything the server ran so far. MONITOR lines arrive some
        time after the command ran, so a marker is sent on a connection of our
        own and everything up to and including it dropped: a command run
        before clear() never shows up after it."""
        self.syncs += 1
        marker = b"monitor-sync-%d" % self.syncs
        redis_call(self.port, "ECHO", marker, password=self.password)
        self.wait_for(lambda e: e[2] == [b"ECHO", marker], what="MONITOR sync marker")
        with self.lock:
            for i, line in enumerate(self.lines):
                if marker in line and b'"ECHO"' in line.upper():
                    del self.lines[:i + 1]
                    break

    def wait_for(self, pred, deadline=10.0, what="a command on MONITOR"):
        return wait_until(lambda: [c for c in self.commands() if pred(c)], deadline=deadline,
                          interval=0.02, what=what)

    def stop(self):
        self.stopped = True
        self.t.join(5)
        self.c.close()


# ---------------------------------------------------------------------------
# memcached, asked directly


def mc_command(port, data, terminator=b"\r\n", timeout=IO_TIMEOUT, expect=None):
    """Send one request straight to a memcached; return bytes up to terminator."""
    with Raw(port, timeout=timeout) as c:
        c.send(data)
        got = c.recv_until(terminator)
    if expect is not None and got != expect:
        raise AssertionError("memcached :%d: %r -> %r, expected %r" % (port, data, got, expect))
    return got


def mc_lone_gets(port, keys, times, sets=True, absent=False):
    """A lone text client: each key set to its name (unless not `sets`),
    then one get of them all, answered whole (with none found if `absent`),
    `times` times, one at a time."""
    with Raw(port, timeout=30) as c:
        if sets:
            c.send(b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(k), k) for k in keys))
            c.recv_exact(len(b"STORED\r\n") * len(keys))
        want = b"" if absent else b"".join(b"VALUE %s 0 %d\r\n%s\r\n" % (k, len(k), k) for k in keys)
        want += b"END\r\n"
        for _ in range(times):
            c.request(b"get " + b" ".join(keys) + b"\r\n", want)


def mc_stats(port, arg=""):
    cmd = ("stats %s" % arg).strip().encode() + b"\r\n"
    raw = mc_command(port, cmd, b"END\r\n")
    out = {}
    for line in raw.split(b"\r\n"):
        if line.startswith(b"STAT "):
            parts = line.decode("utf-8", "replace").split(" ", 2)
            out[parts[1]] = parts[2] if len(parts) > 2 else ""
    return out


def parse_values(data):
    """{key: (flags, value)} from a get/gets reply (VALUE blocks then END)."""
    out = {}
    i = 0
    while True:
        j = data.index(b"\r\n", i)
        line = data[i:j]
        if line == b"END":
            if j + 2 != len(data):
                raise AssertionError("bytes after END: %s" % show(data[j + 2:]))
            return out
        parts = line.split(b" ")
        if parts[0] != b"VALUE":
            raise AssertionError("unexpected line in get reply: %r" % line)
        n = int(parts[3])
        out[parts[1]] = (int(parts[2]), data[j + 2:j + 2 + n])
        if data[j + 2 + n:j + 4 + n] != b"\r\n":
            raise AssertionError("value of %r not followed by CRLF" % parts[1])
        i = j + 4 + n


def mc_get_many(port, keys, chunk=100):
    """{key: value} of the keys a memcached holds (multi-get, chunked)."""
    keys = [k if isinstance(k, bytes) else k.encode() for k in keys]
    out = {}
    with Raw(port) as c:
        for i in range(0, len(keys), chunk):
            c.send(b"get " + b" ".join(keys[i:i + chunk]) + b"\r\n")
            # read until the END line that is at a line start
            data = b""
            while True:
                data += c.recv_until(b"\r\n")
                if data == b"END\r\n" or data.endswith(b"\r\nEND\r\n"):
                    try:
                        vals = parse_values(data)
                        break
                    except (ValueError, IndexError, AssertionError):
                        continue  # the END was inside a value
            out.update({k: v for k, (_, v) in vals.items()})
    return out


def mc_keys_held(port, keys):
    """The subset of keys (bytes) a memcached holds, asked directly."""
    return set(mc_get_many(port, keys))


def mc_dump_keys(port, limit=1000000):
    """Every key a memcached holds (lru_crawler metadump all), as bytes."""
    from urllib.parse import unquote_to_bytes
    raw = mc_command(port, b"lru_crawler metadump all\r\n", b"END\r\n", timeout=60)
    keys = set()
    for line in raw.split(b"\r\n"):
        if line.startswith(b"key="):
            keys.add(unquote_to_bytes(line.split(b" ", 1)[0][4:]))
            if len(keys) > limit:
                break
    return keys


def placement(backends, keys):
    """{key: backend} by asking every backend directly; AssertionError if a key is on 0 or 2+."""
    keys = [k if isinstance(k, bytes) else k.encode() for k in keys]
    where = {}
    for b in backends:
        for k in mc_keys_held(b.port, keys):
            if k in where:
                raise AssertionError("key %r is on both %s and %s" % (k, where[k].addr, b.addr))
            where[k] = b
    missing = [k for k in keys if k not in where]
    if missing:
        raise AssertionError("%d keys on no backend, e.g. %r" % (len(missing), missing[:5]))
    return where


# ---------------------------------------------------------------------------
# a recording memcached stand-in: what exactly did the proxy send?


class FakeMemcached:
    """A tiny memcached (text protocol, in-memory) that records every request it parses.

    Listens on 127.0.0.1 with a kernel-chosen port (bind port 0, read it back).
    requests() lists (connection number, raw request bytes incl. any data block).
    Threads end when stop() closes the listener and connections.
    """

    STORAGE = (b"set", b"add", b"replace", b"append", b"prepend", b"cas")

    def __init__(self, name="fake", hold_connects=False):
        self.name = name
        self.version = b"1.6.18-fake"  # what `version` answers
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((HOST, 0))
        self.lsock.listen(0 if hold_connects else 64)
        self.port = self.lsock.getsockname()[1]
        # hold_connects: a connection of our own fills the accept queue (one
        # place with a backlog of 0) and nothing is accepted until release():
        # the kernel drops other SYNs, so a connect completes only at its
        # SYN's retransmit after release() (Linux: 1 s after the first).
        self.accepting = threading.Event()
        self.filler = None
        if hold_connects:
            self.filler = socket.create_connection((HOST, self.port), timeout=IO_TIMEOUT)
        else:
            self.accepting.set()
        self.lock = threading.Lock()
        self.store = {}
        self.log = []
        self.conns = []
        self.threads = []
        self.stopped = False
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    @property
    def addr(self):
        return "%s:%d" % (HOST, self.port)

    def release(self):
        """Accept connections from now on (see hold_connects). The backlog
        grows first: with room for one, two connects completing at once (a
        worker's and a probe's) overflow it, and with SYN cookies the kernel
        answers the loser's next segment with a reset."""
        self.lsock.listen(64)
        self.accepting.set()

    def _accept(self):
        n = 0
        self.accepting.wait()
        while not self.stopped:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return
            n += 1
            with self.lock:
                self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, n), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, conn, cid):
        buf = b""
        try:
            while not self.stopped:
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
                    if parts and parts[0] in self.STORAGE and len(parts) >= 5 and \
                            parts[4].isdigit():
                        need = i + 2 + int(parts[4]) + 2
                        if len(buf) < need:
                            break
                    raw, buf = buf[:need], buf[need:]
                    with self.lock:
                        self.log.append((cid, raw))
                        reply = self._answer(parts, raw[i + 2:-2])
                    if reply:
                        conn.sendall(reply)
        except OSError:
            return
        finally:
            conn.close()

    def _answer(self, parts, data):
        if not parts:
            return b"ERROR\r\n"
        cmd, noreply = parts[0], parts[-1] == b"noreply"
        r = b"ERROR\r\n"
        if cmd in self.STORAGE and len(parts) >= 5:
            k, flags = parts[1], int(parts[2])
            have = k in self.store
            if cmd == b"set" or (cmd == b"add" and not have) or (cmd == b"replace" and have):
                self.store[k] = (flags, data)
                r = b"STORED\r\n"
            elif cmd in (b"append", b"prepend") and have:
                f, v = self.store[k]
                self.store[k] = (f, v + data if cmd == b"append" else data + v)
                r = b"STORED\r\n"
            elif cmd == b"cas":
                r = b"NOT_FOUND\r\n" if not have else b"EXISTS\r\n"
            else:
                r = b"NOT_STORED\r\n"
        elif cmd in (b"get", b"gets", b"gat", b"gats"):
            keys = parts[2:] if cmd in (b"gat", b"gats") else parts[1:]
            r = b"".join(b"VALUE %s %d %d%s\r\n%s\r\n" % (
                k, self.store[k][0], len(self.store[k][1]),
                b" 1" if cmd in (b"gets", b"gats") else b"",
                self.store[k][1]) for k in keys if k in self.store) + b"END\r\n"
        elif cmd == b"delete" and len(parts) >= 2:
            r = b"DELETED\r\n" if self.store.pop(parts[1], None) else b"NOT_FOUND\r\n"
        elif cmd in (b"incr", b"decr") and len(parts) >= 3:
            if parts[1] not in self.store:
                r = b"NOT_FOUND\r\n"
            else:
                f, v = self.store[parts[1]]
                n = int(v) + int(parts[2]) if cmd == b"incr" else max(0, int(v) - int(parts[2]))
                self.store[parts[1]] = (f, b"%d" % n)
                r = b"%d\r\n" % n
        elif cmd == b"touch" and len(parts) >= 3:
            r = b"TOUCHED\r\n" if parts[1] in self.store else b"NOT_FOUND\r\n"
        elif cmd == b"version":
            r = b"VERSION %s\r\n" % self.version
        elif cmd in (b"flush_all", b"verbosity"):
            if cmd == b"flush_all":
                self.store.clear()
            r = b"OK\r\n"
        return b"" if noreply else r

    def requests(self, ignore_probes=True):
        """(connection, raw request) in arrival order; health probes (version) left out."""
        with self.lock:
            out = list(self.log)
        if ignore_probes:
            out = [(c, r) for c, r in out if r != b"version\r\n"]
        return out

    def clear(self):
        with self.lock:
            self.log.clear()

    def stop(self):
        self.stopped = True
        self.accepting.set()
        try:
            self.lsock.close()
        except OSError:
            pass
        if self.filler is not None:
            self.filler.close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        for t in self.threads:
            t.join(5)


# ---------------------------------------------------------------------------
# test case base: cleanups, known twemproxy differences

KNOWN_DIFFS = []  # (test id, reason, outcome) recorded under nutcracker


class ProxyTestCase(unittest.TestCase):
    maxDiff = 4000

    @contextlib.contextmanager
    def nc_differs(self, reason):
        """Mark a block where twemproxy is known to differ from walnut's specification.

        Under walnut the block runs as normal assertions. Under nutcracker a
        failure (AssertionError, socket error) in the block is recorded as an
        expected difference and the test goes on; a pass is recorded too.
        """
        if not UNDER_NUTCRACKER:
            yield
            return
        try:
            yield
        except (AssertionError, OSError, HarnessError, ValueError, IndexError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            KNOWN_DIFFS.append((self.id(), reason, "differs as expected: " + msg[:300]))
        else:
            KNOWN_DIFFS.append((self.id(), reason, "nutcracker matched walnut's spec here"))

    def start_memcached(self, tmp, n=3, prefix="mc"):
        out = []
        for i in range(n):
            m = Memcached(tmp, name="%s%d" % (prefix, i)).start()
            self.addCleanup(m.stop)
            out.append(m)
        return out

    def start_proxy(self, tmp, pools, workers=1, **kw):
        p = Proxy(tmp, pools, workers=workers, **kw).start()
        self.addCleanup(p.kill)  # runs after the check below (cleanups are LIFO)
        self.addCleanup(self._log_if_failed, p)  # before the kill; tmp is cleaned after it
        return p

    def start_with_silent_pool(self, fast, silent, name, extra, redis=False):
        """One worker serving pool "fast" over the servers `fast` and pool
        "slow" over the fake `silent`, which never answers; the proxy, the
        fake and the temp dir go at cleanup."""
        tmp = TempDir()
        self.addCleanup(tmp.cleanup)
        self.addCleanup(silent.stop)
        pools = {"fast": pool(fast, redis=redis, timeout=10000),
                 "slow": pool([silent], redis=redis, timeout=60000)}
        px = self.start_proxy(tmp, pools, workers=1, name=name, extra=extra)
        self.addCleanup(px.stop, check=False)
        return px

    def _failed_so_far(self):
        """Whether the test method (or a cleanup before this one) has failed or erred.
        unittest resets its own success flag around each cleanup, so ask the result."""
        outcome = getattr(self, "_outcome", None)
        result = getattr(outcome, "result", None)
        if result is None:
            return False
        return any(t is self for t, _ in list(result.failures) + list(result.errors))

    def _log_if_failed(self, proxy):
        """When the test has failed so far, the proxy's log tail goes to stderr: a failure
        seen once in CI can then be read, not guessed at."""
        if not self._failed_so_far():
            return
        rc = proxy.proc.poll() if proxy.proc else None
        sys.stderr.write("\n--- %s: log of %s (pid %s, %s), last lines ---\n%s\n%s"
                         "--- end of log ---\n"
                         % (self.id(), proxy.name, proxy.proc.pid if proxy.proc else "-",
                            "running" if rc is None else "exit status %s" % rc,
                            tail(proxy.log_path, 6000), tail(proxy.log_path + ".stdout", 2000)))

    def tmpdir(self):
        t = TempDir()
        self.addCleanup(t.cleanup)
        return t

    def assertServerError(self, line, what=""):
        """A SERVER_ERROR line; under the twemproxy wording where the text is a strerror."""
        self.assertRegex(line, rb"^SERVER_ERROR [^\r\n]+\r\n$", what)


class SharedProxyCase(ProxyTestCase):
    """A TestCase class whose walnut(s) and servers start once for all its
    tests. setUpClass calls the class's start_shared(), which appends what it
    starts to cls.servers and cls.proxies as it goes; whatever was started is
    stopped at the end (SIGTERM: a walnut must exit 0 promptly), or at once
    when starting failed part way."""

    servers = proxies = ()

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.servers, cls.proxies = [], []
        try:
            cls.start_shared()
        except BaseException:
            cls._stop_all(check=False)
            raise

    @classmethod
    def start_shared(cls):
        raise NotImplementedError

    @classmethod
    def shared_server(cls, kind, name, **kw):
        """A server kind(tmp, name=name, **kw) (Memcached, RedisServer),
        started, stopped at the end."""
        cls.servers.append(kind(cls.tmp, name=name, **kw).start())
        return cls.servers[-1]

    @classmethod
    def shared_servers(cls, kind, n, prefix, **kw):
        """n of them, named prefix + 0, 1, ..."""
        return [cls.shared_server(kind, "%s%d" % (prefix, i), **kw) for i in range(n)]

    @classmethod
    def shared_proxy(cls, pools, **kw):
        """A walnut (Proxy(tmp, pools, **kw)), started, stopped at the end."""
        cls.proxies.append(Proxy(cls.tmp, pools, **kw).start())
        return cls.proxies[-1]

    @classmethod
    def _stop_all(cls, check):
        try:
            for p in cls.proxies:
                p.stop(check=check)
        finally:
            for s in cls.servers:
                s.stop()
            cls.tmp.cleanup()

    @classmethod
    def tearDownClass(cls):
        cls._stop_all(check=True)

    def assertProxyAlive(self):
        for p in self.proxies:
            if not p.alive():
                self.fail("%s is not running (exit status %s); log:\n%s" % (
                    p.name, p.proc.returncode, p.log()))

    def watch_shared(self):
        """At a test's start: the walnuts are alive, and their logs' tails go
        to stderr if the test fails."""
        self.assertProxyAlive()
        for p in self.proxies:
            self.addCleanup(self._log_if_failed, p)


def report_known_diffs(stream=sys.stderr):
    if not UNDER_NUTCRACKER:
        return
    stream.write("\n=== Known differences from walnut's spec, observed under nutcracker "
                 "(%d) ===\n" % len(KNOWN_DIFFS))
    for tid, reason, outcome in KNOWN_DIFFS:
        stream.write("- %s\n    spec: %s\n    %s\n" % (tid.split(".", 1)[-1], reason, outcome))
    stream.write("\n")
    stream.flush()


def main():
    """unittest.main with verbose output; the summary is the last thing printed."""
    sys.stderr.write("harness: proxy under test: %s (%s)\n" % (PROXY, _describe_proxy()))
    unittest.main(verbosity=2)


def _describe_proxy():
    try:
        return proxy_bin()
    except HarnessError as e:
        return str(e)
