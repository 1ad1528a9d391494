"""
test_compression.py -- issue 17: permessage-deflate (RFC 7692) on the real binary. python3-websockets
(compression on by default in its client) and node's `ws` with perMessageDeflate on /echo, chat
send/receive with compressed and uncompressed clients side by side, off by default, malformed offers
declined, a decompression bomb closed with 1009 without growing the server, invalid compressed data
(1007), RSV1 where it is not allowed (1002), and the memory of 1,000 idle compressed connections.
"""
import asyncio
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
import zlib

import pytest
import websockets

from conftest import assert_clean_log
from wsp import (API_KEY, Server, frame, raw_connect, read_http_response, sanitized_build,
                 upgrade_request, RawWS)

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "node")
SIZES = [0, 1, 125, 126, 1000, 65535, 65536, 1024 * 1024]
WAIT = 5
OFFER = "permessage-deflate; client_max_window_bits"  # what browsers and python-websockets send


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(str(tmp_path_factory.mktemp("deflate")), server={"compression": "on"},
               limits={"max_connections_per_ip": "5000", "max_connections": "5000"}).start()
    yield s
    s.stop()
    assert_clean_log(s)


@pytest.fixture
def start_server(tmp_path):
    made = []

    def factory(**sections):
        d = tmp_path / f"s{len(made)}"
        d.mkdir()
        s = Server(str(d), **sections).start()
        made.append(s)
        return s

    yield factory
    for s in made:
        s.stop()
        assert_clean_log(s)


def metrics(srv):
    req = urllib.request.Request(f"{srv.api_url}/metrics",
                                 headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req, timeout=WAIT) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def deflate_out(srv):
    m = metrics(srv)
    return (m['wsproxy_deflate_bytes_out_total{form="raw"}'],
            m['wsproxy_deflate_bytes_out_total{form="wire"}'])


def compressions(srv):
    m = metrics(srv)
    return (m['wsproxy_deflate_compressions_total{result="smaller"}']
            + m['wsproxy_deflate_compressions_total{result="not_smaller"}'])


def text_of_len(n):
    unit = "aé€😀"  # 1 + 2 + 3 + 4 bytes
    s = unit * (n // 10)
    return s + "z" * (n - len(s.encode()))


def compress(data, wbits=15, level=6):
    """An RFC 7692 §7.2.1 message payload: raw DEFLATE, sync flush, 00 00 ff ff removed."""
    c = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(payload, wbits=15):
    d = zlib.decompressobj(-wbits)
    return d.decompress(payload + b"\x00\x00\xff\xff")


def handshake(port, path="/echo", offer=OFFER):
    """Raw upgrade with an extensions offer (None: no header). Returns (RawWS, extensions answer)."""
    s = raw_connect(port)
    extra = f"Sec-WebSocket-Extensions: {offer}\r\n" if offer is not None else ""
    s.sendall(upgrade_request(path, extra=extra))
    status, headers, rest = read_http_response(s)
    assert status == 101, (status, headers)
    return RawWS(s, rest), headers.get("sec-websocket-extensions")


def recv_frame_rsv(ws):
    """Like RawWS.recv_frame, with the RSV1 bit: (fin, rsv1, opcode, payload)."""
    ws._need(2)
    b0 = ws.buf[0]
    fin, op, payload = ws.recv_frame()
    return fin, bool(b0 & 0x40), op, payload


# ---- negotiation ----


def test_compression_off_by_default(start_server):
    s = start_server()
    ws, ext = handshake(s.port, offer=OFFER)
    assert ext is None
    # and RSV1 is then a protocol error
    ws.send(frame(0x1, compress(b"hello"), rsv=4))
    assert ws.recv_close() == 1002
    ws.close()


def test_compression_response_header(srv):
    ws, ext = handshake(srv.port, offer=OFFER)
    assert ext == ("permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                   "server_max_window_bits=12; client_max_window_bits=12")
    ws.close()
    ws, ext = handshake(srv.port, offer="permessage-deflate")
    assert ext == ("permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                   "server_max_window_bits=12")
    ws.close()
    # no offer: no extension
    ws, ext = handshake(srv.port, offer=None)
    assert ext is None
    ws.close()


@pytest.mark.parametrize("offer", [
    "permessage-deflate; bogus",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; server_max_window_bits=8",
    "permessage-deflate; client_max_window_bits=16",
    "permessage-deflate; client_max_window_bits=09",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; client_max_window_bits=\"1",
    ";;;,,,=\"",
    "x-webkit-deflate-frame",
    "permessage-deflate;" + "a" * 3000,
])
def test_compression_malformed_offer_declined(srv, offer):
    ws, ext = handshake(srv.port, offer=offer)
    assert ext is None  # declined, never a broken handshake
    ws.send(frame(0x1, b"still works"))
    fin, rsv1, op, payload = recv_frame_rsv(ws)
    assert (fin, rsv1, op, payload) == (True, False, 0x1, b"still works")
    ws.close()


def test_compression_first_acceptable_offer_wins(srv):
    ws, ext = handshake(srv.port, offer="permessage-deflate; server_max_window_bits=8, "
                                        "permessage-deflate; server_max_window_bits=10")
    assert ext == ("permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                   "server_max_window_bits=10")
    # our answer is compressed with a 10-bit window
    msg = text_of_len(5000).encode()
    ws.send(frame(0x1, msg))
    fin, rsv1, op, payload = recv_frame_rsv(ws)
    assert rsv1 and op == 0x1 and len(payload) < len(msg)
    assert inflate(payload, wbits=10) == msg
    ws.close()


# ---- echo with third-party clients ----


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", ["text", "binary"])
def test_compression_echo_python_websockets(srv, kind, size):
    msg = text_of_len(size) if kind == "text" else bytes((i * 7 + 3) & 0xFF for i in range(size))

    async def body():
        async with websockets.connect(f"{srv.ws_url}/echo", max_size=4 << 20, ping_interval=None,
                                      open_timeout=WAIT, close_timeout=WAIT) as ws:
            assert ws.response_headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
            await ws.send(msg)
            assert await asyncio.wait_for(ws.recv(), WAIT) == msg
            # fragmented, compressed as one message by the client
            await ws.send([msg[: size // 2], msg[size // 2:]] if size > 1 else [msg])
            assert await asyncio.wait_for(ws.recv(), WAIT) == msg

    run(body())


def test_compression_echo_is_compressed_on_the_wire(srv):
    ws, _ = handshake(srv.port)
    raw0, wire0 = deflate_out(srv)
    small = b"x" * 100  # under compression_min_size (256): sent as is
    ws.send(frame(0x1, small))
    assert recv_frame_rsv(ws) == (True, False, 0x1, small)
    big = json.dumps([{"type": "msg", "id": i, "from": "alice", "room": "lobby",
                       "body": {"text": "hello there, how are you doing today?"}}
                      for i in range(40)]).encode()
    ws.send(frame(0x1, compress(big, wbits=12), rsv=4))  # compressed in, compressed out
    fin, rsv1, op, payload = recv_frame_rsv(ws)
    assert fin and rsv1 and op == 0x1
    assert inflate(payload, wbits=12) == big
    assert len(payload) < len(big) / 4
    raw1, wire1 = deflate_out(srv)
    assert raw1 - raw0 == len(big) and wire1 - wire0 == len(payload)
    # random bytes do not shrink: sent uncompressed
    noise = os.urandom(4000)
    ws.send(frame(0x2, noise))
    assert recv_frame_rsv(ws) == (True, False, 0x2, noise)
    m = metrics(srv)
    assert m["wsproxy_deflate_connections_open"] >= 1
    assert m['wsproxy_deflate_memory_bytes{kind="reserved"}'] > 0
    assert m['wsproxy_deflate_bytes_in_total{form="raw"}'] >= len(big)
    ws.close()


def test_compression_echo_node_ws(srv):
    node = shutil.which("node")
    assert node, "node is not installed (make test installs nodejs)"
    assert os.path.isdir(os.path.join(NODE_DIR, "node_modules", "ws")), \
        "run `npm ci` in tests/integration/node (make test does)"
    proc = subprocess.run([node, os.path.join(NODE_DIR, "echo_client.js"), f"{srv.ws_url}/echo",
                           "deflate"], capture_output=True, text=True, timeout=60, cwd=NODE_DIR)
    assert proc.stdout.strip(), proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == [], result
    assert result["ok"] is True and proc.returncode == 0, (result, proc.stderr)
    assert "permessage-deflate negotiated" in result["checks"]
    assert {"fragmented", "ping/pong", "close 1000", "text 1048576",
            "binary 1048576"} <= set(result["checks"])


# ---- chat ----


async def chat_connect(srv, user, compression="deflate"):
    ws = await asyncio.wait_for(websockets.connect(srv.chat_url(user), compression=compression,
                                                   max_size=4 << 20, ping_interval=None), WAIT)
    while True:
        f = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if f["type"] == "replayed":
            return ws


async def expect(ws, type_):
    while True:
        f = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if f["type"] == type_:
            return f


def test_compression_chat_send_receive(srv):
    async def body():
        alice = await chat_connect(srv, "alice")
        bob = await chat_connect(srv, "bob")
        carol = await chat_connect(srv, "carol", compression=None)  # no extension
        assert alice.response_headers.get("Sec-WebSocket-Extensions")
        assert carol.response_headers.get("Sec-WebSocket-Extensions") is None
        for ws in (alice, bob, carol):
            await ws.send(json.dumps({"type": "join", "room": "zroom"}))
            await expect(ws, "joined")
        dave = await chat_connect(srv, "dave")
        await dave.send(json.dumps({"type": "join", "room": "zroom"}))
        await expect(dave, "joined")
        raw0, wire0 = deflate_out(srv)
        runs0 = compressions(srv)
        text = "the quick brown fox jumps over the lazy dog; " * 40
        await alice.send(json.dumps({"type": "send", "room": "zroom", "body": {"text": text},
                                     "cid": "z1"}))
        sent = await expect(alice, "sent")
        for ws in (bob, carol, dave):  # compressed for bob and dave, plain for carol
            m = await expect(ws, "msg")
            assert m["id"] == sent["id"] and m["body"] == {"text": text} and m["from"] == "alice"
        raw1, wire1 = deflate_out(srv)
        assert raw1 > raw0 and wire1 - wire0 < (raw1 - raw0) / 4  # bob's copy went compressed
        # compressed once for both compressed recipients (the "sent" receipt is under min_size)
        assert compressions(srv) == runs0 + 1
        # a small one stays plain, and compressed input from the client is read too
        await bob.send(json.dumps({"type": "send", "room": "zroom", "body": "hi", "cid": "z2"}))
        await expect(bob, "sent")
        for ws in (alice, carol):
            assert (await expect(ws, "msg"))["body"] == "hi"
        # history pages are unicast and compressed
        await carol.send(json.dumps({"type": "history", "room": "zroom", "rid": "h"}))
        await alice.send(json.dumps({"type": "history", "room": "zroom", "rid": "h"}))
        for ws in (alice, carol):
            h = await expect(ws, "history")
            assert [i["body"] for i in h["items"]] == ["hi", {"text": text}]
        for ws in (alice, bob, carol, dave):
            await ws.close()
        # the stored body is the JSON the client sent, uncompressed
        rows = srv.db_rows("SELECT body FROM messages WHERE cid = 'z1'")
        assert json.loads(rows[0][0]) == {"text": text}

    run(body())


# ---- hostile input ----


def bomb(size=10 << 20):
    return compress(b"\0" * size, wbits=15, level=9)


def test_compression_zip_bomb_closed_1009(srv):
    payload = bomb()
    assert len(payload) < 20_000  # a few KB on the wire, 10 MiB inflated

    def one(kind=0x1):
        ws, ext = handshake(srv.port, offer="permessage-deflate")
        assert ext
        ws.send(frame(kind, payload, rsv=4))
        code = ws.recv_close()
        ws.close()
        return code

    assert one(0x1) == 1009
    assert one(0x2) == 1009
    # fragmented: the frames are small, the message inflates past the limit
    ws, _ = handshake(srv.port, offer="permessage-deflate")
    third = len(payload) // 3
    ws.send(frame(0x2, payload[:third], fin=False, rsv=4) + frame(0x0, payload[third:2 * third],
                                                                 fin=False)
            + frame(0x0, payload[2 * third:]))
    assert ws.recv_close() == 1009
    ws.close()
    if sanitized_build():
        return  # RSS says nothing under ASan (quarantine)
    for _ in range(3):
        one()
    before = srv.rss_kib()
    for _ in range(40):
        assert one() == 1009
    time.sleep(0.2)
    grown = srv.rss_kib() - before
    print(f"\nRSS growth over 40 bombs: {grown} KiB")
    assert grown < 4096, f"RSS grew by {grown} KiB over 40 bombs"
    assert metrics(srv)['wsproxy_deflate_memory_bytes{kind="in_use"}'] < 300_000


def test_compression_invalid_data_1007(srv):
    ws, _ = handshake(srv.port)
    ws.send(frame(0x2, b"\xff\xff\xff\xff", rsv=4))  # not DEFLATE
    assert ws.recv_close() == 1007
    ws.close()
    # valid DEFLATE of invalid UTF-8 in a text message: checked after inflating
    ws, _ = handshake(srv.port)
    ws.send(frame(0x1, compress(b"ok \xc3\x28 no", wbits=12), rsv=4))
    assert ws.recv_close() == 1007
    ws.close()
    # and the same bytes as binary are fine
    ws, _ = handshake(srv.port)
    data = b"ok \xc3\x28 no" * 50
    ws.send(frame(0x2, compress(data, wbits=12), rsv=4))
    fin, rsv1, op, payload = recv_frame_rsv(ws)
    assert op == 0x2 and (inflate(payload, 12) if rsv1 else payload) == data
    ws.close()


@pytest.mark.parametrize("opcode", [0x9, 0xA, 0x8])
def test_compression_rsv1_on_control_frame_1002(srv, opcode):
    ws, _ = handshake(srv.port)
    ws.send(frame(opcode, b"\x03\xe8" if opcode == 0x8 else b"x", rsv=4))
    assert ws.recv_close() == 1002
    ws.close()


def test_compression_rsv1_on_continuation_1002(srv):
    ws, _ = handshake(srv.port)
    ws.send(frame(0x1, b"a", fin=False) + frame(0x0, b"b", rsv=4))
    assert ws.recv_close() == 1002
    ws.close()


def test_compression_budget_declines(start_server):
    # 1 MiB: the shared compressor (39 KiB at 12/5) and about 85 inflate states of window 12
    s = start_server(server={"compression": "on", "compression_memory_budget": "1MiB"},
                     limits={"max_connections_per_ip": "500"})
    socks = []
    accepted = 0
    for _ in range(120):
        ws, ext = handshake(s.port)
        socks.append(ws)
        accepted += ext is not None
    assert 60 < accepted < 120
    ws, ext = handshake(s.port)
    assert ext is None  # over the budget: served uncompressed
    ws.send(frame(0x1, b"y" * 1000))
    assert recv_frame_rsv(ws) == (True, False, 0x1, b"y" * 1000)
    for w in socks:
        w.close()
    ws.close()
    # the reservations are given back
    deadline = time.time() + WAIT
    while time.time() < deadline:
        ws, ext = handshake(s.port)
        ws.close()
        if ext:
            break
        time.sleep(0.05)
    assert ext


# ---- memory ----


def open_idle(srv, n, offer):
    socks = []
    for _ in range(n):
        ws, ext = handshake(srv.port, offer=offer)
        assert (ext is not None) == (offer is not None)
        socks.append(ws)
    if offer is not None:
        msg = text_of_len(1000).encode()
        for ws in socks:  # every inflate state used once (then freed: client_no_context_takeover)
            ws.send(frame(0x1, compress(msg, wbits=12), rsv=4))
        for ws in socks:
            fin, rsv1, op, payload = recv_frame_rsv(ws)
            assert rsv1 and inflate(payload, 12) == msg
    return socks


def test_compression_idle_connections_memory(start_server):
    if sanitized_build():
        pytest.skip("RSS is meaningless under ASan")
    n = 1000
    result = {}
    for label, offer in (("plain", None), ("deflate", OFFER)):
        # a fresh server each: memory freed by one run would hide the other's growth
        s = start_server(server={"compression": "on"}, log={"level": "warn"},
                         limits={"max_connections_per_ip": "5000", "max_connections": "5000"})
        warm = open_idle(s, 20, offer)
        time.sleep(0.2)
        before = s.rss_kib()
        socks = open_idle(s, n, offer)
        time.sleep(0.5)
        after = s.rss_kib()
        result[label] = (after - before) * 1024 / n
        if offer:
            m = metrics(s)
            assert m["wsproxy_deflate_connections_open"] == n + 20
            assert m['wsproxy_deflate_memory_bytes{kind="in_use"}'] < 300_000  # no state per idle conn
        for ws in socks + warm:
            ws.close()
    print(f"\nRSS per idle connection: plain {result['plain']:.0f} B, "
          f"permessage-deflate {result['deflate']:.0f} B")
    assert result["deflate"] < 24 * 1024
