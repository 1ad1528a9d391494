"""
test_nginx.py -- wsproxy behind the real nginx, configured from deploy/nginx/wsproxy.conf rendered for
loopback ports and temp paths: forwarded client address, upgrade headers, idle timeout vs pings, the
private push API, and the auth_request variant for [auth] mode=query.

The client binds 127.0.0.2 and nginx reaches wsproxy from 127.0.0.1, so the two addresses a session
row could show are distinct.
"""
import asyncio
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request

import pytest
import websockets

from wsp import API_KEY, ROOT, Server, free_port, make_token

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SITE_CONF = os.path.join(ROOT, "deploy", "nginx", "wsproxy.conf")
CLIENT_ADDR = "127.0.0.2"

pytestmark = pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx is not installed")

# The blocks of the deploy file the pitfall test removes to show what they prevent.
UPGRADE_HEADERS = ("        proxy_set_header Upgrade $http_upgrade;\n"
                   "        proxy_set_header Connection $connection_upgrade;\n")
UPGRADE_LINES = "        proxy_http_version 1.1;\n" + UPGRADE_HEADERS


def sub(text, old, new, count=1):
    """Replace old by new, insisting it occurs exactly count times: a drifted deploy file fails here."""
    n = text.count(old)
    assert n == count, f"deploy/nginx/wsproxy.conf: expected {count} x {old!r}, found {n}"
    return text.replace(old, new)


def cut_block(text, begin, end):
    b = text.index(begin)
    e = text.index(end, b) + len(end)
    return text[:b], text[b:e], text[e:]


def uncomment(block):
    # Commented directives are "#location", "#}", "#" and "#    ..."; "# text" stays a comment.
    return re.sub(r"(?m)^(    )#(?=location|}| {4}|$)", r"\1", block)


def render_site(d, *, ws_port, api_port, https_port, http_port, cert, key, read_timeout,
                variant="token", auth_port=None, drop=None):
    text = open(SITE_CONF).read()
    if variant == "query":
        head, _, tail = cut_block(text, "    # BEGIN token-auth /ws", "# END token-auth /ws\n")
        text = head + tail
        head, block, tail = cut_block(text, "    # BEGIN auth_request variant", "# END auth_request variant\n")
        text = head + uncomment(block) + tail
        text = sub(text, "proxy_pass http://127.0.0.1:9000/auth/ws;",
                   f"proxy_pass http://127.0.0.1:{auth_port}/auth/ws;")
    if drop:
        text = sub(text, drop, "")
    text = sub(text, "server 127.0.0.1:8080;", f"server 127.0.0.1:{ws_port};")
    text = sub(text, "server 127.0.0.1:8081;", f"server 127.0.0.1:{api_port};")
    text = sub(text, "    listen 80;\n", f"    listen 127.0.0.1:{http_port};\n")
    text = sub(text, "    listen [::]:80;\n", "")
    text = sub(text, "    listen 443 ssl http2;\n", f"    listen 127.0.0.1:{https_port} ssl http2;\n")
    text = sub(text, "    listen [::]:443 ssl http2;\n", "")
    text = sub(text, "/etc/letsencrypt/live/chat.example.com/fullchain.pem", cert)
    text = sub(text, "/etc/letsencrypt/live/chat.example.com/privkey.pem", key)
    text = sub(text, "/var/log/nginx/wsproxy.access.log", os.path.join(d, "access.log"))
    # info: nginx logs a timed-out client side of an upgraded connection at that level
    # the shipped level (info) is what shows "upstream timed out" (test_nginx_idle_connection_cut...)
    text = sub(text, "/var/log/nginx/wsproxy.error.log info;", os.path.join(d, "error.log") + " info;")
    text = sub(text, "root /usr/share/wsproxy/web;", f"root {os.path.join(ROOT, 'web')};")
    # The token /ws block and the variant each carry one copy (only the variant is left in query mode).
    copies = 1 if variant == "query" else 2
    text = sub(text, "proxy_read_timeout 75s;", f"proxy_read_timeout {read_timeout};", count=copies)
    text = sub(text, "proxy_send_timeout 75s;", f"proxy_send_timeout {read_timeout};", count=copies)
    return text


class Nginx:
    """A foreground nginx master running as root with every path inside its own directory."""

    def __init__(self, d, site_text, https_port, http_port):
        self.dir = d
        self.https_port = https_port
        self.http_port = http_port
        for sub_dir in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(d, sub_dir), exist_ok=True)
        with open(os.path.join(d, "wsproxy.conf"), "w") as f:
            f.write(site_text)
        mime = "include /etc/nginx/mime.types;" if os.path.exists("/etc/nginx/mime.types") else ""
        self.conf = os.path.join(d, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(f"""user root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/main-error.log;
events {{ worker_connections 512; }}
http {{
    {mime}
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    access_log off;
    include {d}/wsproxy.conf;
}}
""")
        self.proc = None

    def start(self):
        t = subprocess.run([NGINX, "-t", "-p", self.dir, "-c", self.conf], capture_output=True,
                           text=True, timeout=15)
        assert t.returncode == 0, "nginx -t rejected the rendered config:\n" + t.stderr
        self.out = open(os.path.join(self.dir, "stderr.log"), "ab")
        self.proc = subprocess.Popen([NGINX, "-p", self.dir, "-c", self.conf, "-g", "daemon off;"],
                                     stdout=self.out, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            assert self.proc.poll() is None, "nginx exited:\n" + self.error_log()
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("nginx did not start:\n" + self.error_log())

    def error_log(self):
        text = ""
        for name in ("main-error.log", "error.log", "stderr.log"):
            p = os.path.join(self.dir, name)
            if os.path.exists(p):
                text += open(p, errors="replace").read()
        return text

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.out.close()


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("nginx-cert")
    crt, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return crt, key


@pytest.fixture
def front(tmp_path, cert):
    """front(read_timeout=..., variant=..., auth_port=..., drop=..., **wsproxy sections)."""
    started = []

    def factory(read_timeout="60s", variant="token", auth_port=None, drop=None, **sections):
        n = len(started)
        os.makedirs(tmp_path / f"wsp{n}")
        srv = Server(str(tmp_path / f"wsp{n}"), **sections)
        started.append(srv)
        srv.start()
        d = str(tmp_path / f"nginx{n}")
        os.makedirs(d)
        https_port, http_port = free_port(), free_port()
        site = render_site(d, ws_port=srv.port, api_port=srv.api_port, https_port=https_port,
                           http_port=http_port, cert=cert[0], key=cert[1], read_timeout=read_timeout,
                           variant=variant, auth_port=auth_port, drop=drop)
        ngx = Nginx(d, site, https_port, http_port)
        started.append(ngx)
        ngx.start()
        return srv, ngx

    yield factory
    for p in reversed(started):
        p.stop()


def client_ssl(cert):
    return ssl.create_default_context(cafile=cert[0])


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ws_connect(ngx, cert, query, headers=None, source=CLIENT_ADDR):
    return websockets.connect(f"wss://127.0.0.1:{ngx.https_port}/ws?{query}", ssl=client_ssl(cert),
                              local_addr=(source, 0), extra_headers=headers or {}, ping_interval=None,
                              open_timeout=5, close_timeout=2)


async def recv_type(ws, typ, timeout=5):
    """Skip frames until one of this type (replays, presence events) and return it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        msg = json.loads(await asyncio.wait_for(ws.recv(), max(left, 0.01)))
        if msg.get("type") == typ:
            return msg


def https_request(ngx, cert, method, path, body=None, headers=None, source=CLIENT_ADDR):
    conn = http.client.HTTPSConnection("127.0.0.1", ngx.https_port, context=client_ssl(cert), timeout=5,
                                       source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def wait_until(pred, timeout=5, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# ---- forwarded client address ----

@pytest.mark.parametrize("trusted, expect", [("127.0.0.1/32", CLIENT_ADDR), ("", "127.0.0.1")],
                         ids=["nginx-trusted", "nginx-untrusted"])
def test_nginx_chat_records_forwarded_client_address(front, cert, trusted, expect):
    srv, ngx = front(auth={"trusted_proxies": trusted})
    forged = {"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"}

    async def chat():
        async with ws_connect(ngx, cert, "token=" + make_token("alice"), forged) as alice, \
                ws_connect(ngx, cert, "token=" + make_token("bob")) as bob:
            assert (await recv_type(alice, "welcome"))["user"] == "alice"
            await recv_type(bob, "welcome")
            await alice.send(json.dumps({"type": "send", "to": "bob", "body": "via nginx", "cid": "c1"}))
            sent = await recv_type(alice, "sent")
            msg = await recv_type(bob, "msg")
            assert (msg["from"], msg["body"], msg["id"]) == ("alice", "via nginx", sent["id"])

    run(chat())
    rows = srv.db_rows("SELECT user, remote_addr FROM sessions ORDER BY id")
    # Trusted: the address nginx appended, never the client's forged claim. Untrusted: the TCP peer.
    assert rows == [("alice", expect), ("bob", expect)]
    assert "203.0.113.9" not in srv.log()
    wait_until(lambda: f"{expect}: closed" in srv.log(), what="close logged with the client address")


def test_nginx_passes_permessage_deflate(front, cert):
    # nginx forwards Sec-WebSocket-Extensions both ways and then relays frames (RSV1 included) as is
    srv, ngx = front(server={"compression": "on"})
    text = "compressed through nginx " * 100

    async def chat():
        async with ws_connect(ngx, cert, "token=" + make_token("alice")) as alice, \
                ws_connect(ngx, cert, "token=" + make_token("bob")) as bob:
            for ws in (alice, bob):
                assert ws.response_headers["Sec-WebSocket-Extensions"].startswith(
                    "permessage-deflate; server_no_context_takeover")
                await recv_type(ws, "replayed")
            await alice.send(json.dumps({"type": "send", "to": "bob", "body": text, "cid": "z"}))
            sent = await recv_type(alice, "sent")
            msg = await recv_type(bob, "msg")
            assert (msg["body"], msg["id"]) == (text, sent["id"])

    run(chat())
    assert "permessage-deflate declined" not in srv.log()
    req = urllib.request.Request(f"{srv.api_url}/metrics",
                                 headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        m = r.read().decode()
    wire = re.search(r'wsproxy_deflate_bytes_out_total\{form="wire"\} (\d+)', m)
    assert wire and 0 < int(wire.group(1)) < len(text)  # bob's copy went out compressed


# ---- idle connections: nginx's proxy_read_timeout vs the server's pings ----

def test_nginx_idle_connection_kept_open_by_server_pings(front, cert):
    # While a ping is outstanding the server's next tick is pong_timeout away even if the pong came
    # back at once, so the quietest gap on a healthy idle link is max(ping_interval, pong_timeout):
    # both must stay under nginx's timeout, hence 1s here (and proxy_read_timeout > their sum).
    srv, ngx = front(read_timeout="2s", heartbeat={"ping_interval": "500ms", "pong_timeout": "1s"})

    async def idle():
        async with ws_connect(ngx, cert, "token=" + make_token("alice")) as ws:
            await recv_type(ws, "replayed")
            # Nothing from the client for more than twice nginx's timeout; the library still answers
            # the server's pings in the background, which is what an idle browser tab does too.
            await asyncio.sleep(5)
            await ws.send(json.dumps({"type": "presence", "users": ["alice"], "rid": "r1"}))
            reply = await recv_type(ws, "presence")
            assert (reply["rid"], reply["state"]) == ("r1", "online")

    run(idle())
    assert "upstream timed out" not in ngx.error_log()


def test_nginx_idle_connection_cut_without_pings(front, cert):
    srv, ngx = front(read_timeout="2s", heartbeat={"ping_interval": "0"})

    async def idle():
        async with ws_connect(ngx, cert, "token=" + make_token("alice")) as ws:
            await recv_type(ws, "replayed")
            t0 = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 8)
            return time.monotonic() - t0

    elapsed = run(idle())
    assert 1.5 <= elapsed <= 4.5, elapsed
    # nginx's own note (at level info) that it was its timeout, not the server or the client
    assert re.search(r"upstream timed out .* while proxying upgraded connection", ngx.error_log())
    wait_until(lambda: srv.db_rows("SELECT count(*) FROM sessions WHERE ended_at IS NULL")[0][0] == 0,
               what="the session to end on the server")


# ---- the upgrade headers ----

def test_nginx_plain_get_on_ws_path_is_426(front, cert):
    srv, ngx = front()
    status, headers, _ = https_request(ngx, cert, "GET", "/ws?token=" + make_token("alice"))
    assert status == 426
    assert headers.get("Sec-WebSocket-Version") == "13"


@pytest.mark.parametrize("drop, expect", [(UPGRADE_LINES, 400), (UPGRADE_HEADERS, 426)],
                         ids=["no-upgrade-lines", "http11-but-no-upgrade-headers"])
def test_nginx_without_upgrade_headers_breaks_the_handshake(front, cert, drop, expect):
    """The pitfall the deploy file avoids, in its two common forms."""
    srv, ngx = front(drop=drop)

    async def attempt():
        with pytest.raises(websockets.InvalidStatusCode) as e:
            async with ws_connect(ngx, cert, "token=" + make_token("alice")):
                pass
        return e.value.status_code

    # Only proxy_pass: nginx talks HTTP/1.0 upstream, which cannot upgrade (400). HTTP/1.1 without
    # the two headers: Upgrade/Connection are hop-by-hop, nginx drops them, wsproxy wants them (426).
    assert run(attempt()) == expect
    assert srv.db_rows("SELECT count(*) FROM sessions")[0][0] == 0


# ---- the push API through nginx ----

def test_nginx_api_push_needs_key_and_private_network(front, cert):
    srv, ngx = front()
    body = json.dumps({"to": "bob", "body": "from the api"})
    auth = {"Authorization": "Bearer " + API_KEY, "Content-Type": "application/json"}

    async def push():
        async with ws_connect(ngx, cert, "token=" + make_token("bob")) as bob:
            await recv_type(bob, "replayed")
            loop = asyncio.get_running_loop()
            # From the host itself (allowed by the location), with and without the key.
            st, _, text = await loop.run_in_executor(
                None, lambda: https_request(ngx, cert, "POST", "/api/v1/push", body, auth, "127.0.0.1"))
            assert st == 202, text
            msg = await recv_type(bob, "msg")
            assert msg["body"] == "from the api"
            st, _, _ = await loop.run_in_executor(None, lambda: https_request(
                ngx, cert, "POST", "/api/v1/push", body, {"Content-Type": "application/json"}, "127.0.0.1"))
            assert st == 401

    run(push())
    # From outside the allowed networks nginx answers itself, key or not.
    st, _, _ = https_request(ngx, cert, "POST", "/api/v1/push", body, auth, CLIENT_ADDR)
    assert st == 403


# ---- static app and the :80 redirect ----

def test_nginx_serves_app_and_redirects_http(front, cert):
    srv, ngx = front()
    st, headers, page = https_request(ngx, cert, "GET", "/")
    assert st == 200 and b"<html" in page.lower()
    conn = http.client.HTTPConnection("127.0.0.1", ngx.http_port, timeout=5)
    try:
        conn.request("GET", "/ws?token=x", headers={"Host": "chat.example.com"})
        resp = conn.getresponse()
        assert resp.status == 301
        assert resp.getheader("Location") == "https://chat.example.com/ws?token=x"
    finally:
        conn.close()
    # The token in the URL stays out of the access log.
    token = make_token("alice")
    https_request(ngx, cert, "GET", "/ws?token=" + token)
    wait_until(lambda: "/ws" in open(os.path.join(ngx.dir, "access.log")).read(), what="access log line")
    assert token not in open(os.path.join(ngx.dir, "access.log")).read()


# ---- [auth] mode=query behind auth_request ----

class AuthService(http.server.ThreadingHTTPServer):
    """The operator's session check: cookie session=<id> -> X-Auth-User, else 401."""
    daemon_threads = True
    sessions = {"s3cret-alice": "alice", "s3cret-nameless": ""}

    def __init__(self):
        self.seen = []
        super().__init__(("127.0.0.1", 0), AuthHandler)


class AuthHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.seen.append((self.path, self.headers.get("X-Original-URI")))
        sid = None
        for part in (self.headers.get("Cookie") or "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == "session":
                sid = v
        user = self.server.sessions.get(sid)
        self.send_response(200 if user is not None else 401)
        if user:
            self.send_header("X-Auth-User", user)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def auth_service():
    svc = AuthService()
    t = threading.Thread(target=svc.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield svc
    svc.shutdown()
    svc.server_close()
    t.join(timeout=5)


def test_nginx_auth_request_sets_user_in_query_mode(front, cert, auth_service):
    srv, ngx = front(variant="query", auth_port=auth_service.server_address[1],
                     auth={"mode": "query", "trusted_proxies": "127.0.0.1/32"})
    # The client tries to name itself in the URL and with the header the service answers with.
    inject = {"Cookie": "session=s3cret-alice", "X-Auth-User": "mallory"}

    async def scenario():
        async with ws_connect(ngx, cert, "user=mallory", inject) as ws:
            welcome = await recv_type(ws, "welcome")
            assert welcome["user"] == "alice"
        for headers in ({}, {"Cookie": "session=wrong", "X-Auth-User": "mallory"}):
            with pytest.raises(websockets.InvalidStatusCode) as e:
                async with ws_connect(ngx, cert, "user=mallory", headers):
                    pass
            assert e.value.status_code == 401
        # The service said yes but named nobody: wsproxy refuses the empty ?user=.
        with pytest.raises(websockets.InvalidStatusCode) as e:
            async with ws_connect(ngx, cert, "user=mallory", {"Cookie": "session=s3cret-nameless"}):
                pass
        assert e.value.status_code == 401
        # Going around nginx does not work either: ?user= is believed from trusted peers only.
        with pytest.raises(websockets.InvalidStatusCode) as e:
            async with websockets.connect(f"ws://127.0.0.1:{srv.port}/ws?user=mallory",
                                          local_addr=(CLIENT_ADDR, 0), open_timeout=5):
                pass
        assert e.value.status_code == 401

    run(scenario())
    assert srv.db_rows("SELECT user, remote_addr FROM sessions") == [("alice", CLIENT_ADDR)]
    assert auth_service.seen and all(p == "/auth/ws" and uri.startswith("/ws?user=mallory")
                                     for p, uri in auth_service.seen)
    assert "untrusted peer" in srv.log()
