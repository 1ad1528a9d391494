#!/usr/bin/python3
"""
joinstorm.py -- the join storm of issue 16, standalone (not part of run.sh): open N /ws connections
with HS256 tokens (sub = PREFIXuNNNN), wait for every welcome, then make all of them join one room
within --spread seconds while sampling the server's VmRSS every 10 ms. Every client reads (and
parses) what it is sent. Prints one `result` line:

  before_kib  VmRSS before the first connection       open_kib   after every welcome
  peak_kib    highest VmRSS sampled during the storm   after_kib  --settle s after the last byte
  peak_per / after_per / open_per: (x - before) / N KiB per connection; hwm_kib = VmHWM at the end
  members: member events received in all (N(N-1)/2 up to presence_fanout_max; their order and
  uniqueness are checked by tests/integration/test_join_storm.py)
  anon_*: the same from RssAnon (the heap: without code pages first touched, the SQLite shm)

usage: joinstorm.py -p PID -P PORT -k SECRET [-c 2000] [-R room] [--spread 1.0] [--settle 2]
"""
import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import struct
import sys
import time


def rss(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(secret, sub):
    now = int(time.time())
    h = b64url(b'{"alg":"HS256","typ":"JWT"}')
    p = b64url(json.dumps({"sub": sub, "iat": now, "exp": now + 3600}).encode())
    sig = hmac.new(secret.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64url(sig)}"


def frame(text):
    data = text.encode()
    mask = os.urandom(4)
    n = len(data)
    hdr = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0xFE]) + struct.pack("!H", n)
    return hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


MEMBER = b'{"type":"member"'
WELCOME = b'{"type":"welcome"'
JOINED = b'{"type":"joined"'
ERROR = b'{"type":"error"'
TAIL = max(len(MEMBER), len(WELCOME), len(JOINED), len(ERROR)) - 1


class Client(asyncio.Protocol):
    def __init__(self, st, user):
        self.st, self.user = st, user
        self.buf = b""
        self.head = False
        self.welcome = asyncio.get_event_loop().create_future()
        self.joined = asyncio.get_event_loop().create_future()
        self.tr = None

    def connection_made(self, tr):
        self.tr = tr

    def data_received(self, data):
        # Frames are not parsed: the storm's 500,000 member events parsed one by one in Python made
        # the client, not the server, decide how much output waited in the server. The stream is
        # scanned for the markers instead (a marker split across reads is found through the tail).
        st = self.st
        st.last_rx = time.monotonic()
        st.bytes += len(data)
        if not self.head:
            self.buf += data
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                raise SystemExit("handshake refused: " + self.buf[:80].decode(errors="replace"))
            self.head = True
            data = self.buf[i + 4:]
            self.buf = b""
        chunk = self.buf + data
        st.members += chunk.count(MEMBER)
        if not self.welcome.done() and WELCOME in chunk:
            self.welcome.set_result(True)
        if not self.joined.done() and JOINED in chunk:
            self.joined.set_result(True)
        st.errors += chunk.count(ERROR)
        self.buf = chunk[-TAIL:]

    def connection_lost(self, exc):
        self.st.lost += 1
        for f in (self.welcome, self.joined):
            if not f.done():
                f.set_exception(ConnectionError(f"{self.user}: connection lost"))


class State:
    def __init__(self):
        self.bytes = self.members = self.errors = self.lost = 0
        self.last_rx = time.monotonic()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-p", "--pid", type=int, required=True)
    ap.add_argument("-P", "--port", type=int, required=True)
    ap.add_argument("-k", "--secret", required=True)
    ap.add_argument("-c", "--conns", type=int, default=2000)
    ap.add_argument("-R", "--room", default="storm")
    ap.add_argument("-u", "--prefix", default="")
    ap.add_argument("--spread", type=float, default=1.0)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--hold", type=float, default=0.0, help="keep the connections open this long")
    a = ap.parse_args()
    loop = asyncio.get_event_loop()
    st = State()
    before = rss(a.pid)
    anon_before = rss(a.pid, "RssAnon")
    clients = []
    sem = asyncio.Semaphore(200)

    async def open_one(i):
        async with sem:
            user = f"{a.prefix}u{i:05d}"
            _, c = await loop.create_connection(lambda: Client(st, user), "127.0.0.1", a.port)
            c.tr.write((f"GET /ws?token={token(a.secret, user)} HTTP/1.1\r\nHost: x\r\n"
                        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            await c.welcome
            clients.append(c)

    t0 = time.monotonic()
    await asyncio.gather(*(open_one(i) for i in range(a.conns)))
    t_open = time.monotonic() - t0
    await asyncio.sleep(0.5)
    opened = rss(a.pid)
    peak = opened
    stop = False

    async def sample():
        nonlocal peak
        while not stop:
            peak = max(peak, rss(a.pid))
            await asyncio.sleep(0.01)

    sampler = asyncio.ensure_future(sample())
    t0 = time.monotonic()
    step = a.spread / len(clients)
    join = f'{{"type":"join","room":"{a.room}"}}'
    for i, c in enumerate(clients):
        due = t0 + i * step
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        c.tr.write(frame(join))
    t_sent = time.monotonic() - t0
    await asyncio.wait_for(asyncio.gather(*(c.joined for c in clients)), 120)
    t_joined = time.monotonic() - t0
    while time.monotonic() - st.last_rx < 1.0:  # until the member events stop coming
        await asyncio.sleep(0.1)
    t_quiet = st.last_rx - t0
    await asyncio.sleep(a.settle)
    stop = True
    await sampler
    after = rss(a.pid)
    anon_after = rss(a.pid, "RssAnon")
    hwm = rss(a.pid, "VmHWM")
    n = len(clients)
    per = lambda x: (x - before) / n
    print(f"joinstorm: {n} connections joined {a.room} in {t_joined:.2f}s (joins sent over "
          f"{t_sent:.2f}s, last byte at {t_quiet:.2f}s); RSS KiB/conn: open {per(opened):.2f}, "
          f"peak {per(peak):.2f}, after {per(after):.2f}")
    print(f"result mode=joinstorm conns={n} open_s={t_open:.2f} joined_s={t_joined:.2f} "
          f"quiet_s={t_quiet:.2f} before_kib={before} open_kib={opened} peak_kib={peak} "
          f"after_kib={after} hwm_kib={hwm} open_per={per(opened):.2f} peak_per={per(peak):.2f} "
          f"after_per={per(after):.2f} members={st.members} errors={st.errors} "
          f"lost={st.lost} bytes={st.bytes} anon_before_kib={anon_before} "
          f"anon_after_kib={anon_after} anon_after_per={(anon_after - anon_before) / n:.2f}")
    sys.stdout.flush()
    await asyncio.sleep(a.hold)
    for c in clients:
        c.tr.abort()


if __name__ == "__main__":
    asyncio.run(main()) if sys.version_info >= (3, 7) else None
