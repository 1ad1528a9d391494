"""
test_api.py -- the HTTP push/admin API against the real server: every endpoint, every error status,
pushes reaching live and offline users, kicks, idempotency, and /metrics parsed as Prometheus text.
Run: cd tests/integration && /usr/bin/python3 -m pytest -q test_api.py
"""
import asyncio
import http.client
import json
import os
import re
import socket
import sqlite3
import time

import pytest
import websockets

from wsp import API_KEY, PG, raw_connect, read_http_response, wait_api


# ---- helpers ----

class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


def api(srv, method, path, body=None, key=API_KEY, headers=None, ctype="application/json"):
    wait_api(srv)
    conn = http.client.HTTPConnection("127.0.0.1", srv.api_port, timeout=10)
    h = {}
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    if body is not None:
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if ctype:
            h["Content-Type"] = ctype
    h.update(headers or {})
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def raw_api(srv, data, read_all=True):
    """Send raw bytes to the API port; returns (status, headers, body bytes)."""
    wait_api(srv)
    s = raw_connect(srv.api_port)
    try:
        s.sendall(data)
        status, headers, rest = read_http_response(s)
        n = int(headers.get("content-length", "0"))
        while len(rest) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, headers, rest
    finally:
        s.close()


def assert_error(r, status, code):
    assert r.status == status, (r.status, r.body)
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    return err


def push(srv, **fields):
    return api(srv, "POST", "/api/v1/push", fields)


async def connect(srv, user):
    """A live chat client, past its welcome and replay. Returns (ws, frames before 'replayed')."""
    ws = await websockets.connect(srv.chat_url(user))
    frames = []
    while True:
        f = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if f["type"] == "replayed":
            return ws, frames
        frames.append(f)


async def recv_type(ws, type_, timeout=5):
    while True:
        f = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if f["type"] == type_:
            return f


async def join(ws, room):
    await ws.send(json.dumps({"type": "join", "room": room}))
    await recv_type(ws, "joined")


def call(fn, *args, **kw):
    """Run a blocking API call from async code without blocking the client's loop."""
    return asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kw))


# ---- Prometheus text parser (format 0.0.4) ----

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text):
    """{(name, frozenset(labels)): value}, checking HELP/TYPE lines and histogram shape."""
    assert text.endswith("\n")
    types, samples = {}, {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4, line
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, f"TYPE twice for {name}"
            types[name] = kind
            continue
        assert not line.startswith("#"), line
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels = m.group(1), m.group(3) or ""
        pairs = LABEL.findall(labels)
        assert ",".join(f'{k}="{v}"' for k, v in pairs) == labels, line
        value = float(m.group(4))
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or (family in types and types[family] == "histogram"), name
        key = (name, frozenset(pairs))
        assert key not in samples, f"duplicate sample {line}"
        samples[key] = value
    for name, kind in types.items():
        if kind == "histogram":
            buckets = sorted(((float("inf") if dict(k[1])["le"] == "+Inf" else float(dict(k[1])["le"])),
                              v) for k, v in samples.items() if k[0] == name + "_bucket")
            assert buckets and buckets[-1][0] == float("inf"), name
            values = [v for _, v in buckets]
            assert values == sorted(values), f"{name} buckets not cumulative"
            assert samples[(name + "_count", frozenset())] == values[-1]
    return samples


def metric(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def metrics(srv):
    r = api(srv, "GET", "/metrics", key=None)
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_prometheus(r.body.decode())


# ---- health, metrics ----

def test_api_healthz_needs_no_key(server):
    r = api(server, "GET", "/healthz", key=None)
    assert r.status == 200 and r.body == b"ok\n"
    assert r.headers["content-type"].startswith("text/plain")
    r = api(server, "HEAD", "/healthz", key=None)
    assert r.status == 200 and r.body == b"" and r.headers["content-length"] == "3"
    assert "API listening on http://127.0.0.1:" in server.log()


@pytest.mark.skipif(PG, reason="SQLite-specific: wrecks the .db, -wal and -shm files under the server")
def test_api_healthz_is_503_when_the_store_does_not_answer(server):
    assert api(server, "GET", "/healthz", key=None).status == 200
    # Wreck the file under the running server: header garbage, empty WAL, stale WAL index.
    with open(server.db, "r+b") as f:
        f.write(b"\xff" * 4096)
    if os.path.exists(server.db + "-wal"):
        os.truncate(server.db + "-wal", 0)
    if os.path.exists(server.db + "-shm"):
        with open(server.db + "-shm", "r+b") as f:
            f.write(b"\0" * 136)
    err = assert_error(api(server, "GET", "/healthz", key=None), 503, "store_unavailable")
    assert "database" in err["message"]


def test_api_metrics_parse_and_counters_move(server):
    before = metrics(server)
    for fam in ("wsproxy_connections_open", "wsproxy_websockets_open", "wsproxy_users_online",
                "wsproxy_connections_total", "wsproxy_bytes_in_total", "wsproxy_bytes_out_total",
                "wsproxy_heartbeat_timeouts_total", "wsproxy_slow_consumers_total"):
        assert (fam, frozenset()) in before, fam
    for reason in ("client_close", "kicked", "heartbeat_timeout", "server_shutdown"):
        assert ("wsproxy_session_ends_total", frozenset({("reason", reason)})) in before
    assert ("wsproxy_store_commit_seconds_count", frozenset()) in before
    assert ("wsproxy_store_batch_size_count", frozenset()) in before
    assert ("wsproxy_handshakes_total", frozenset({("status", "101")})) in before

    async def run():
        ws, _ = await connect(server, "alice")
        r = await call(push, server, to="alice", body="hi")
        assert r.status == 202
        await recv_type(ws, "msg")
        during = await call(metrics, server)
        assert metric(during, "wsproxy_websockets_open") == 1
        assert metric(during, "wsproxy_users_online") == 1
        await ws.close()
        return during

    during = asyncio.run(run())
    assert api(server, "GET", "/api/v1/sessions", key="wrong").status == 401
    after = metrics(server)
    assert metric(after, "wsproxy_handshakes_total", status="101") == \
        metric(before, "wsproxy_handshakes_total", status="101") + 1
    assert metric(after, "wsproxy_websockets_total") == metric(before, "wsproxy_websockets_total") + 1
    assert metric(during, "wsproxy_api_requests_total", status="202") == \
        metric(before, "wsproxy_api_requests_total", status="202") + 1
    assert metric(after, "wsproxy_api_requests_total", status="401") == \
        metric(before, "wsproxy_api_requests_total", status="401") + 1
    # every GET /metrics is itself counted as a 200
    assert metric(after, "wsproxy_api_requests_total", status="200") >= \
        metric(before, "wsproxy_api_requests_total", status="200") + 2
    assert metric(after, "wsproxy_messages_out_total", kind="msg") >= 1
    assert metric(after, "wsproxy_store_commit_seconds_count") > \
        metric(before, "wsproxy_store_commit_seconds_count")
    assert metric(after, "wsproxy_bytes_out_total") > metric(before, "wsproxy_bytes_out_total")
    deadline = time.time() + 5
    while metric(after, "wsproxy_websockets_open") != 0 and time.time() < deadline:
        time.sleep(0.05)
        after = metrics(server)
    assert metric(after, "wsproxy_websockets_open") == 0
    assert metric(after, "wsproxy_session_ends_total", reason="client_close") == 1


# ---- auth ----

@pytest.mark.parametrize("value,hint", [
    (None, False),
    ("Bearer wrong-key", True),
    ("Bearer " + API_KEY[:-1], True),
    ("Bearer " + API_KEY + "x", True),
    ("Basic " + API_KEY, True),
    ("Bearer", True),
    ("Bearer ", True),
    (API_KEY, True),
])
def test_api_bad_key_is_401(server, value, hint):
    headers = {} if value is None else {"Authorization": value}
    r = api(server, "GET", "/api/v1/sessions", key=None, headers=headers)
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert ('error="invalid_token"' in r.headers["www-authenticate"]) == hint


def test_api_auth_scheme_case_and_spaces(server):
    for value in ("bearer " + API_KEY, "BEARER  " + API_KEY):
        r = api(server, "GET", "/api/v1/sessions", key=None, headers={"Authorization": value})
        assert r.status == 200, value


def test_api_key_without_the_bearer_scheme_says_bearer_is_expected(server):
    for value in (API_KEY, "Token " + API_KEY):
        r = api(server, "GET", "/api/v1/sessions", key=None, headers={"Authorization": value})
        err = assert_error(r, 401, "unauthorized")
        assert 'Bearer KEY' in err["message"] and "missing" in err["message"], err
    err = assert_error(api(server, "GET", "/api/v1/sessions", key="wrong"), 401, "unauthorized")
    assert err["message"] == "invalid API key"


def test_api_every_key_works_and_unknown_api_paths_need_auth_first(make_server):
    srv = make_server(api={"keys": "first-key-000000, second-key-11111"}).start()
    assert api(srv, "GET", "/api/v1/sessions", key="first-key-000000").status == 200
    assert api(srv, "GET", "/api/v1/sessions", key="second-key-11111").status == 200
    assert_error(api(srv, "GET", "/api/v1/sessions", key="third"), 401, "unauthorized")
    # auth is checked before routing, so nothing about /api/ leaks without a key
    assert_error(api(srv, "GET", "/api/v1/nope", key="third"), 401, "unauthorized")
    assert_error(api(srv, "GET", "/api/v1/nope", key="first-key-000000"), 404, "not_found")


def test_api_no_keys_configured_refuses_everything(make_server):
    srv = make_server(api={"keys": ""}).start()
    assert_error(api(srv, "GET", "/api/v1/sessions", key=""), 401, "unauthorized")
    assert_error(api(srv, "GET", "/api/v1/sessions", key="anything"), 401, "unauthorized")
    assert "keys is empty" in srv.log()
    assert api(srv, "GET", "/healthz", key=None).status == 200


# ---- push ----

def test_api_push_to_live_user_arrives(server):
    async def run():
        ws, _ = await connect(server, "bob")
        r = await call(push, server, to="bob", body={"text": "hello", "n": [1, 2]})
        assert r.status == 202, r.body
        j = r.json()
        assert j["live"] == 1 and j["id"] > 0 and "duplicate" not in j
        m = await recv_type(ws, "msg")
        assert m["id"] == j["id"] and m["from"] == "system" and m["to"] == "bob"
        assert m["body"] == {"text": "hello", "n": [1, 2]}
        assert "replay" not in m
        # a message stays "stored" until the recipient acks it
        info = (await call(api, server, "GET", f"/api/v1/messages/{j['id']}")).json()
        assert info["state"] == "stored" and info["delivered_at"] is None
        await ws.send(json.dumps({"type": "ack", "id": j["id"]}))
        await asyncio.sleep(0.2)
        await ws.close()
        return j["id"]

    mid = asyncio.run(run())
    rows = server.db_rows("SELECT sender, to_user, body FROM messages WHERE id = ?", (mid,))
    assert rows == [("system", "bob", '{"text":"hello","n":[1,2]}')]


def test_api_push_offline_user_gets_it_on_connect_and_receipt_shows_delivery(server):
    r = push(server, to="carol", body="while you were away", **{"from": "backend"})
    assert r.status == 202 and r.json()["live"] == 0
    mid = r.json()["id"]
    info = api(server, "GET", f"/api/v1/messages/{mid}").json()
    assert info["state"] == "stored" and info["from"] == "backend" and info["to"] == "carol"
    assert info["delivered_by"] is None

    async def run():
        ws, frames = await connect(server, "carol")
        welcome = frames[0]
        replayed = [f for f in frames if f["type"] == "msg"]
        assert [f["id"] for f in replayed] == [mid]
        assert replayed[0]["replay"] is True and replayed[0]["body"] == "while you were away"
        await ws.send(json.dumps({"type": "ack", "id": mid}))
        await asyncio.sleep(0.3)
        await ws.close()
        return int(welcome["session"])

    session = asyncio.run(run())
    info = api(server, "GET", f"/api/v1/messages/{mid}").json()
    assert info["state"] == "delivered"
    assert info["delivered_by"] == session
    assert info["delivered_at"] >= info["ts"]


def test_api_push_is_idempotent_by_cid(server):
    async def run():
        ws, _ = await connect(server, "dave")
        first = (await call(push, server, to="dave", body=1, cid="order-17")).json()
        second = (await call(push, server, to="dave", body=2, cid="order-17")).json()
        assert second["id"] == first["id"] and second["duplicate"] is True
        assert second["live"] == 0 and second["ts"] == first["ts"]
        # the same cid from another sender is another message
        other = (await call(push, server, to="dave", body=3, cid="order-17", **{"from": "billing"})).json()
        assert other["id"] != first["id"] and "duplicate" not in other
        got = [await recv_type(ws, "msg"), await recv_type(ws, "msg")]
        assert [m["body"] for m in got] == [1, 3]
        with pytest.raises(asyncio.TimeoutError):
            await recv_type(ws, "msg", timeout=0.5)
        await ws.close()

    asyncio.run(run())
    assert server.db_rows("SELECT count(*) FROM messages WHERE to_user = 'dave'") == [(2,)]


def test_api_push_to_room_reaches_members_and_history(server):
    async def run():
        a, _ = await connect(server, "alice")
        b, _ = await connect(server, "bob")
        await join(a, "lobby")
        await join(b, "lobby")
        r = await call(push, server, room="lobby", body={"notice": "maintenance at 5"})
        assert r.status == 202 and r.json()["live"] == 2 and r.json()["members"] == 2
        for ws in (a, b):
            m = await recv_type(ws, "msg")
            assert m["room"] == "lobby" and m["from"] == "system"
        await a.close()
        await b.close()
        return r.json()["id"]

    mid = asyncio.run(run())
    h = api(server, "GET", "/api/v1/history?room=lobby").json()
    assert [m["id"] for m in h["items"]] == [mid] and h["more"] is False
    info = api(server, "GET", f"/api/v1/messages/{mid}").json()
    assert info["room"] == "lobby" and info["state"] == "stored" and "to" not in info


def test_api_push_broadcast_reaches_every_live_connection_and_is_not_stored(server):
    async def run():
        a, _ = await connect(server, "alice")
        b, _ = await connect(server, "bob")
        b2, _ = await connect(server, "bob")
        r = await call(push, server, broadcast=True, body={"shutdown_in": 60})
        assert r.status == 202 and r.json() == {"live": 3}
        for ws in (a, b, b2):
            f = await recv_type(ws, "broadcast")
            assert f["body"] == {"shutdown_in": 60} and f["from"] == "system"
        for ws in (a, b, b2):
            await ws.close()

    asyncio.run(run())
    assert server.db_rows("SELECT count(*) FROM messages") == [(0,)]


@pytest.mark.parametrize("body,fragment", [
    ('{"to": "bob", "body": 1', None),
    ('[1, 2]', "object"),
    ('"just a string"', "object"),
    ('{"body": 1}', "exactly one"),
    ('{"to": "bob", "room": "lobby", "body": 1}', "exactly one"),
    ('{"to": "bob", "broadcast": true, "body": 1}', "exactly one"),
    ('{"broadcast": false, "body": 1}', "broadcast"),
    ('{"to": "", "body": 1}', "to"),
    ('{"to": 7, "body": 1}', "to"),
    ('{"to": "' + "x" * 65 + '", "body": 1}', "to"),
    ('{"to": "bad\\u0001name", "body": 1}', "to"),
    ('{"room": "", "body": 1}', "room"),
    ('{"to": "bob"}', "body"),
    ('{"to": "bob", "body": 1, "from": ""}', "from"),
    ('{"to": "bob", "body": 1, "cid": ""}', "cid"),
    ('{"to": "bob", "body": 1, "cid": 5}', "cid"),
    ('{"to": "bob", "body": 1, "cid": "' + "c" * 129 + '"}', "cid"),
    ('{"to": "bob", "body": 1, "too": "x"}', "unknown field"),
    ('{"to": "bob", "to": "eve", "body": 1}', None),
    ('', None),
])
def test_api_push_bad_requests_are_400(server, body, fragment):
    r = api(server, "POST", "/api/v1/push", body.encode())
    err = assert_error(r, 400, "bad_json" if fragment is None or fragment == "object" else "bad_request")
    if fragment:
        assert fragment in err["message"]
    assert r.headers["connection"] == "keep-alive"


def test_api_push_needs_json_content_type_415(server):
    body = json.dumps({"to": "bob", "body": 1})
    assert_error(api(server, "POST", "/api/v1/push", body, ctype=None), 415, "unsupported_media_type")
    assert_error(api(server, "POST", "/api/v1/push", body, ctype="text/plain"), 415,
                 "unsupported_media_type")
    assert_error(api(server, "POST", "/api/v1/push", body, ctype="application/jsonx"), 415,
                 "unsupported_media_type")
    assert api(server, "POST", "/api/v1/push", body, ctype="application/json; charset=utf-8").status == 202
    assert api(server, "POST", "/api/v1/push", body, ctype="Application/JSON").status == 202


def test_api_body_over_max_body_is_413_json_without_reading_it(make_server):
    srv = make_server(api={"max_body": "2KiB"}).start()
    filler = "x" * (2048 - len('{"to":"bob","body":""}'))
    exact = json.dumps({"to": "bob", "body": filler}, separators=(",", ":"))
    assert len(exact) == 2048
    assert api(srv, "POST", "/api/v1/push", exact).status == 202
    r = api(srv, "POST", "/api/v1/push", exact + " ")
    err = assert_error(r, 413, "too_large")
    assert "max_body" in err["message"]
    assert r.headers["connection"] == "close"
    # a huge body is refused from its Content-Length; the answer survives the unread body
    r = api(srv, "POST", "/api/v1/push", b"{" + b" " * (8 << 20) + b"}")
    assert_error(r, 413, "too_large")
    # with Expect: 100-continue the client is told 413 instead of "go on"
    head = (f"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 999999\r\nExpect: 100-continue\r\n\r\n")
    status, headers, body = raw_api(srv, head.encode())
    assert status == 413 and json.loads(body)["error"]["code"] == "too_large"


def test_api_push_body_over_limits_max_body_is_413(make_server):
    srv = make_server(limits={"max_body": "1KiB"}).start()
    assert push(srv, to="bob", body="x" * 1000).status == 202
    err = assert_error(push(srv, to="bob", body="x" * 1100), 413, "too_large")
    assert "[limits] max_body" in err["message"]
    assert_error(push(srv, broadcast=True, body="x" * 1100), 413, "too_large")
    assert srv.db_rows("SELECT count(*) FROM messages") == [(1,)]


def test_api_expect_100_continue_within_limit(server):
    wait_api(server)
    body = json.dumps({"to": "bob", "body": "x"}).encode()
    s = raw_connect(server.api_port)
    try:
        s.sendall((f"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                   "Expect: 100-continue\r\n\r\n").encode())
        status, _, rest = read_http_response(s)
        assert status == 100
        s.sendall(body)
        data = rest
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
        assert data.startswith(b"HTTP/1.1 202 ")
    finally:
        s.close()


def test_api_chunked_body_is_411(server):
    head = (f"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\n{\"a\":\r\n0\r\n\r\n")
    status, headers, body = raw_api(server, head.encode())
    assert status == 411 and headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "length_required"


# ---- sessions, kick ----

def test_api_sessions_list_filters_and_paging(server):
    async def run():
        a1, f1 = await connect(server, "alice")
        a2, f2 = await connect(server, "alice")
        b, f3 = await connect(server, "bob")
        await a1.close()
        await asyncio.sleep(0.3)
        return [int(f[0]["session"]) for f in (f1, f2, f3)], (a2, b)

    async def main():
        ids, keep = await run()
        s1, s2, s3 = ids
        j = (await call(api, server, "GET", "/api/v1/sessions")).json()
        assert [s["id"] for s in j["sessions"]] == [s3, s2, s1] and j["next_before"] is None
        first = j["sessions"][2]
        assert first["user"] == "alice" and first["state"] == "ended"
        assert first["end_reason"] == "client_close" and first["ended_at"] >= first["connected_at"]
        assert j["sessions"][0]["state"] == "active" and j["sessions"][0]["ended_at"] is None
        assert j["sessions"][0]["remote_addr"] == "127.0.0.1"
        assert "websockets" in j["sessions"][0]["user_agent"]
        j = (await call(api, server, "GET", "/api/v1/sessions?user=alice")).json()
        assert [s["id"] for s in j["sessions"]] == [s2, s1]
        j = (await call(api, server, "GET", "/api/v1/sessions?state=active")).json()
        assert [s["id"] for s in j["sessions"]] == [s3, s2]
        j = (await call(api, server, "GET", "/api/v1/sessions?state=ended")).json()
        assert [s["id"] for s in j["sessions"]] == [s1]
        j = (await call(api, server, "GET", "/api/v1/sessions?user=alice&state=active")).json()
        assert [s["id"] for s in j["sessions"]] == [s2]
        j = (await call(api, server, "GET", "/api/v1/sessions?limit=2")).json()
        assert [s["id"] for s in j["sessions"]] == [s3, s2] and j["next_before"] == s2
        j = (await call(api, server, "GET", f"/api/v1/sessions?limit=2&before={s2}")).json()
        assert [s["id"] for s in j["sessions"]] == [s1] and j["next_before"] is None
        one = (await call(api, server, "GET", f"/api/v1/sessions/{s2}")).json()
        assert one["id"] == s2 and one["user"] == "alice" and one["state"] == "active"
        for ws in keep:
            await ws.close()

    asyncio.run(main())


@pytest.mark.parametrize("query", [
    "state=bogus", "state=", "limit=0", "limit=1001", "limit=x", "limit=-1", "before=0",
    "before=abc", "user=", "user=" + "u" * 65, "user=%01",
])
def test_api_sessions_bad_query_is_400(server, query):
    assert_error(api(server, "GET", f"/api/v1/sessions?{query}"), 400, "bad_request")


def test_api_session_unknown_and_bad_ids(server):
    assert_error(api(server, "GET", "/api/v1/sessions/999"), 404, "not_found")
    assert_error(api(server, "DELETE", "/api/v1/sessions/999"), 404, "not_found")
    for bad in ("abc", "0", "-1", "1x", "99999999999999999999"):
        assert_error(api(server, "GET", f"/api/v1/sessions/{bad}"), 400, "bad_request")
    assert_error(api(server, "GET", "/api/v1/messages/zz"), 400, "bad_request")
    assert_error(api(server, "GET", "/api/v1/messages/12345"), 404, "not_found")


def test_api_kick_closes_live_client_with_1008_and_records_kicked(server):
    async def run():
        ws, frames = await connect(server, "mallory")
        sid = int(frames[0]["session"])
        r = await call(api, server, "DELETE", f"/api/v1/sessions/{sid}")
        assert r.status == 204 and r.body == b""
        assert "content-length" not in r.headers
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1008 and ws.close_reason == "kicked"
        # the row was durable before the 204 went out
        assert server.db_rows("SELECT end_reason FROM sessions WHERE id = ?", (sid,)) == [("kicked",)]
        return sid

    sid = asyncio.run(run())
    s = api(server, "GET", f"/api/v1/sessions/{sid}").json()
    assert s["state"] == "ended" and s["end_reason"] == "kicked"
    err = assert_error(api(server, "DELETE", f"/api/v1/sessions/{sid}"), 404, "not_live")
    assert "kicked" in err["message"]
    m = metrics(server)
    assert metric(m, "wsproxy_session_ends_total", reason="kicked") == 1
    assert metric(m, "wsproxy_closes_total", code="1008") == 1
    assert metric(m, "wsproxy_api_requests_total", status="204") == 1


# ---- presence, history, messages ----

def test_api_presence_live_offline_and_unknown(server):
    async def run():
        a1, _ = await connect(server, "alice")
        a2, _ = await connect(server, "alice")
        b, _ = await connect(server, "bob")
        await b.close()
        await asyncio.sleep(0.3)
        j = (await call(api, server, "GET", "/api/v1/presence?users=alice,bob,nobody")).json()
        by = {u["user"]: u for u in j["users"]}
        assert [u["user"] for u in j["users"]] == ["alice", "bob", "nobody"]
        assert by["alice"]["state"] == "online" and by["alice"]["connections"] == 2
        assert by["bob"]["state"] == "offline" and by["bob"]["connections"] == 0
        assert by["bob"]["last_seen"] > 0
        assert by["nobody"] == {"user": "nobody", "state": "offline", "connections": 0,
                                "last_seen": None}
        await a1.close()
        await a2.close()

    asyncio.run(run())
    # URL-encoded names
    j = api(server, "GET", "/api/v1/presence?users=%C3%BCser%20one").json()
    assert j["users"][0]["user"] == "üser one"


@pytest.mark.parametrize("query", [
    "", "users=", "users=a,,b", "users=a,", "users=" + "x" * 65,
    "users=" + ",".join(f"u{i}" for i in range(101)),
])
def test_api_presence_bad_query_is_400(server, query):
    assert_error(api(server, "GET", f"/api/v1/presence?{query}"), 400, "bad_request")


def test_api_presence_hundred_users_ok(server):
    users = ",".join(f"u{i}" for i in range(100))
    assert len(api(server, "GET", f"/api/v1/presence?users={users}").json()["users"]) == 100


def test_api_history_direct_and_room_with_paging(server):
    ids = []
    for i in range(5):
        ids.append(push(server, to="bob", body=i, **{"from": "alice"}).json()["id"])
    ids.append(push(server, to="alice", body="back", **{"from": "bob"}).json()["id"])
    push(server, to="bob", body="other", **{"from": "carol"})
    j = api(server, "GET", "/api/v1/history?with=alice&user=bob").json()
    assert [m["id"] for m in j["items"]] == ids[::-1] and j["more"] is False
    assert j["items"][0] == {"id": ids[-1], "from": "bob", "to": "alice", "body": "back",
                             "ts": j["items"][0]["ts"], "cid": None, "via": "api"}
    j = api(server, "GET", "/api/v1/history?user=alice&with=bob&limit=2").json()
    assert [m["id"] for m in j["items"]] == ids[:-3:-1] and j["more"] is True
    j = api(server, "GET", f"/api/v1/history?user=alice&with=bob&limit=2&before={ids[-2]}").json()
    assert [m["id"] for m in j["items"]] == [ids[3], ids[2]] and j["more"] is True
    j = api(server, "GET", "/api/v1/history?room=empty").json()
    assert j == {"items": [], "more": False}


@pytest.mark.parametrize("query", [
    "", "with=a", "user=b", "room=r&with=a", "room=r&with=a&user=b", "with=a&user=b&limit=0",
    "with=a&user=b&limit=101", "room=r&before=0", "room=r&before=x", "room=",
])
def test_api_history_bad_query_is_400(server, query):
    assert_error(api(server, "GET", f"/api/v1/history?{query}"), 400, "bad_request")


# ---- routing, methods, framing ----

@pytest.mark.parametrize("method,path,allow", [
    ("GET", "/api/v1/push", "POST"),
    ("DELETE", "/api/v1/push", "POST"),
    ("POST", "/api/v1/sessions", "GET, HEAD"),
    ("PUT", "/api/v1/sessions/1", "GET, HEAD, DELETE"),
    ("POST", "/api/v1/messages/1", "GET, HEAD, DELETE"),
    ("DELETE", "/api/v1/presence", "GET, HEAD"),
    ("PATCH", "/api/v1/history", "GET, HEAD"),
    ("POST", "/healthz", "GET, HEAD"),
    ("DELETE", "/metrics", "GET, HEAD"),
])
def test_api_wrong_method_is_405_with_allow(server, method, path, allow):
    r = api(server, method, path, body=b"{}" if method in ("POST", "PUT", "PATCH") else None)
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == allow


@pytest.mark.parametrize("path", ["/", "/api", "/api/v2/push", "/api/v1/sessions/", "/healthz/",
                                  "/api/v1/pushx", "/metrics.txt"])
def test_api_unknown_paths_are_404(server, path):
    assert_error(api(server, "GET", path), 404, "not_found")


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET /healthz HTTP/1.1\nHost: x\n\n",
    b"GET healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n",
    b"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    b"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
])
def test_api_malformed_requests_get_json_400(server, raw):
    status, headers, body = raw_api(server, raw)
    assert status == 400, (status, body)
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert headers["connection"] == "close"


def test_api_oversized_head_is_431_json(server):
    raw = b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    status, headers, body = raw_api(server, raw)
    assert status == 431 and json.loads(body)["error"]["code"] == "header_too_large"


def test_api_keep_alive_and_pipelining(server):
    wait_api(server)
    conn = http.client.HTTPConnection("127.0.0.1", server.api_port, timeout=5)
    for _ in range(3):
        conn.request("GET", "/api/v1/sessions", headers={"Authorization": f"Bearer {API_KEY}"})
        r = conn.getresponse()
        assert r.status == 200 and r.getheader("Connection") == "keep-alive"
        r.read()
    conn.close()
    # two requests in one write get two answers, in order
    s = raw_connect(server.api_port)
    body = json.dumps({"to": "zed", "body": 1}).encode()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" +
              f"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
              f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body +
              b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    statuses = re.findall(rb"HTTP/1\.1 (\d+) ", data)
    assert statuses == [b"200", b"202", b"404"]


def test_api_http10_closes_after_answer(server):
    status, headers, body = raw_api(server, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert status == 200 and headers["connection"] == "close" and body == b"ok\n"


# ---- store failure, shutdown ----

@pytest.mark.skipif(PG, reason="SQLite-specific: a foreign sqlite3 EXCLUSIVE lock on the .db file")
def test_api_store_busy_push_is_503(make_server):
    srv = make_server(store={"busy_timeout": "100ms"}).start()
    assert push(srv, to="bob", body=1).status == 202
    lock = sqlite3.connect(srv.db, timeout=0)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        err = assert_error(push(srv, to="bob", body=2, cid="retry-me"), 503, "store_unavailable")
        assert "try again" in err["message"] or "retry" in err["message"]
    finally:
        lock.rollback()
        lock.close()
    # the retry with the same cid goes through once the lock is gone
    r = push(srv, to="bob", body=2, cid="retry-me")
    assert r.status == 202 and "duplicate" not in r.json()
    assert metric(metrics(srv), "wsproxy_api_requests_total", status="503") == 1


def test_api_stops_accepting_on_shutdown(server):
    # a client that never answers the close frame keeps the server draining for a while
    from wsp import raw_ws
    ws = raw_ws(server.port, "/echo")
    wait_api(server)
    server.signal(15)
    deadline = time.time() + 3
    refused = False
    while time.time() < deadline and not refused:
        try:
            socket.create_connection(("127.0.0.1", server.api_port), timeout=0.5).close()
            time.sleep(0.05)
        except (ConnectionRefusedError, ConnectionResetError):
            # Refused, or reset: a connection that reached the backlog as the listener closed is
            # reset by the kernel. Both mean the API stopped accepting.
            refused = True
    assert refused
    assert server.proc.poll() is None, "still draining the WebSocket client"
    ws.close()
    server.proc.wait(timeout=10)


# ---- strict query parameters ----

@pytest.mark.parametrize("path,name", [
    ("/api/v1/sessions?usr=alice", "usr"),
    ("/api/v1/sessions?user=alice&limit=5&sate=active", "sate"),
    ("/api/v1/history?room=lobby&limt=5", "limt"),
    ("/api/v1/presence?users=a&user=b", "user"),
    ("/api/v1/sessions/1?verbose=1", "verbose"),
    ("/api/v1/messages/1?x", "x"),
    ("/api/v1/sessions?=1", ""),
])
def test_api_get_rejects_unknown_query_parameters(server, path, name):
    for method in ("GET", "HEAD"):
        r = api(server, method, path)
        assert r.status == 400, (method, path, r.status)
    err = assert_error(api(server, "GET", path), 400, "bad_request")
    assert f'unknown query parameter "{name}"' in err["message"], err


def test_api_unknown_query_parameter_name_is_bounded_and_escaped(server):
    err = assert_error(api(server, "GET", "/api/v1/sessions?" + "a" * 300 + "=1"), 400, "bad_request")
    assert '"' + "a" * 64 + '..."' in err["message"] and len(err["message"]) < 200
    r = api(server, "GET", '/api/v1/sessions?a"b\\c=1')
    err = assert_error(r, 400, "bad_request")
    assert 'a"b\\c' in err["message"]
    assert b'a\\"b' in r.body  # JSON-escaped in the body


def test_api_known_query_parameters_still_work(server):
    assert api(server, "GET", "/api/v1/sessions?user=alice&state=any&limit=5&before=10&").status == 200
    assert api(server, "GET", "/api/v1/history?with=a&user=b&limit=1&before=5").status == 200
    assert api(server, "GET", "/api/v1/presence?users=a,b").status == 200
    assert api(server, "GET", "/healthz?probe=1", key=None).status == 200  # probes add cache busters


def test_api_push_to_a_room_without_members_says_so(server):
    r = push(server, room="empty-room", body="anyone?")
    assert r.status == 202, r.body
    j = r.json()
    assert j["members"] == 0 and j["live"] == 0 and j["id"] > 0
    assert "members" not in push(server, to="alice", body="x").json()
