"""
attackers.py -- the reliability issue's attacks, run beside the soak's chatting clients: pipelined
API pushes, an ack stream, a ping flood that never reads, a history hoarder that never reads, a
trickled API head and handshakes never finished. Each runs in a thread until stop is set and counts
what it did; their messages go from senders and to recipients the soak's checks leave out.
"""
import json
import socket
import struct
import threading
import time

ATTACK_SENDERS = ("attacker", "hoarder")  # rows from these are not the soak users' messages
ATTACK_TARGET = "nobody"


def frame(opcode, payload=b""):
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        hdr = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return hdr + b"\x00\x00\x00\x00" + payload


def upgrade(port, path, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
              .encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise OSError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise OSError(head.split(b"\r\n")[0].decode(errors="replace"))
    return s


class Attackers:
    def __init__(self, srv, api_key):
        self.srv = srv
        self.key = api_key
        self.stop = threading.Event()
        self.counts = {"pipelined pushes answered": 0, "acks sent": 0, "pings sent": 0,
                       "hoarder rounds": 0, "trickled heads": 0, "idle handshakes": 0,
                       "errors": 0}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (
            self.pipeliner, self.ack_stream, self.ping_flood, self.hoarder, self.slowloris,
            self.idle_handshakes)]
        self.seq = 0

    def count(self, key, n=1):
        with self.lock:
            self.counts[key] += n

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def guarded(self, fn):
        try:
            fn()
        except OSError:
            self.count("errors")
            time.sleep(0.1)

    # 100 pushes in one write (~20 KB) every 0.3 s, each answered after the commit
    def pipeliner(self):
        while not self.stop.is_set():
            self.guarded(self._pipeline_once)
            self.stop.wait(0.3)

    def _pipeline_once(self):
        reqs = []
        for _ in range(100):
            self.seq += 1
            body = json.dumps({"to": ATTACK_TARGET, "from": "attacker", "body": {"n": self.seq},
                               "cid": f"a{self.seq}"}).encode()
            reqs.append(f"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                        f"{self.key}\r\nContent-Type: application/json\r\nContent-Length: "
                        f"{len(body)}\r\n\r\n".encode() + body)
        s = socket.create_connection(("127.0.0.1", self.srv.api_port), timeout=10)
        try:
            s.sendall(b"".join(reqs))
            got = b""
            while got.count(b"HTTP/1.1 202") < 100:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            self.count("pipelined pushes answered", got.count(b"HTTP/1.1 202"))
        finally:
            s.close()

    # an endless stream of acks from one chat connection (rate-limited, then closed: reconnect)
    def ack_stream(self):
        batch = frame(1, b'{"type":"ack","id":1}') * 500
        while not self.stop.is_set():
            def once():
                s = upgrade(self.srv.port, f"/ws?token={self.srv.token('flooder')}")
                s.setblocking(False)
                try:
                    while not self.stop.is_set():
                        try:
                            s.send(batch)
                            self.count("acks sent", 500)
                        except BlockingIOError:
                            pass
                        try:
                            if s.recv(65536) == b"":
                                return
                        except BlockingIOError:
                            pass
                        time.sleep(0.01)
                finally:
                    s.close()
            self.guarded(once)

    # pings, never reading: the server must close it as a slow consumer (1013)
    def ping_flood(self):
        batch = frame(9, b"p" * 125) * 256
        while not self.stop.is_set():
            def once():
                s = upgrade(self.srv.port, "/echo", rcvbuf=4096)
                try:
                    while not self.stop.is_set():
                        s.sendall(batch)
                        self.count("pings sent", 256)
                finally:
                    s.close()
            self.guarded(once)

    # large DMs to itself, then one write of an ack and many history requests, never reading
    def hoarder(self):
        big = json.dumps("h" * 30000)
        while not self.stop.is_set():
            def once():
                s = upgrade(self.srv.port, f"/ws?token={self.srv.token('hoarder')}", rcvbuf=4096)
                try:
                    for i in range(20):
                        self.seq += 1
                        s.sendall(frame(1, ('{"type":"send","to":"hoarder","cid":"h%d","body":%s}'
                                            % (self.seq, big)).encode()))
                    s.sendall(frame(1, b'{"type":"ack","id":1}') + frame(
                        1, b'{"type":"history","with":"hoarder","limit":100}') * 50)
                    self.count("hoarder rounds")
                    self.stop.wait(1.0)
                finally:
                    s.close()
            self.guarded(once)

    # an API head trickled one byte every 0.5 s (answered 408 at [api] request_timeout)
    def slowloris(self):
        head = b"GET /api/v1/sessions HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
        while not self.stop.is_set():
            def once():
                s = socket.create_connection(("127.0.0.1", self.srv.api_port), timeout=5)
                try:
                    for b in head:
                        if self.stop.is_set():
                            return
                        s.sendall(bytes([b]))
                        if self.stop.wait(0.5):
                            return
                finally:
                    s.close()
                    self.count("trickled heads")
            self.guarded(once)

    # TCP connections to the main port that never send a head (handshake_timeout closes them)
    def idle_handshakes(self):
        while not self.stop.is_set():
            def once():
                socks = [socket.create_connection(("127.0.0.1", self.srv.port), timeout=5)
                         for _ in range(10)]
                self.count("idle handshakes", len(socks))
                self.stop.wait(2.0)
                for s in socks:
                    s.close()
            self.guarded(once)
