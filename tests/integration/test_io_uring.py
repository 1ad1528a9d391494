"""
test_io_uring.py -- batched socket I/O ([server] io_uring, proxy/net/ioq.c) against the real binary.

With `auto` (the default) the reads of the sockets epoll found ready in one loop pass go to the
kernel as one io_uring submission, and the pass's sends as another; with `off`, or on a kernel
without io_uring, each socket gets its own recv()/send(). Both ways must carry the same traffic: many
echo clients at once, a room fan-out, a reader that lets its socket fill (the rest of a batched send
waits for the write event, in order), and peers that vanish while their replies are queued. The
counters in /metrics say which way the server went and that the batches were used.
"""
import asyncio
import json
import os
import socket
import struct
import threading
import time
import urllib.request

import pytest
import websockets

from wsp import Server, frame, make_token, raw_ws

WAIT = 10


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def metrics(srv):
    with urllib.request.urlopen(srv.api_url + "/metrics", timeout=5) as r:
        out = {}
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out


@pytest.fixture(params=["auto", "off"])
def srv(request, tmp_path):
    s = Server(str(tmp_path), server={"io_uring": request.param},
               limits={"rate": "0", "send_queue": "16MiB"}).start()
    s.mode = request.param
    yield s
    s.stop()


def uring_used(srv):
    """auto uses io_uring unless the kernel refuses it, which the log says at start."""
    return srv.mode == "auto" and "io_uring not used" not in srv.log()


def test_io_uring_gauge_and_counters_follow_the_setting(srv):
    async def go():
        async with websockets.connect(srv.ws_url + "/echo") as ws:
            for i in range(20):
                await ws.send(f"m{i}")
                assert await asyncio.wait_for(ws.recv(), WAIT) == f"m{i}"
    run(go())
    m = metrics(srv)
    if srv.mode == "off":
        assert m["wsproxy_io_uring"] == 0
        assert "wsproxy_io_uring_sends_total" not in m
        assert "io_uring not used" not in srv.log()  # nothing to say: it was not asked for
        return
    if not uring_used(srv):
        pytest.skip("this kernel offers no io_uring: " + srv.log().split("io_uring not used")[1][:80])
    assert m["wsproxy_io_uring"] == 1
    assert m["wsproxy_io_uring_recvs_total"] >= 20
    assert m["wsproxy_io_uring_sends_total"] >= 20  # the 101 goes before detach; the echoes here
    assert m["wsproxy_io_uring_submissions_total"] <= (m["wsproxy_io_uring_recvs_total"] +
                                                       m["wsproxy_io_uring_sends_total"])


def test_many_echo_clients_at_once_each_get_their_own_in_order(srv):
    async def client(k):
        async with websockets.connect(srv.ws_url + "/echo", max_size=None) as ws:
            for i in range(40):
                await ws.send(f"c{k}-{i}-" + "x" * (i * 37 % 3000))
            for i in range(40):
                assert await asyncio.wait_for(ws.recv(), WAIT) == f"c{k}-{i}-" + "x" * (i * 37 % 3000)

    async def go():
        await asyncio.gather(*(client(k) for k in range(40)))
    run(go())


async def join_members(srv, n, room):
    """n chat clients m0..m{n-1}, each welcomed and joined to room."""
    members = []
    for k in range(n):
        ws = await websockets.connect(srv.chat_url(f"m{k}"))
        assert json.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] == "welcome"
        await ws.send(json.dumps({"type": "join", "room": room}))
        while json.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] != "joined":
            pass
        members.append(ws)
    return members


def test_room_fanout_reaches_every_member_in_order(srv):
    async def go():
        members = await join_members(srv, 30, "hall")
        pub = members[0]
        for i in range(25):
            await pub.send(json.dumps({"type": "send", "room": "hall", "body": f"b{i}", "cid": f"c{i}"}))
        for ws in members[1:]:  # the sending connection gets its receipts, not the message
            got = []
            while len(got) < 25:
                f = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                if f.get("type") == "msg":
                    got.append(f["body"])
            assert got == [f"b{i}" for i in range(25)]
        for ws in members:
            await ws.close()
    run(go())


def test_several_publishes_in_one_commit_reach_every_member_in_order(srv):
    """
    A publisher's burst of room messages arrives in one read, so one commit holds several frames
    for every member: up to three by reference, more spilled into a copy in order, and a direct
    message to one member among them keeps its place.
    """
    async def go():
        members = await join_members(srv, 12, "hall")
        pub = raw_ws(srv.port, "/ws?token=" + make_token("pub"))
        pub.s.settimeout(WAIT)
        assert json.loads(pub.recv_frame()[2])["type"] == "welcome"
        pub.send(frame(0x1, json.dumps({"type": "join", "room": "hall"}).encode()))
        while json.loads(pub.recv_frame()[2])["type"] != "joined":
            pass
        want, want_m1, n = [], [], 0
        for burst in (2, 3, 4, 7, 1, 3):
            out = b""
            for j in range(burst):
                body = f"b{n}"
                out += frame(0x1, json.dumps({"type": "send", "room": "hall", "body": body,
                                              "cid": f"c{n}"}).encode())
                want.append(body)
                want_m1.append(body)
                n += 1
                if burst == 4 and j == 1:  # a direct message to m1 in the middle of the burst
                    out += frame(0x1, json.dumps({"type": "send", "to": "m1", "body": "dm",
                                                  "cid": "d1"}).encode())
                    want_m1.append("dm")
            pub.send(out)  # one write: the server reads the burst at once
            got = 0
            while got < burst + (1 if burst == 4 else 0):  # receipts after the commit
                if json.loads(pub.recv_frame()[2]).get("type") == "sent":
                    got += 1
        for k, ws in enumerate(members):
            got = []
            expect = want_m1 if k == 1 else want
            while len(got) < len(expect):
                f = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                if f.get("type") == "msg":
                    got.append(f["body"])
            assert got == expect, f"m{k}"
        pub.close()
        for ws in members:
            await ws.close()
    run(go())


def test_a_reader_that_lets_its_socket_fill_gets_everything_in_order(srv):
    """Replies the socket does not take wait for the write event behind the part already sent."""
    w = raw_ws(srv.port)
    # A small receive window (not tiny: every window costs a delayed ACK), and about 8 MB of
    # echoes, more than the server's socket buffer grows to (tcp_wmem's 4 MB)
    w.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 << 10)
    sizes = [(i * 7919) % 100000 + 1 for i in range(160)]
    payloads = [struct.pack("!I", i) * (n // 4) + b"z" * (n % 4) for i, n in enumerate(sizes)]
    frames = b"".join(frame(0x2, p) for p in payloads)
    # Sent from a thread: once its output waits, the server stops reading us until we read.
    sender = threading.Thread(target=w.s.sendall, args=(frames,), daemon=True)
    sender.start()
    time.sleep(0.5)  # the server's writes to us fill both socket buffers and queue the rest
    w.s.settimeout(WAIT)
    for i, p in enumerate(payloads):
        fin, op, got = w.recv_frame()
        assert (fin, op) == (True, 0x2)
        assert got == p, f"echo {i} differs"
    sender.join(WAIT)
    w.send(frame(0x8, struct.pack("!H", 1000)))
    assert w.recv_close() == 1000
    w.close()


def test_peers_that_vanish_with_replies_queued_leave_the_server_serving(srv):
    """A reset while a batched read or send of that socket is queued: the others go on."""
    for round_ in range(5):
        socks = []
        for k in range(20):
            w = raw_ws(srv.port)
            for i in range(20):
                w.send(frame(0x1, b"v" * 500))
            socks.append(w)
        for w in socks:  # reset with unread echoes: RST, not FIN
            w.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.close()

    async def go():
        async with websockets.connect(srv.ws_url + "/echo") as ws:
            await ws.send("still here")
            assert await asyncio.wait_for(ws.recv(), WAIT) == "still here"
    run(go())
    deadline = time.time() + WAIT
    while metrics(srv)["wsproxy_connections_open"] > 0 and time.time() < deadline:
        time.sleep(0.05)
    assert metrics(srv)["wsproxy_connections_open"] == 0
    assert srv.proc.poll() is None
