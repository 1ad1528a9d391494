"""
test_echo_client.py -- wsproxy's /echo driven by real third-party clients: Debian's python3-websockets
(10.4) for sizes up to 1 MiB, fragments, ping/pong and close codes, and node's `ws` (tests/integration/node).
"""
import asyncio
import json
import os
import shutil
import subprocess

import pytest
import websockets

from wsp import Server

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "node")
SIZES = [0, 125, 126, 65535, 65536, 1024 * 1024]
WAIT = 5  # seconds for any one step


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(str(tmp_path_factory.mktemp("echo"))).start()
    yield s
    s.stop()


@pytest.fixture
def echo_url(srv):
    return f"{srv.ws_url}/echo"


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def connect(url, **kw):
    # ping_interval=None: our own pings only; max_size above 1 MiB so the client is never the limit.
    kw.setdefault("max_size", 4 * 1024 * 1024)
    return websockets.connect(url, ping_interval=None, close_timeout=WAIT, open_timeout=WAIT,
                              compression=None, **kw)


def text_of_len(n):
    unit = "aé€😀"  # 1 + 2 + 3 + 4 bytes
    s = unit * (n // 10)
    return s + "z" * (n - len(s.encode()))


def binary_of_len(n):
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", ["text", "binary"])
def test_echo_client_sizes(echo_url, kind, size):
    msg = text_of_len(size) if kind == "text" else binary_of_len(size)
    assert len(msg.encode() if kind == "text" else msg) == size

    async def go():
        async with connect(echo_url) as ws:
            await ws.send(msg)
            got = await asyncio.wait_for(ws.recv(), WAIT)
            assert type(got) is type(msg)
            assert got == msg
        return ws.close_code

    assert run(go()) == 1000


def test_echo_client_many_messages_in_flight(echo_url):
    msgs = [text_of_len(n) for n in range(0, 3000, 97)] + [binary_of_len(n) for n in (1, 70000)]

    async def go():
        async with connect(echo_url) as ws:
            for m in msgs:
                await ws.send(m)
            for m in msgs:
                assert await asyncio.wait_for(ws.recv(), WAIT) == m

    run(go())


@pytest.mark.parametrize("parts", [
    ["frag", "men", "ted"],
    ["", "é", "€😀", ""],
    [b"\x00\x01", b"", b"\xff" * 70000],
    ["κό", "σμε"],
], ids=["text", "text-empty-parts", "binary-large", "utf8"])
def test_echo_client_fragmented_async_iterator(echo_url, parts):
    whole = parts[0][:0].join(parts)

    async def fragments():
        for p in parts:
            yield p
            await asyncio.sleep(0.01)

    async def go():
        async with connect(echo_url) as ws:
            await ws.send(fragments())
            assert await asyncio.wait_for(ws.recv(), WAIT) == whole

    run(go())


def test_echo_client_fragmented_split_inside_code_point(echo_url):
    data = "aé€😀".encode()

    async def go():
        async with connect(echo_url) as ws:
            # websockets sends str fragments only; split the bytes of a text message by hand via
            # the protocol's write_frame so a code point straddles two frames.
            await ws.write_frame(False, websockets.frames.Opcode.TEXT, data[:5])
            await ws.write_frame(True, websockets.frames.Opcode.CONT, data[5:])
            assert await asyncio.wait_for(ws.recv(), WAIT) == data.decode()

    run(go())


@pytest.mark.parametrize("payload", [b"", b"hello", bytes(range(125))], ids=["empty", "text", "125"])
def test_echo_client_ping_pong(echo_url, payload):
    async def go():
        async with connect(echo_url) as ws:
            waiter = await ws.ping(payload)
            await asyncio.wait_for(waiter, WAIT)
            # The connection is still usable afterwards.
            await ws.send("after ping")
            assert await asyncio.wait_for(ws.recv(), WAIT) == "after ping"

    run(go())


def test_echo_client_many_pings(echo_url):
    async def go():
        async with connect(echo_url) as ws:
            waiters = [await ws.ping(f"p{i}") for i in range(20)]
            await asyncio.wait_for(asyncio.gather(*waiters), WAIT)

    run(go())


@pytest.mark.parametrize("code,reason", [(1000, ""), (1000, "bye"), (1001, "going"),
                                         (3000, "app"), (4000, "custom"), (4999, "last")])
def test_echo_client_close_code_echoed(echo_url, code, reason):
    async def go():
        ws = await connect(echo_url)
        await ws.send("x")
        assert await asyncio.wait_for(ws.recv(), WAIT) == "x"
        loop = asyncio.get_running_loop()
        started = loop.time()
        await ws.close(code=code, reason=reason)
        # The server echoes the code and drops TCP itself, well before close_timeout.
        assert loop.time() - started < 2
        return ws.close_code

    assert run(go()) == code


def test_echo_client_too_big_gets_1009(echo_url):
    async def go():
        async with connect(echo_url) as ws:
            await ws.send(b"\x00" * (1024 * 1024 + 1))
            with pytest.raises(websockets.exceptions.ConnectionClosedError):
                await asyncio.wait_for(ws.recv(), WAIT)
        return ws.close_code

    assert run(go()) == 1009


def test_echo_client_concurrent_clients(echo_url):
    async def one(i):
        async with connect(echo_url) as ws:
            for n in (0, 126, 65536):
                m = text_of_len(n) + str(i)
                await ws.send(m)
                assert await asyncio.wait_for(ws.recv(), WAIT) == m

    async def go():
        await asyncio.gather(*(one(i) for i in range(20)))

    run(go())


# ---- node's ws ----

def test_echo_client_node_ws(srv):
    node = shutil.which("node")
    assert node, "node is not installed (make test installs nodejs)"
    assert os.path.isdir(os.path.join(NODE_DIR, "node_modules", "ws")), \
        "run `npm ci` in tests/integration/node (make test does)"
    proc = subprocess.run([node, os.path.join(NODE_DIR, "echo_client.js"), f"{srv.ws_url}/echo"],
                          capture_output=True, text=True, timeout=60, cwd=NODE_DIR)
    assert proc.stdout.strip(), proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == [], result
    assert result["ok"] is True and proc.returncode == 0, (result, proc.stderr)
    assert result["closeCode"] == 1000
    for n in SIZES:
        assert f"text {n}" in result["checks"] and f"binary {n}" in result["checks"]
    assert {"fragmented", "ping/pong", "close 1000"} <= set(result["checks"])
