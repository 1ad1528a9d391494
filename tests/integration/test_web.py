"""The chat page's side of the main listener: static files (types, HEAD, no traversal) and the demo
token endpoint (on: a usable token; off: 404)."""
import asyncio
import json
import os

import pytest
import websockets

from wsp import ROOT, Server, http_status, raw_connect, read_http_response


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    srv = Server(str(tmp_path_factory.mktemp("web")), demo={"enabled": "true"}).start()
    yield srv
    srv.stop()


def get(port, target, method="GET"):
    s = raw_connect(port)
    try:
        s.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, headers, rest = read_http_response(s)
        n = int(headers.get("content-length", "0"))
        body = rest
        while method != "HEAD" and len(body) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, headers, body
    finally:
        s.close()


@pytest.mark.parametrize("path, ctype, file", [
    ("/", "text/html; charset=utf-8", "index.html"),
    ("/index.html", "text/html; charset=utf-8", "index.html"),
    ("/app.js", "text/javascript; charset=utf-8", "app.js"),
    ("/style.css", "text/css; charset=utf-8", "style.css"),
])
def test_web_static_files_with_types(demo, path, ctype, file):
    status, headers, body = get(demo.port, path)
    assert status == 200
    assert headers["content-type"] == ctype
    assert headers["x-content-type-options"] == "nosniff"
    with open(os.path.join(ROOT, "web", file), "rb") as f:
        assert body == f.read()


def test_web_head_has_length_but_no_body(demo):
    status, headers, body = get(demo.port, "/", "HEAD")
    assert status == 200 and int(headers["content-length"]) > 0 and body == b""


@pytest.mark.parametrize("target", [
    "/../README.md", "/%2e%2e/README.md", "/%2E%2E%2FREADME.md", "/..%2fREADME.md",
    "/web/../../README.md", "/.git/config", "/%2egit/config", "//etc/passwd",
    "/..\\README.md", "/%5c..%5cREADME.md", "/app.js%00.html", "/nonexistent.js", "/./index.html",
])
def test_web_no_traversal(demo, target):
    status, _, body = get(demo.port, target)
    assert status in (400, 404), (target, status)
    assert b"wsproxy" not in body  # never the README or any file outside web/


def test_web_other_methods_refused(demo):
    s = raw_connect(demo.port)
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    status, headers, _ = read_http_response(s)
    s.close()
    assert status == 405 and "GET" in headers["allow"]


def test_web_demo_token_logs_in(demo):
    status, headers, body = get(demo.port, "/demo/token?user=alice")
    assert status == 200 and headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    doc = json.loads(body)
    assert doc["user"] == "alice" and doc["exp"] > 0

    async def login():
        async with websockets.connect(f"{demo.ws_url}/ws?token={doc['token']}") as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 5))

    welcome = asyncio.run(login())
    assert welcome["type"] == "welcome" and welcome["user"] == "alice"


@pytest.mark.parametrize("query", ["", "?user=", "?user=%01bad", "?user=" + "x" * 65, "?other=1"])
def test_web_demo_token_bad_user(demo, query):
    assert get(demo.port, "/demo/token" + query)[0] == 400


def test_web_demo_off_and_static_off(tmp_path):
    srv = Server(str(tmp_path), server={"static_dir": ""}).start()
    try:
        assert get(srv.port, "/demo/token?user=alice")[0] == 404
        assert get(srv.port, "/")[0] == 404
        assert http_status(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
    finally:
        srv.stop()
