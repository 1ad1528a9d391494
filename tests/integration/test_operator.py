"""
test_operator.py -- what an operator meets: a dropped connection recorded as connection_lost (not a
logout), plain HTTP on the TLS port answered 400 as nginx does, and SIGHUP loading a renewed
certificate for new connections while an open one stays up.
"""
import asyncio
import json
import signal
import socket
import ssl
import subprocess
import time

import websockets

from test_tls import make_cert
from wsp import Server, make_token

WAIT = 10


def session_reason(srv, user, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = srv.db_rows("SELECT end_reason FROM sessions WHERE user = ? AND ended_at IS NOT NULL",
                           (user,))
        if rows:
            return rows[0][0]
        time.sleep(0.05)
    return None


def test_dropped_connection_is_connection_lost(tmp_path):
    srv = Server(str(tmp_path)).start()
    try:
        async def go():
            async with websockets.connect(srv.chat_url("tidy")) as ws:
                while json.loads(await ws.recv())["type"] != "replayed":
                    pass  # a close handshake follows: client_close
            ws = await websockets.connect(srv.chat_url("dropped"))
            while json.loads(await ws.recv())["type"] != "replayed":
                pass
            ws.transport.abort()  # TCP reset, no close frame: a dropped network
        asyncio.run(go())
        assert session_reason(srv, "tidy") == "client_close"
        assert session_reason(srv, "dropped") == "connection_lost"
    finally:
        srv.stop()


def tls_server(tmp_path, cert):
    return Server(str(tmp_path), tls={"cert": cert[0], "key": cert[1]}).start()


def test_plain_http_on_tls_port_gets_400(tmp_path):
    cert = make_cert(str(tmp_path))
    srv = tls_server(tmp_path, cert)
    try:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        assert data.startswith(b"HTTP/1.1 400 "), data
        assert b"TLS" in data
        # and TLS on the same port still works
        ctx = ssl.create_default_context(cafile=cert[0])
        with socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as t:
                t.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert t.recv(64).startswith(b"HTTP/1.1 200")
    finally:
        srv.stop()


def peer_cert_serial(port, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as t:
            return t.getpeercert()["serialNumber"]


def test_sighup_reloads_certificate_live_connection_survives(tmp_path):
    d = tmp_path / "certs"
    d.mkdir()
    first = make_cert(str(d), "first")
    srv = Server(str(tmp_path), tls={"cert": str(d / "live-cert.pem"), "key": str(d / "live-key.pem")})
    (d / "live-cert.pem").write_bytes(open(first[0], "rb").read())
    (d / "live-key.pem").write_bytes(open(first[1], "rb").read())
    srv.start()
    try:
        serial1 = peer_cert_serial(srv.port, first[0])
        ctx = ssl.create_default_context(cafile=first[0])

        async def go():
            ws = await websockets.connect(f"wss://localhost:{srv.port}/ws?token={make_token('live')}",
                                          ssl=ctx)
            while json.loads(await ws.recv())["type"] != "replayed":
                pass
            second = make_cert(str(d), "second")
            (d / "live-cert.pem").write_bytes(open(second[0], "rb").read())
            (d / "live-key.pem").write_bytes(open(second[1], "rb").read())
            srv.signal(signal.SIGHUP)
            deadline = time.time() + WAIT
            while "reload: [tls] cert" not in srv.log():
                assert time.time() < deadline, srv.log()
                await asyncio.sleep(0.05)
            # new connections get the new certificate
            assert peer_cert_serial(srv.port, second[0]) != serial1
            # the open connection was not dropped
            await ws.send(json.dumps({"type": "presence", "users": ["live"], "rid": "r"}))
            m = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            assert m.get("rid") == "r" and m["state"] == "online"
            # a broken file keeps the running certificate
            (d / "live-key.pem").write_text("not a key")
            srv.signal(signal.SIGHUP)
            while "keeping the certificate in use" not in srv.log():
                assert time.time() < deadline + WAIT
                await asyncio.sleep(0.05)
            assert peer_cert_serial(srv.port, second[0]) != serial1
            await ws.close()
        asyncio.run(go())
        assert srv.proc.poll() is None
    finally:
        srv.stop()


def test_refused_origin_is_named_with_the_key(tmp_path):
    srv = Server(str(tmp_path), server={"origins": "https://chat.example.com"}).start()
    try:
        from wsp import raw_connect, read_http_response, upgrade_request
        s = raw_connect(srv.port)
        s.sendall(upgrade_request(f"/ws?token={make_token('a')}",
                                  extra="Origin: https://evil.example\r\n"))
        status, _, body = read_http_response(s)
        s.close()
        assert status == 403
        assert "https://evil.example" in srv.log() and "[server] origins" in srv.log()
    finally:
        srv.stop()


def test_verify_the_deployment_recipe(tmp_path):
    """deploy/README's smoke test: wsctl status, wsctl token, and the curl upgrade that prints 101
    and the welcome frame; the session then shows up as connection_lost."""
    import os
    import re
    import subprocess
    from wsp import BIN
    srv = Server(str(tmp_path)).start()
    try:
        wsctl = os.path.join(os.path.dirname(BIN), "wsctl")
        cfg = ["-c", srv.config_path]
        st = subprocess.run([wsctl, *cfg, "status"], capture_output=True, text=True, timeout=10)
        assert st.returncode == 0 and "up" in st.stdout, st
        tok = subprocess.run([wsctl, *cfg, "token", "smoketest", "--ttl", "5m"],
                             capture_output=True, text=True, timeout=10)
        assert tok.returncode == 0, tok
        readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "deploy",
                                   "README.md")).read()
        headers = re.findall(r"-H '([^']+)'", readme.split("## Verify the deployment")[1])
        assert len(headers) == 5
        args = ["curl", "-s", "-i", "-N", "--http1.1", "--max-time", "3"]
        for h in headers:
            if not h.startswith("Origin"):
                args += ["-H", h]
        args.append(f"http://127.0.0.1:{srv.port}/ws?token={tok.stdout.strip()}")
        out = subprocess.run(args, capture_output=True, timeout=10).stdout
        assert out.startswith(b"HTTP/1.1 101 Switching Protocols"), out[:100]
        assert b'{"type":"welcome"' in out and b'"user":"smoketest"' in out
        deadline = time.time() + 5
        while session_reason(srv, "smoketest") is None:
            assert time.time() < deadline
        assert session_reason(srv, "smoketest") == "connection_lost"
    finally:
        srv.stop()
