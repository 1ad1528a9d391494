"""
wsp.py -- helpers for integration tests: start the real wsproxy binary on random loopback ports with
a temp config and database, mint tokens, and speak raw RFC 6455 over a socket for bad-input tests.

With WSP_STORE=postgresql every Server uses the PostgreSQL backend instead: a fresh database of its
own (CREATE DATABASE wsp_<run>_<n>) on one PostgreSQL server for the whole run, which is either
WSP_PG_DSN_BASE (a conninfo without dbname, e.g. "host=127.0.0.1 port=5432 user=postgres") or a
throwaway one started on first use with scripts/pgtmp.sh and stopped at exit. Servers with the same
[store] path share one database (as they would share the SQLite file); db_rows() then reads it with
psycopg2 (python3-psycopg2).
"""
import atexit
import base64
import collections
import hashlib
import hmac
import json
import os
import queue
import re
import secrets
import signal
import socket
import sqlite3
import struct
import subprocess
import tempfile
import threading
import time
import weakref

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("WSP_BIN", os.path.join(ROOT, "build", "wsproxy"))
SECRET = "integration-test-secret-0123456789abcdef"
PG = os.environ.get("WSP_STORE", "").strip().lower() == "postgresql"
API_KEY = "test-api-key-0123456789"


def sanitized_build():
    """True for an ASan build: its allocator keeps freed memory in quarantine, so RSS figures say
    nothing about the server's own memory there (such checks run on the plain build)."""
    try:
        with open(BIN, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


_recent_ports = collections.deque(maxlen=512)


def free_port():
    """
    A loopback port free now and not handed out lately by this process: the kernel may give the
    port it just released to the next bind, so a server's listen and API ports, asked for one after
    the other, could come out equal (seen once: "[api] listen must differ from [server] listen").
    """
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _recent_ports:
            _recent_ports.append(port)
            return port


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(sub, secret=SECRET, exp_in=3600, alg="HS256", extra=None, now=None):
    now = int(time.time()) if now is None else now
    header = {"alg": alg, "typ": "JWT"}
    payload = {"sub": sub, "iat": now}
    if exp_in is not None:
        payload["exp"] = now + exp_in
    if extra:
        payload.update(extra)
    signing = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    if alg == "none":
        return signing + "."
    sig = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64url(sig)


# ---- PostgreSQL mode (WSP_STORE=postgresql) ----

try:
    import psycopg2
except ImportError:  # db_rows() in PG mode needs it; the rest falls back to psql
    psycopg2 = None


def _pg_admin_exec(base, sql):
    """One statement on the maintenance database "postgres", in autocommit."""
    if psycopg2 is not None:
        con = psycopg2.connect(base + " dbname=postgres")
        try:
            con.autocommit = True
            con.cursor().execute(sql)
        finally:
            con.close()
        return
    subprocess.run(["psql", base + " dbname=postgres", "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql],
                   check=True, capture_output=True, timeout=60)


class _PgCluster:
    """The one PostgreSQL server of this run. CREATE DATABASE (~60 ms) and DROP DATABASE (~120 ms,
    a checkpoint) would add minutes to a run done inline: a thread keeps a few databases made ahead
    and another drops the released ones, each on its own connection."""

    READY = 3

    def __init__(self):
        self.owned_dir = None
        base = os.environ.get("WSP_PG_DSN_BASE", "").strip()
        if not base:
            self.owned_dir = tempfile.mkdtemp(prefix="wsp-pg-")
            out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "pgtmp.sh"), "start",
                                  self.owned_dir], capture_output=True, text=True, timeout=120)
            if out.returncode != 0:
                raise RuntimeError("scripts/pgtmp.sh start failed:\n" + out.stderr)
            atexit.register(self._stop_owned)
            base = out.stdout.strip().splitlines()[-1]
        self.base = re.sub(r"\s*\bdbname\s*=\s*\S+", "", base).strip()
        self.run = f"{os.getpid()}_{secrets.token_hex(3)}"
        self.n = 0
        self.lock = threading.Lock()
        self.ready = queue.Queue(maxsize=self.READY)
        self.drops = queue.Queue()
        self.made = set()   # databases created and not dropped yet
        self.creator_alive = True
        self.closing = False
        self.create_lock = threading.Lock()
        threading.Thread(target=self._creator, daemon=True).start()
        threading.Thread(target=self._dropper, daemon=True).start()
        if self.owned_dir is None:
            atexit.register(self._drop_all)

    def _next_name(self):
        with self.lock:
            self.n += 1
            return f"wsp_{self.run}_{self.n}"

    def _create(self, cur=None):
        with self.create_lock:  # _drop_all waits for a CREATE in flight
            if self.closing:
                raise RuntimeError("the run is over")
            name = self._next_name()
            with self.lock:
                self.made.add(name)
            if cur is not None:
                cur.execute(f"CREATE DATABASE {name}")
            else:
                _pg_admin_exec(self.base, f"CREATE DATABASE {name}")
            return name

    def _admin_cursor(self):
        if psycopg2 is None:
            return None
        con = psycopg2.connect(self.base + " dbname=postgres")
        con.autocommit = True
        return con.cursor()

    def _creator(self):
        try:
            cur = self._admin_cursor()
            while True:
                self.ready.put(self._create(cur))  # blocks while READY are waiting
        except Exception:  # take() creates inline from now on
            self.creator_alive = False

    def _dropper(self):
        cur = None
        while True:
            name = self.drops.get()
            try:
                if cur is None:
                    cur = self._admin_cursor()
                sql = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                cur.execute(sql) if cur is not None else _pg_admin_exec(self.base, sql)
                with self.lock:
                    self.made.discard(name)
            except Exception:
                cur = None
            finally:
                self.drops.task_done()

    def take(self):
        while self.creator_alive:
            try:
                return self.ready.get(timeout=0.5)
            except queue.Empty:
                pass
        return self._create()

    def release(self, name):
        self.drops.put(name)

    def _stop_owned(self):
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "pgtmp.sh"), "stop", self.owned_dir],
                       capture_output=True, timeout=120)

    def _drop_all(self):
        """An outside server keeps nothing of the run."""
        with self.create_lock:
            self.closing = True
        with self.lock:
            left = sorted(self.made)
        for name in left:
            try:
                _pg_admin_exec(self.base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            except Exception:
                pass


_pg_cluster = None
_pg_by_path = {}      # abspath of [store] path -> [dbname, number of live Server objects]
_pg_pending = set()   # databases no Server object refers to any more: dropped by pg_flush_drops()


def _pg():
    global _pg_cluster
    if _pg_cluster is None:
        _pg_cluster = _PgCluster()
    return _pg_cluster


def _pg_database_for(path):
    """The database that stands for the SQLite file at path: the same one for every Server of
    that path (a test that restarts, or makes a second Server on the same directory, keeps its
    data), a fresh one otherwise."""
    key = os.path.abspath(path)
    ent = _pg_by_path.get(key)
    if ent is None:
        ent = _pg_by_path[key] = [_pg().take(), 0]
    ent[1] += 1
    _pg_pending.discard(key)
    return key, ent[0]


def _pg_unref(key):
    ent = _pg_by_path.get(key)
    if ent is not None:
        ent[1] -= 1
        if ent[1] <= 0:
            _pg_pending.add(key)


def pg_flush_drops():
    """Drop (in the background) the databases of Server objects gone since the last call; conftest
    calls it after each test, when no later Server can use that test's paths any more."""
    if _pg_cluster is None:
        return
    for key in list(_pg_pending):
        ent = _pg_by_path.get(key)
        if ent is not None and ent[1] <= 0:
            del _pg_by_path[key]
            _pg_cluster.release(ent[0])
    _pg_pending.clear()


def _pg_sql(sql):
    """SQLite-isms of the suite's queries, in PostgreSQL's words."""
    sql = re.sub(r'(?<!["\w.])user(?!["\w])', '"user"', sql)
    sql = re.sub(r"\bsqlite_master\b",
                 "(SELECT table_name AS name, 'table' AS type FROM information_schema.tables "
                 "WHERE table_schema = current_schema()) AS sqlite_master", sql)
    return _pg_alias_subqueries(sql)


def _pg_alias_subqueries(sql):
    """SQLite takes FROM (SELECT ...) without an alias; PostgreSQL wants one (outer level only)."""
    out, pos, n = [], 0, 0
    for m in re.finditer(r"\bFROM\s*\(\s*SELECT\b", sql, re.I):
        if m.start() < pos:
            continue
        depth, i = 0, sql.index("(", m.start())
        for j in range(i, len(sql)):
            depth += {"(": 1, ")": -1}.get(sql[j], 0)
            if depth == 0:
                break
        else:
            break
        rest = sql[j + 1:]
        out.append(sql[pos:j + 1])
        if re.match(r"\s*($|\)|,|;|(WHERE|GROUP|ORDER|LIMIT|JOIN|LEFT|INNER|UNION)\b)", rest, re.I):
            n += 1
            out.append(f" AS _sub{n}")
        pos = j + 1
    out.append(sql[pos:])
    return "".join(out)


class Server:
    """A wsproxy process with its own temp dir. Sections are dicts merged over test defaults."""

    def __init__(self, tmpdir=None, **sections):
        self.dir = tmpdir or tempfile.mkdtemp(prefix="wsp-it-")
        self.port = free_port()
        self.api_port = free_port()
        self.db = os.path.join(self.dir, "wsproxy.db")
        conf = {
            "server": {"listen": f"127.0.0.1:{self.port}", "static_dir": os.path.join(ROOT, "web"),
                       "close_timeout": "2s", "drain_timeout": "3s"},
            "auth": {"jwt_secret": SECRET},
            "store": {"path": self.db},
            "api": {"listen": f"127.0.0.1:{self.api_port}", "keys": API_KEY},
            "limits": {"rate": "0"},
            # rooms are closed by default; the suites written before access control use open ones
            "rooms": {"open": "*"},
            "log": {"level": "debug"},
        }
        for sec, kv in sections.items():
            conf.setdefault(sec, {}).update(kv)
        self.pg_db = None
        if PG and "backend" not in sections.get("store", {}):
            key, self.pg_db = _pg_database_for(os.path.join(self.dir, conf["store"]["path"]))
            weakref.finalize(self, _pg_unref, key).atexit = False
            conf["store"]["backend"] = "postgresql"
            conf["store"]["dsn"] = f"{_pg().base} dbname={self.pg_db}"
        self.conf = conf
        self.config_path = os.path.join(self.dir, "wsproxy.ini")
        with open(self.config_path, "w") as f:
            for sec, kv in conf.items():
                f.write(f"[{sec}]\n")
                for k, v in kv.items():
                    f.write(f"{k} = {v}\n")
        self.log_path = os.path.join(self.dir, "wsproxy.log")
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self):
        return f"ws://127.0.0.1:{self.port}"

    @property
    def api_url(self):
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, wait=True, extra_args=()):
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BIN, "--config", self.config_path, *extra_args],
                                     stdout=self.logf, stderr=subprocess.STDOUT, cwd=self.dir)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wsproxy exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                if self.conf.get("api", {}).get("listen"):
                    socket.create_connection(("127.0.0.1", self.api_port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("wsproxy did not start:\n" + self.log())

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.logf.close()
        return self.proc.returncode if self.proc else None

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.logf.close()

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def token(self, user, **kw):
        return make_token(user, **kw)

    def chat_url(self, user, **kw):
        return f"{self.ws_url}/ws?token={make_token(user, **kw)}"

    def db_rows(self, sql, args=()):
        if self.pg_db is not None:
            return self._pg_rows(sql, args)
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def pg_dsn(self):
        return self.conf["store"]["dsn"] if self.pg_db is not None else None

    def _pg_rows(self, sql, args=()):
        if psycopg2 is None:
            import pytest
            pytest.skip("db_rows() in PG mode needs python3-psycopg2")
        sql = _pg_sql(sql)
        if args:
            sql = sql.replace("%", "%%").replace("?", "%s")
        con = psycopg2.connect(self.pg_dsn())
        try:
            con.autocommit = True
            cur = con.cursor()
            cur.execute(sql, tuple(args) if args else None)
            return [tuple(r) for r in cur.fetchall()]
        finally:
            con.close()


def wait_api(srv, timeout=5):
    """Until the API answers. Server.wait_ready only waits for the main port: the API listener is
    bound just after it and the SIGTERM handler after that, so an answer is the proof of both."""
    if getattr(srv, "_api_ready", False):
        return
    deadline = time.time() + timeout
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", srv.api_port), timeout=1)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if s.recv(16).startswith(b"HTTP/1.1 "):
                s.close()
                srv._api_ready = True
                return
            s.close()
        except (ConnectionRefusedError, ConnectionResetError, socket.timeout):
            pass
        if time.time() > deadline:
            raise RuntimeError("the API did not answer")
        time.sleep(0.01)


# ---- raw sockets ----

def raw_connect(port, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s


def upgrade_request(path="/echo", host="127.0.0.1", key="dGhlIHNhbXBsZSBub25jZQ==", extra="",
                    method="GET", version="HTTP/1.1", upgrade=True):
    lines = [f"{method} {path} {version}", f"Host: {host}"]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                  "Sec-WebSocket-Version: 13"]
    req = "\r\n".join(lines) + "\r\n" + extra + "\r\n"
    return req.encode()


def read_http_response(s, limit=65536):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            break
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, rest


def http_status(port, request_bytes):
    s = raw_connect(port)
    try:
        s.sendall(request_bytes)
        status, headers, _ = read_http_response(s)
        return status, headers
    finally:
        s.close()


def raw_ws(port, path="/echo", extra=""):
    s = raw_connect(port)
    s.sendall(upgrade_request(path, extra=extra))
    status, headers, rest = read_http_response(s)
    assert status == 101, (status, headers)
    return RawWS(s, rest)


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length_override=None):
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload) if length_override is None else length_override
    if n < 126:
        hdr = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return hdr + key + masked


class RawWS:
    def __init__(self, sock, buffered=b""):
        self.s = sock
        self.buf = buffered

    def send(self, data):
        self.s.sendall(data)

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def recv_frame(self):
        """Returns (fin, opcode, payload)."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        off = 2
        if n == 126:
            self._need(4)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            self._need(10)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        assert not (b1 & 0x80), "server frames must not be masked"
        self._need(off + n)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_close(self):
        """Read frames until a close frame; returns its code (None when empty)."""
        while True:
            fin, op, payload = self.recv_frame()
            if op == 8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None

    def is_closed_by_peer(self, timeout=3):
        self.s.settimeout(timeout)
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()
