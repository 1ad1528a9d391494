"""
test_hostile.py -- the reliability issue's breaks, each as the attack that found it: pipelined API
bytes, an ack stream, a ping flood that never reads, history answers held for the commit, descriptor
exhaustion on the API listener, bytes that are not UTF-8 in stored headers, a trickled API head,
connections that never finish a handshake, and a symlink out of static_dir. Each asserts the bound
the README promises, not a timing.
"""
import json
import os
import socket
import struct
import subprocess
import threading
import time

import pytest

from wsp import (API_KEY, PG, ROOT, Server, raw_connect, read_http_response, sanitized_build,
                 upgrade_request, wait_api)

# ASan keeps freed memory in quarantine: RSS bounds are checked on the plain build only; the
# behaviour (1013, answers cut) is checked on both.
RSS_CHECKED = not sanitized_build()

WAIT = 10


def api_request(method, path, body=None, key=API_KEY):
    b = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(b)}\r\n"
    return head.encode() + b"\r\n" + b


def read_responses(sock, count, timeout=WAIT):
    """Read count HTTP responses (Content-Length framed); returns their statuses and bodies."""
    sock.settimeout(timeout)
    buf = b""
    out = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            rest += chunk
        out.append((status, rest[:length]))
        buf = rest[length:]
    return out


@pytest.fixture
def srv(tmp_path):
    s = Server(str(tmp_path)).start()
    wait_api(s)
    yield s
    s.stop()


def ws_frame(opcode, payload=b""):
    """A masked client frame with a zero mask (payload as is)."""
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        hdr = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return hdr + b"\x00\x00\x00\x00" + payload


def chat_socket(srv, user, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(WAIT)
    s.connect(("127.0.0.1", srv.port))
    s.sendall(upgrade_request(f"/ws?token={srv.token(user)}"))
    status, _, rest = read_http_response(s)
    assert status == 101
    return s, rest


class Frames:
    """Reads server frames from a socket (text payloads decoded as JSON where asked)."""

    def __init__(self, sock, buf=b""):
        self.s = sock
        self.buf = buf

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def next(self):
        self._need(2)
        op, n = self.buf[0] & 0x0F, self.buf[1] & 0x7F
        off = 2
        if n == 126:
            self._need(4)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(off + n)
        p = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return op, p

    def json_until(self, pred, timeout=WAIT):
        deadline = time.time() + timeout
        while time.time() < deadline:
            op, p = self.next()
            if op == 1:
                m = json.loads(p)
                if pred(m):
                    return m
        raise AssertionError("not received in time")


# ---- 1. pipelined API bytes ----

def test_api_pipelined_pushes_all_answered(tmp_path):
    # 120 pushes in one write (~25 KB): before the fix, anything past ~16 KiB spun the loop (the
    # read callback re-run at the input's high-water mark) and starved the group commit. The
    # commit_delay bound is set high so that only the fix, not the bound, can make this pass.
    srv = Server(str(tmp_path), store={"commit_delay": "1s"}).start()
    wait_api(srv)
    t0 = time.time()
    reqs = b"".join(api_request("POST", "/api/v1/push", {"to": "bob", "body": {"n": i},
                                                          "cid": f"p{i}"}) for i in range(120))
    assert len(reqs) > 20000
    s = raw_connect(srv.api_port, timeout=WAIT)
    s.sendall(reqs)
    got = read_responses(s, 120)
    s.close()
    assert [st for st, _ in got] == [202] * 120
    assert time.time() - t0 < 10, "each push waited for the commit_delay bound: the loop spins"
    assert srv.db_rows("SELECT count(*) FROM messages")[0][0] == 120
    # and the loop still commits for others afterwards
    s = raw_connect(srv.api_port, timeout=WAIT)
    s.sendall(api_request("POST", "/api/v1/push", {"to": "bob", "body": "after"}))
    assert read_responses(s, 1)[0][0] == 202
    s.close()
    srv.stop()


# ---- 2. an ack stream must not starve everyone's commit ----

def test_ack_stream_does_not_hold_other_receipts(tmp_path):
    srv = Server(str(tmp_path), limits={"ack_rate": "0"}).start()  # acks unlimited: worst case
    try:
        flood, rest = chat_socket(srv, "flooder")
        stop = threading.Event()

        def pump():
            ack = ws_frame(1, b'{"type":"ack","id":1}') * 200
            try:
                while not stop.is_set():
                    flood.sendall(ack)
            except OSError:
                pass

        def drain():
            try:
                while not stop.is_set():
                    if not flood.recv(65536):
                        return
            except OSError:
                pass

        t1 = threading.Thread(target=pump, daemon=True)
        t2 = threading.Thread(target=drain, daemon=True)
        t1.start()
        t2.start()
        time.sleep(0.3)
        other, rest = chat_socket(srv, "alice")
        f = Frames(other, rest)
        f.json_until(lambda m: m.get("type") == "welcome")
        for i in range(5):
            other.sendall(ws_frame(1, json.dumps({"type": "send", "to": "bob", "body": i,
                                                  "cid": f"c{i}"}).encode()))
            m = f.json_until(lambda m: m.get("type") in ("sent", "error"), timeout=5)
            assert m["type"] == "sent", m
        stop.set()
        other.close()
        flood.close()
    finally:
        srv.stop()


def test_ack_stream_is_rate_limited(tmp_path):
    srv = Server(str(tmp_path), limits={"ack_rate": "100", "ack_burst": "100"}).start()
    try:
        s, rest = chat_socket(srv, "flooder")
        f = Frames(s, rest)
        f.json_until(lambda m: m.get("type") == "welcome")
        s.sendall(ws_frame(1, b'{"type":"ack","id":1}') * 400)
        m = f.json_until(lambda m: m.get("code") == "rate_limited")
        assert m["type"] == "error"
        s.close()
    finally:
        srv.stop()


# ---- 3. ping flood, never reading ----

def test_ping_flood_without_reading_is_a_slow_consumer(srv):
    rss0 = srv.rss_kib()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(WAIT)
    s.connect(("127.0.0.1", srv.port))
    s.sendall(upgrade_request("/echo"))
    status, _, rest = read_http_response(s)
    assert status == 101
    ping = ws_frame(9, b"p" * 125) * 256
    sent = 0
    try:
        while sent < 64 * 1024 * 1024:
            s.sendall(ping)
            sent += len(ping)
    except OSError:
        pass  # the server gave up on us: that is the point
    grown = srv.rss_kib() - rss0
    assert grown < 32 * 1024 or not RSS_CHECKED, f"server grew {grown} KiB for one connection"
    # what the server still wrote ends with a 1013 close (or the socket was cut)
    f = Frames(s, rest)
    code = None
    try:
        while True:
            op, p = f.next()
            if op == 8:
                code = struct.unpack("!H", p[:2])[0]
                break
    except (EOFError, OSError):
        pass
    assert code in (None, 1013)
    s.close()
    assert "slow consumer" in srv.log()


# ---- 4. held answers count against send_queue ----

def test_history_answers_bounded_by_send_queue(srv):
    rss0 = srv.rss_kib()
    s, rest = chat_socket(srv, "alice", rcvbuf=4096)
    f = Frames(s, rest)
    f.json_until(lambda m: m.get("type") == "replayed")
    big = "x" * 60000
    for i in range(100):
        s.sendall(ws_frame(1, json.dumps({"type": "send", "to": "alice", "body": big,
                                          "cid": f"b{i}"}).encode()))
    # one write: an ack (opens the transaction) and 99 history pages of 100 x 60 KB each
    burst = ws_frame(1, b'{"type":"ack","id":1}') + ws_frame(
        1, b'{"type":"history","with":"alice","limit":100}') * 99
    try:
        s.sendall(burst)
    except OSError:
        pass
    time.sleep(1.0)
    grown = srv.rss_kib() - rss0
    assert grown < 64 * 1024 or not RSS_CHECKED, f"server grew {grown} KiB"
    s.close()


def test_history_page_cut_at_byte_budget(tmp_path):
    srv = Server(str(tmp_path), limits={"send_queue": "256KiB"}).start()
    try:
        s, rest = chat_socket(srv, "alice")
        f = Frames(s, rest)
        f.json_until(lambda m: m.get("type") == "replayed")
        for i in range(10):
            s.sendall(ws_frame(1, json.dumps({"type": "send", "to": "alice", "body": "y" * 40000,
                                              "cid": f"h{i}"}).encode()))
            f.json_until(lambda m: m.get("type") == "sent")
        s.sendall(ws_frame(1, b'{"type":"history","with":"alice","limit":100,"rid":"r"}'))
        m = f.json_until(lambda m: m.get("type") == "history")
        assert 1 <= len(m["items"]) < 10 and m["more"] is True
        s.close()
    finally:
        srv.stop()


# ---- 7. API listener out of descriptors ----

def test_api_emfile_backs_off(srv):
    import resource
    idle = []
    soft, hard = resource.prlimit(srv.proc.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(srv.proc.pid, resource.RLIMIT_NOFILE, (40, hard))
    try:
        for _ in range(60):
            try:
                idle.append(socket.create_connection(("127.0.0.1", srv.api_port), timeout=1))
            except OSError:
                break
        lines0 = srv.log().count("accept:")
        time.sleep(2.0)
        lines = srv.log().count("accept:") - lines0
        assert lines < 100, f"{lines} accept error lines in 2 s: the API listener spins"
    finally:
        for s in idle:
            s.close()
        resource.prlimit(srv.proc.pid, resource.RLIMIT_NOFILE, (soft, hard))
    # it recovers
    deadline = time.time() + 5
    while True:
        try:
            s = raw_connect(srv.api_port, timeout=2)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            if read_responses(s, 1, timeout=2)[0][0] == 200:
                s.close()
                break
        except (OSError, IndexError):
            pass
        assert time.time() < deadline, "the API did not recover"
        time.sleep(0.1)


# ---- 8. bytes that are not UTF-8 in stored headers ----

def test_user_agent_not_utf8_gives_valid_json(srv):
    s = socket.socket()
    s.settimeout(WAIT)
    s.connect(("127.0.0.1", srv.port))
    ua = b"evil\xff\xfe\x9b[31m" + "é".encode() * 200  # obs-text, a C1 byte, and > 255 bytes
    s.sendall(upgrade_request(f"/ws?token={srv.token('mallory')}",
                              extra="User-Agent: ").rstrip(b"\r\n") + ua + b"\r\n\r\n")
    status, _, _ = read_http_response(s)
    assert status == 101
    c = raw_connect(srv.api_port, timeout=WAIT)
    c.sendall(api_request("GET", "/api/v1/sessions?user=mallory"))
    st, body = read_responses(c, 1)[0]
    c.close()
    assert st == 200
    doc = json.loads(body.decode("utf-8"))  # strict: raises on invalid UTF-8
    agent = doc["sessions"][0]["user_agent"]
    assert agent.startswith("evil") and "\x9b" not in agent and "\u009b" not in agent
    assert len(agent.encode()) <= 255
    sid = doc["sessions"][0]["id"]
    wsctl = os.path.join(os.path.dirname(os.environ.get("WSP_BIN", "")), "wsctl")
    # PostgreSQL has no file for --db: the server's config names the database
    db_args = ["--config", srv.config_path] if PG else ["--db", srv.db]
    if os.path.exists(wsctl):
        out = subprocess.run([wsctl, *db_args, "session", str(sid)], capture_output=True,
                             timeout=WAIT)
        assert out.returncode == 0, out.stderr
        assert b"\x9b" not in out.stdout and b"\x1b" not in out.stdout
        out = subprocess.run([wsctl, *db_args, "sessions", "--json"], capture_output=True,
                             timeout=WAIT)
        rows = json.loads(out.stdout.decode("utf-8"))
        rows = rows["sessions"] if isinstance(rows, dict) else rows
        assert any((r.get("user_agent") or "").startswith("evil") for r in rows
                   if r["user"] == "mallory")
    s.close()


# ---- 9. API slowloris and per-peer cap ----

def test_api_trickled_head_times_out(tmp_path):
    srv = Server(str(tmp_path), api={"request_timeout": "1s"}).start()
    try:
        wait_api(srv)
        s = raw_connect(srv.api_port, timeout=WAIT)
        head = b"GET /api/v1/sessions HTTP/1.1\r\nHost: x\r\n"
        t0 = time.time()
        status = None
        try:
            for b in head:
                s.sendall(bytes([b]))
                time.sleep(0.2)
                s.settimeout(0.01)
                try:
                    data = s.recv(4096)
                    if data:
                        status = int(data.split(b" ")[1])
                        break
                except socket.timeout:
                    pass
        except OSError:
            pass
        assert status == 408, status
        assert time.time() - t0 < 5
        s.close()
    finally:
        srv.stop()


def test_api_connections_per_peer_capped(tmp_path):
    srv = Server(str(tmp_path), api={"max_connections_per_ip": "4"}).start()
    try:
        wait_api(srv)
        held = [raw_connect(srv.api_port, timeout=WAIT) for _ in range(4)]
        extra = raw_connect(srv.api_port, timeout=WAIT)
        extra.settimeout(WAIT)
        try:
            assert extra.recv(16) == b""  # closed at accept
        except ConnectionResetError:
            pass
        assert "max_connections_per_ip" in srv.log()
        for s in held:
            s.close()
        extra.close()
    finally:
        srv.stop()


# ---- pre-upgrade connections per address, static symlinks ----

def wait_main_idle(srv, timeout=5):
    """Until the main listener has no connection open (from /metrics)."""
    deadline = time.time() + timeout
    while True:
        c = raw_connect(srv.api_port, timeout=WAIT)
        c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        body = read_responses(c, 1)[0][1].decode()
        c.close()
        if "\nwsproxy_connections_open 0\n" in body:
            return
        assert time.time() < deadline, "connections stay open"
        time.sleep(0.02)


def test_unfinished_handshakes_count_per_address(tmp_path):
    srv = Server(str(tmp_path), limits={"max_connections_per_ip": "5"}).start()
    try:
        wait_main_idle(srv)  # the harness's readiness probe must be gone before we count
        held = [raw_connect(srv.port, timeout=WAIT) for _ in range(5)]
        time.sleep(0.2)
        s = raw_connect(srv.port, timeout=WAIT)
        status, _, _ = read_http_response(s)
        assert status == 503
        s.close()
        for h in held:
            h.close()
        # and the slots come back
        deadline = time.time() + 5
        while True:
            s = raw_connect(srv.port, timeout=WAIT)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, _ = read_http_response(s)
            s.close()
            if status == 200:
                break
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        srv.stop()


@pytest.mark.parametrize("follow", [False, True])
def test_static_symlink_out_of_root(tmp_path, follow):
    root = tmp_path / "static"
    root.mkdir()
    (root / "index.html").write_text("hi")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not publish")
    os.symlink(secret, root / "leak.txt")
    os.symlink(root / "index.html", root / "inside.html")
    (tmp_path / "srv").mkdir()
    srv = Server(str(tmp_path / "srv"), server={
        "static_dir": str(root), "static_follow_symlinks": "true" if follow else "false"}).start()
    try:
        def get(path):
            s = raw_connect(srv.port, timeout=WAIT)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, _, body = read_http_response(s)
            s.close()
            return status
        assert get("/leak.txt") == (200 if follow else 404)
        assert get("/inside.html") == 200  # a link that stays inside is fine
    finally:
        srv.stop()


# ---- 5 and 6. a foreign write lock: the loop keeps serving, cleanup is retried until stored ----

@pytest.mark.skipif(PG, reason="SQLite-specific: a foreign sqlite3 write lock on the .db file")
def test_foreign_lock_never_stalls_and_cleanup_is_retried(tmp_path):
    import sqlite3
    srv = Server(str(tmp_path), store={"lock_wait": "20ms"}, heartbeat={"ping_interval": "0"}).start()
    try:
        alice, arest = chat_socket(srv, "alice")
        Frames(alice, arest).json_until(lambda m: m.get("type") == "replayed")
        bob, brest = chat_socket(srv, "bob")
        fb = Frames(bob, brest)
        fb.json_until(lambda m: m.get("type") == "replayed")
        lock = sqlite3.connect(srv.db, timeout=0, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            alice.close()  # her session end cannot be written while the lock is held
            time.sleep(0.3)
            t0 = time.time()
            for i in range(5):
                bob.sendall(ws_frame(1, json.dumps({"type": "presence", "users": ["alice"],
                                                    "rid": f"q{i}"}).encode()))
                m = fb.json_until(lambda m: m.get("rid") == f"q{i}", timeout=5)
                assert m["state"] == "offline"
            assert time.time() - t0 < 3, "queries waited for the lock"
            bob.sendall(ws_frame(1, b'{"type":"send","to":"carol","body":1,"cid":"x1"}'))
            m = fb.json_until(lambda m: m.get("type") in ("sent", "error"), timeout=5)
            assert m["type"] == "error" and m["code"] == "internal"  # no receipt: nothing durable
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        # the retry writes the end once the lock is gone: no ghost session, no ghost presence
        deadline = time.time() + 10
        while True:
            rows = srv.db_rows("SELECT ended_at, end_reason FROM sessions WHERE user = 'alice'")
            pres = srv.db_rows("SELECT state FROM presence WHERE user = 'alice'")
            if rows and rows[0][0] and pres and pres[0][0] == 'offline':
                break
            assert time.time() < deadline, (rows, pres)
            time.sleep(0.1)
        assert rows[0][1] == "connection_lost"  # closed without a close frame
        # and the resend with the same cid now goes through once
        bob.sendall(ws_frame(1, b'{"type":"send","to":"carol","body":1,"cid":"x1"}'))
        m = fb.json_until(lambda m: m.get("type") in ("sent", "error"), timeout=5)
        assert m["type"] == "sent"
        bob.close()
    finally:
        srv.stop()
