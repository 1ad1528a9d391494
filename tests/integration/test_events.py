"""Events to the app backend ([events], docs/events.md) against real receivers: a Python HTTP server
started here (records batches, checks signatures, fails or stalls on demand) and Debian's php-fpm on
a unix socket with a PHP script that checks the signature and appends the events to a file."""
import asyncio
import hashlib
import hmac
import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
import websockets

from conftest import assert_clean_log
from test_api import api, metric, metrics, push
from wsp import BIN, Server

EV_SECRET = "events-secret-0123456789"
WSCTL = os.environ.get("WSCTL_BIN", os.path.join(os.path.dirname(BIN), "wsctl"))


class Receiver:
    """An HTTP backend: mode "ok" answers 204, "fail" 500, "stall" holds the request (no answer)."""

    def __init__(self, secret=EV_SECRET, port=0):
        self.secret = secret
        self.batches = []  # (arrival time, body dict, headers)
        self.bad_signatures = 0
        self.mode = "ok"
        self.lock = threading.Lock()
        self.release = threading.Event()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers["Content-Length"])
                body = self.rfile.read(n)
                ts = self.headers["X-Wsproxy-Timestamp"]
                want = hmac.new(rec.secret.encode(), ts.encode() + b"." + body,
                                hashlib.sha256).hexdigest()
                mode = rec.mode
                with rec.lock:
                    if want != self.headers["X-Wsproxy-Signature"]:
                        rec.bad_signatures += 1
                    rec.batches.append((time.time(), json.loads(body), dict(self.headers), mode))
                if mode == "stall":
                    rec.release.wait(30)
                    return
                code = 204 if mode == "ok" else 500
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hooks/wsproxy"

    def stop(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def delivered(self):
        """Events of batches answered 2xx, in arrival order."""
        with self.lock:
            return [e for _, b, _, m in self.batches if m == "ok" for e in b["events"]]

    def all_events(self):
        with self.lock:
            return [e for _, b, _, _ in self.batches for e in b["events"]]


def events_server(tmp_path, target, **events):
    conf = {"target": target, "secret": EV_SECRET, "offline_delay": "300ms",
            "retry_initial": "100ms", "retry_max": "400ms", "timeout": "1s",
            "types": "session.opened,session.closed,user.online,user.offline,message.direct,"
                     "message.room,message.push,message.unacked,member.added,member.removed"}
    conf.update(events)
    return Server(str(tmp_path), events=conf)


def wait_for(pred, timeout=10, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def chat_client(srv, user):
    ws = await websockets.connect(srv.chat_url(user))
    while json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] != "replayed":
        pass
    return ws


def check_per_user_order(events):
    """Ids grow per user in first-delivery order (a redelivery repeats an id, never reorders)."""
    last = {}
    seen = set()
    for e in events:
        if e["id"] in seen:
            continue
        seen.add(e["id"])
        assert e["id"] > last.get(e["user"], 0), (e, last)
        last[e["user"]] = e["id"]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def test_events_http_signed_batches_in_order(tmp_path, receiver):
    srv = events_server(tmp_path, receiver.url).start()
    try:
        async def body():
            alice = await chat_client(srv, "alice")
            bob = await chat_client(srv, "bob")
            for i in range(5):
                await alice.send(json.dumps({"type": "send", "to": "bob", "body": {"n": i},
                                             "cid": f"c{i}"}))
            for _ in range(5):
                while json.loads(await asyncio.wait_for(bob.recv(), 5))["type"] != "msg":
                    pass
            await alice.send(json.dumps({"type": "join", "room": "lobby"}))
            await alice.send(json.dumps({"type": "send", "room": "lobby", "body": "hi all",
                                         "cid": "r1"}))
            while json.loads(await asyncio.wait_for(alice.recv(), 5))["type"] != "sent":
                pass
            await alice.close()
            await bob.close()
        asyncio.run(body())
        assert push(srv, to="carol", body={"hello": 1}).status == 202
        types = lambda: [e["type"] for e in receiver.delivered()]
        wait_for(lambda: types().count("user.offline") == 2 and "message.push" in types(),
                 what="offline events")
        ev = receiver.delivered()
        assert receiver.bad_signatures == 0
        check_per_user_order(ev)
        by = lambda u: [e["type"] for e in ev if e["user"] == u]
        assert by("alice") == ["session.opened", "user.online", "member.added", "message.room",
                               "session.closed",
                               "user.offline"]
        room = [e for e in ev if e["type"] == "message.room"][0]["data"]
        assert room["room"] == "lobby" and room["from"] == "alice" and room["body"] == "hi all"
        assert by("bob")[:2] == ["session.opened", "user.online"]
        assert by("bob").count("message.direct") == 5
        assert by("bob")[-2:] == ["session.closed", "user.offline"]
        direct = [e for e in ev if e["type"] == "message.direct"]
        assert [d["data"]["body"]["n"] for d in direct] == list(range(5))
        assert direct[0]["data"]["from"] == "alice" and direct[0]["data"]["to"] == "bob"
        closed = [e for e in ev if e["type"] == "session.closed"][0]
        assert closed["data"]["reason"] == "client_close"
        _, batch, headers, _ = receiver.batches[0]
        assert isinstance(batch["time_ms"], int) and headers["Content-Type"] == "application/json"
        assert len({e["id"] for e in ev}) == len(ev)
        s = metrics(srv)
        assert metric(s, "wsproxy_events_total", outcome="delivered") >= len(ev)
    finally:
        srv.stop()
        assert_clean_log(srv)


def test_events_offline_delay_cancelled_by_a_reload(tmp_path, receiver):
    srv = events_server(tmp_path, receiver.url, offline_delay="1s").start()
    try:
        async def body():
            a = await chat_client(srv, "alice")
            await a.close()
            a = await chat_client(srv, "alice")  # a page reload
            await asyncio.sleep(1.5)
            types = [e["type"] for e in receiver.delivered()]
            assert types.count("user.online") == 1 and "user.offline" not in types
            await a.close()
        asyncio.run(body())
        wait_for(lambda: "user.offline" in [e["type"] for e in receiver.delivered()],
                 what="user.offline")
    finally:
        srv.stop()
        assert_clean_log(srv)


def test_events_unacked_direct_message(tmp_path, receiver):
    srv = events_server(tmp_path, receiver.url, unacked_delay="1s").start()
    try:
        async def body():
            alice = await chat_client(srv, "alice")
            acked = push(srv, to="alice", body="read me").json()["id"]
            while True:
                f = json.loads(await asyncio.wait_for(alice.recv(), 5))
                if f["type"] == "msg":
                    await alice.send(json.dumps({"type": "ack", "id": f["id"]}))
                    break
            unread = push(srv, to="zed", body="nobody home").json()["id"]
            await asyncio.sleep(0.5)
            assert "message.unacked" not in [e["type"] for e in receiver.delivered()]
            ev = wait_for(lambda: [e for e in receiver.delivered() if e["type"] == "message.unacked"],
                          what="message.unacked")
            assert len(ev) == 1 and ev[0]["user"] == "zed"
            assert ev[0]["data"]["id"] == str(unread) and ev[0]["data"]["from"] == "system"
            await asyncio.sleep(0.8)  # alice's acked message is never reported
            assert [e["data"]["id"] for e in receiver.delivered()
                    if e["type"] == "message.unacked"] == [str(unread)]
            assert acked != unread
            await alice.close()
        asyncio.run(body())
    finally:
        srv.stop()
        assert_clean_log(srv)


def test_events_clean_shutdown_tells_offline_at_once(tmp_path, receiver):
    srv = events_server(tmp_path, receiver.url, offline_delay="1h").start()
    try:
        async def body():
            await chat_client(srv, "alice")  # still connected when the server stops
            wait_for(lambda: "user.online" in [e["type"] for e in receiver.delivered()],
                     what="user.online")
            assert srv.stop() == 0
        asyncio.run(body())
        srv.start()
        wait_for(lambda: [e["type"] for e in receiver.delivered() if e["user"] == "alice"][-2:]
                 == ["session.closed", "user.offline"], what="offline at shutdown")
        closed = [e for e in receiver.delivered() if e["type"] == "session.closed"][0]
        assert closed["data"]["reason"] == "server_shutdown"
    finally:
        srv.stop()
        assert_clean_log(srv)


def test_events_after_a_crash_sessions_left_open_are_closed(tmp_path, receiver):
    srv = events_server(tmp_path, receiver.url).start()
    try:
        async def body():
            a1 = await chat_client(srv, "alice")
            a2 = await chat_client(srv, "alice")
            await chat_client(srv, "bob")
            wait_for(lambda: len([e for e in receiver.delivered() if e["type"] == "user.online"]) == 2,
                     what="both online")
            srv.kill9()
            srv.start()
            return a1, a2
        asyncio.run(body())
        want = lambda u: [e["type"] for e in receiver.delivered() if e["user"] == u]
        wait_for(lambda: want("alice")[-3:] == ["session.closed"] * 2 + ["user.offline"]
                 and want("bob")[-2:] == ["session.closed", "user.offline"], what="orphan events")
        reasons = {e["data"]["reason"] for e in receiver.delivered() if e["type"] == "session.closed"}
        assert reasons == {"server_restart"}
        check_per_user_order(receiver.delivered())
        assert "ended 3 sessions left open by a previous run" in srv.log()
    finally:
        srv.stop()
        assert_clean_log(srv)


def test_events_retry_with_backoff_then_delivered(tmp_path, receiver):
    receiver.mode = "fail"
    srv = events_server(tmp_path, receiver.url).start()
    try:
        for i in range(3):
            assert push(srv, to="dave", body={"i": i}).status == 202
        wait_for(lambda: len(receiver.batches) >= 4, what="4 failed attempts")
        times = [t for t, _, _, _ in receiver.batches[:4]]
        gaps = [b - a for a, b in zip(times, times[1:])]
        # 100 ms, 200 ms, 400 ms (capped): each wait at least the backoff, and growing
        assert gaps[0] >= 0.09 and gaps[1] >= 0.18 and gaps[2] >= 0.36, gaps
        # the first attempt may hold only the first push; dave's later events wait behind it
        ids = lambda b: [e["id"] for e in b["events"]]
        first_ids = ids(receiver.batches[3][1])
        assert len(first_ids) == 3
        assert ids(receiver.batches[0][1]) == first_ids[:len(ids(receiver.batches[0][1]))]
        assert receiver.batches[3][1]["events"][0]["attempt"] == 4
        receiver.mode = "ok"
        wait_for(lambda: len(receiver.delivered()) == 3, what="delivery after the backend recovered")
        assert [e["id"] for e in receiver.delivered()] == first_ids  # the same ids, once delivered
        s = metrics(srv)
        assert metric(s, "wsproxy_events_total", outcome="retried") >= 9
        assert "delivery of 3 events failed (HTTP 500" in srv.log()
    finally:
        srv.stop()
        assert_clean_log(srv)


def test_events_timeout_is_a_retry(tmp_path, receiver):
    receiver.mode = "stall"
    srv = events_server(tmp_path, receiver.url, timeout="500ms").start()
    try:
        assert push(srv, to="tim", body=1).status == 202
        wait_for(lambda: receiver.batches, what="the stalled attempt")
        t0 = receiver.batches[0][0]
        receiver.mode = "ok"
        wait_for(lambda: receiver.delivered(), what="the retry after the timeout")
        t1 = [t for t, _, _, m in receiver.batches if m == "ok"][0]
        assert t1 - t0 >= 0.5
        assert "delivery of 1 event failed (timeout" in srv.log()
        assert receiver.delivered()[0]["id"] == receiver.batches[0][1]["events"][0]["id"]
    finally:
        srv.stop()
        assert_clean_log(srv)


def test_events_backend_down_loses_nothing(tmp_path):
    rec = Receiver()
    port = rec.port
    rec.stop()  # nobody listens: connections are refused
    srv = events_server(tmp_path, f"http://127.0.0.1:{port}/hooks").start()
    try:
        for i in range(20):
            assert push(srv, to=f"u{i % 4}", body={"i": i}).status == 202
        # the gauges are refreshed every 2 s
        wait_for(lambda: metric(metrics(srv), "wsproxy_events_outbox", state="queued") == 20
                 and metric(metrics(srv), "wsproxy_events_oldest_age_seconds") > 0.5,
                 what="outbox gauges")
        assert "connect/IO" in srv.log() or "connection closed" in srv.log()
        # the chat keeps working meanwhile
        assert push(srv, to="u0", body="still fine").status == 202
        # the backend comes back on the same port
        back = Receiver(port=port)
        try:
            wait_for(lambda: len(back.delivered()) == 21, timeout=15, what="all 21 events")
            ev = back.delivered()
            assert sorted(e["data"]["body"].get("i", -1) if isinstance(e["data"]["body"], dict)
                          else -1 for e in ev) == [-1] + list(range(20))
            check_per_user_order(ev)
        finally:
            back.stop()
    finally:
        srv.stop()
        assert_clean_log(srv)


def test_events_outbox_bound(tmp_path):
    rec = Receiver()
    port = rec.port
    rec.stop()
    srv = events_server(tmp_path, f"http://127.0.0.1:{port}/hooks", max_outbox="5").start()
    try:
        for i in range(8):  # the chat goes on; only the events beyond the bound are dropped
            assert push(srv, to="full", body=i).status == 202
        s = metrics(srv)
        assert metric(s, "wsproxy_events_total", outcome="queued") == 5
        assert metric(s, "wsproxy_events_total", outcome="dropped") == 3
        assert "outbox full: 5 events queued (max_outbox 5)" in srv.log()
        assert srv.log().count("outbox full") == 1  # logged at most every 10 s
    finally:
        srv.stop()
        assert_clean_log(srv)


def test_events_dead_letters_list_and_replay(tmp_path, receiver):
    receiver.mode = "fail"
    srv = events_server(tmp_path, receiver.url, max_age="1s").start()
    try:
        assert push(srv, to="erin", body={"x": 1}).status == 202
        wait_for(lambda: api(srv, "GET", "/api/v1/events").json()["dead"] == 1, what="a dead letter")
        dead = api(srv, "GET", "/api/v1/events/dead").json()
        assert len(dead["events"]) == 1 and dead["next_after"] is None
        d = dead["events"][0]
        assert d["type"] == "message.push" and d["user"] == "erin" and "HTTP 500" in d["last_error"]
        assert metric(metrics(srv), "wsproxy_events_total", outcome="failed") == 1
        receiver.mode = "ok"
        out = wsctl(srv, "events")
        assert out.returncode == 0 and "1 dead" in out.stdout and "message.push" in out.stdout
        assert "HTTP 500" in out.stdout
        assert wsctl(srv, "events", "replay", str(d["id"] + 1000)).returncode == 1
        assert api(srv, "POST", f"/api/v1/events/replay?id={d['id'] + 1000}").status == 404
        out = wsctl(srv, "--json", "events", "replay", "--all")
        assert out.returncode == 0 and json.loads(out.stdout) == {"replayed": 1}, out
        wait_for(lambda: receiver.delivered(), what="the replayed event")
        assert receiver.delivered()[0]["id"] == d["id"]
        assert api(srv, "GET", "/api/v1/events").json()["dead"] == 0
    finally:
        srv.stop()
        assert_clean_log(srv)


def wsctl(srv, *args):
    return subprocess.run([WSCTL, "--config", srv.config_path, *args], capture_output=True,
                          text=True, timeout=10)


def test_events_kill9_in_flight_redelivered_after_restart(tmp_path, receiver):
    receiver.mode = "stall"
    srv = events_server(tmp_path, receiver.url, timeout="5s").start()
    ids = []
    for i in range(10):
        r = push(srv, to=f"k{i % 3}", body={"i": i})
        assert r.status == 202
    wait_for(lambda: receiver.batches, what="a batch in flight")
    srv.kill9()
    committed = [row[0] for row in srv.db_rows("SELECT id FROM outbox ORDER BY id")]
    assert len(committed) == 10
    receiver.mode = "ok"
    receiver.release.set()
    srv.start()
    try:
        # the batch that was in flight is sent again at once (its lease was in memory), then the rest
        wait_for(lambda: {e["id"] for e in receiver.delivered()} >= set(committed), timeout=20,
                 what="every committed event after the restart")
        stalled = {e["id"] for _, b, _, m in receiver.batches if m == "stall" for e in b["events"]}
        assert stalled and stalled <= set(committed)  # the same ids again: at least once
        check_per_user_order(receiver.delivered())
    finally:
        srv.stop()
        assert_clean_log(srv)


# ---- php-fpm ----

PHP_FPM = shutil.which("php-fpm8.2") or "/usr/sbin/php-fpm8.2"

PHP_SCRIPT = r"""<?php
$secret = getenv('EV_SECRET') ?: '%s';
$body = file_get_contents('php://input');
$ts = $_SERVER['HTTP_X_WSPROXY_TIMESTAMP'] ?? '';
$sig = $_SERVER['HTTP_X_WSPROXY_SIGNATURE'] ?? '';
if (!hash_equals(hash_hmac('sha256', $ts . '.' . $body, $secret), $sig)) {
    http_response_code(401);
    exit;
}
if (file_exists(__DIR__ . '/fail')) { http_response_code(503); exit; }
$batch = json_decode($body, true);
file_put_contents(__DIR__ . '/batches.log', strlen($body) . "\n", FILE_APPEND | LOCK_EX);
foreach ($batch['events'] as $e) {
    file_put_contents(__DIR__ . '/events.log', json_encode($e) . "\n", FILE_APPEND | LOCK_EX);
}
http_response_code(204);
""" % EV_SECRET


@pytest.fixture
def php_fpm(tmp_path):
    yield from start_php_fpm(tmp_path, None)


@pytest.fixture
def php_fpm_tcp(tmp_path):
    from wsp import free_port
    port = free_port()
    for d in start_php_fpm(tmp_path, port):
        yield d, port


def start_php_fpm(tmp_path, port):
    if not os.path.exists(PHP_FPM):
        pytest.skip("php8.2-fpm is not installed (scripts/deps.sh test installs it)")
    d = tmp_path / "fpm"
    d.mkdir()
    os.chmod(d, 0o755)
    sock = d / "fpm.sock"
    (d / "events.php").write_text(PHP_SCRIPT)
    conf = d / "php-fpm.conf"
    conf.write_text(f"""[global]
pid = {d}/fpm.pid
error_log = {d}/fpm.log
daemonize = no
[events]
listen = {f"127.0.0.1:{port}" if port else sock}
pm = static
pm.max_children = 2
clear_env = yes
catch_workers_output = yes
""")
    proc = subprocess.Popen([PHP_FPM, "-n", "-y", str(conf), "-R", "-F"],
                            stdout=open(d / "stdout.log", "wb"), stderr=subprocess.STDOUT)
    if port:
        import socket as so
        wait_for(lambda: so.socket().connect_ex(("127.0.0.1", port)) == 0, what="php-fpm port")
    else:
        wait_for(lambda: sock.exists(), what="php-fpm socket")
    yield d
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


def php_events(d):
    p = d / "events.log"
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines()]


def test_events_fastcgi_to_php_fpm(tmp_path, php_fpm):
    d = php_fpm
    srv = events_server(tmp_path, f"fastcgi:unix:{d}/fpm.sock:{d}/events.php", pool="2").start()
    try:
        for i in range(30):
            assert push(srv, to=f"p{i % 5}", body={"i": i}).status == 202
        wait_for(lambda: len(php_events(d)) == 30, what="30 events through php-fpm")
        ev = php_events(d)
        check_per_user_order(ev)
        assert sorted(e["data"]["body"]["i"] for e in ev) == list(range(30))
        # 503 from the script is a retry; the kept connections are reused afterwards
        (d / "fail").write_text("")
        assert push(srv, to="p0", body={"i": 30}).status == 202
        wait_for(lambda: "Status 503" in srv.log(), what="a 503 retry")
        (d / "fail").unlink()
        wait_for(lambda: len(php_events(d)) == 31, what="the retried event")
        # a batch bigger than one FastCGI record (STDIN split at 65535 bytes)
        # (the script fails until both are queued, so the retry carries them in one batch)
        big = "x" * 50000
        (d / "fail").write_text("")
        assert push(srv, to="p1", body={"big": big}).status == 202
        assert push(srv, to="p1", body={"big": big + "y"}).status == 202
        time.sleep(0.3)
        (d / "fail").unlink()
        wait_for(lambda: len(php_events(d)) == 33, what="a 100 KB batch through php-fpm")
        assert [e["data"]["body"]["big"] for e in php_events(d)[31:]] == [big, big + "y"]
        assert max(int(n) for n in (d / "batches.log").read_text().split()) > 100000
        assert metric(metrics(srv), "wsproxy_events_total", outcome="delivered") == 33
    finally:
        srv.stop()
        assert_clean_log(srv)


def test_events_fastcgi_over_tcp(tmp_path, php_fpm_tcp):
    d, port = php_fpm_tcp
    srv = events_server(tmp_path, f"fastcgi://127.0.0.1:{port}{d}/events.php").start()
    try:
        for i in range(5):
            assert push(srv, to="t", body={"i": i}).status == 202
        wait_for(lambda: len(php_events(d)) == 5, what="5 events over FastCGI/TCP")
        assert [e["data"]["body"]["i"] for e in php_events(d)] == list(range(5))
    finally:
        srv.stop()
        assert_clean_log(srv)


def test_events_config_errors(tmp_path):
    srv = Server(str(tmp_path), events={"target": "ftp://x/y", "batch_count": "0",
                                        "types": "session.opened,bogus"})
    r = subprocess.run([BIN, "--config", srv.config_path, "--check"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode != 0
    err = r.stderr + r.stdout
    assert "[events] target: 'ftp://x/y'" in err
    assert "[events] secret: required" in err
    assert "[events] batch_count: must be 1 to 10000" in err
    assert "[events] types: 'bogus' is not an event type" in err
