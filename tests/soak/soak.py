"""
soak.py -- N chat clients (DMs and one room) connect, chat and drop at random (clean close, TCP
reset, going silent until the heartbeat gives up) for T seconds against a fresh server; then every
user reconnects to resend what was never confirmed and to collect what is still pending. Checks,
client side against the database: every receipt is a stored row and every row had a receipt (by
cid, nothing lost, nothing duplicated), every direct message reached its recipient at least once and
no connection got the same message twice, delivered + undelivered = stored. Prints the figures;
exits 1 on any violation.
Beside them (SOAK_ATTACKS=0 turns it off) run the attacks of tests/soak/attackers.py: pipelined API
pushes, an ack stream, a ping flood and a history hoarder that never read, a trickled API head,
handshakes never finished; the checks hold all the same and RSS must come back near its baseline.
Environment: SOAK_SECONDS (20), SOAK_CLIENTS (50), SOAK_SEED, SOAK_ATTACKS (1), WSP_BIN.
"""
import asyncio
import collections
import json
import logging
import os
import random
import socket
import struct
import sys
import time

import websockets

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from wsp import API_KEY, Server, sanitized_build  # noqa: E402
from attackers import ATTACK_SENDERS, ATTACK_TARGET, Attackers  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS", "20"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "50"))
SEED = int(os.environ.get("SOAK_SEED", str(int(time.time()))))
ATTACKS = os.environ.get("SOAK_ATTACKS", "1") != "0"
RSS_SLACK_KIB = 64 * 1024  # allocator arenas keep some of a burst; a leak grows past this
ROOM = "soak"
DROPS = ("clean", "reset", "silent")


class User:
    """Everything one user's clients saw, across all of its connections."""

    def __init__(self, name):
        self.name = name
        self.next_cid = 0
        self.outbox = {}        # cid -> frame, sent but no receipt yet (resent on reconnect)
        self.receipts = {}      # cid -> id
        self.kinds = {}         # cid -> "dm" | "room"
        self.received = set()   # ids of messages addressed to this user (DMs) or its room
        self.acked = set()
        self.truncated = False
        self.joined = False


class Soak:
    def __init__(self, srv, users, rng):
        self.srv = srv
        self.users = users
        self.rng = rng
        self.serial = 0
        self.per_conn = {}      # connection serial -> Counter of msg ids
        self.violations = []
        self.stats = collections.Counter()
        self.abandoned = []     # (when, websocket) of silent connections, aborted after 3s

    def url(self, user):
        return self.srv.chat_url(user)

    async def connect(self, u):
        ws = await websockets.connect(self.url(u.name), ping_interval=None, close_timeout=2,
                                      max_size=1 << 22)
        self.serial += 1
        self.per_conn[self.serial] = collections.Counter()
        self.stats["connections"] += 1
        return ws, self.serial

    def on_frame(self, u, serial, m, acks):
        t = m.get("type")
        if t == "msg":
            self.per_conn[serial][m["id"]] += 1
            if m.get("to") == u.name or m.get("room") == ROOM:
                u.received.add(m["id"])
                acks.append(m["id"])
        elif t == "sent":
            cid = m["cid"]
            prev = u.receipts.get(cid)
            if prev is not None and prev != m["id"]:
                self.violations.append(f"{u.name}: cid {cid} got ids {prev} and {m['id']}")
            u.receipts[cid] = m["id"]
            u.outbox.pop(cid, None)
            self.stats["duplicate receipts"] += bool(m.get("duplicate"))
        elif t == "truncated":
            u.truncated = True
        elif t == "error":
            self.violations.append(f"{u.name}: error {m}")

    async def reader(self, u, ws, serial, signals=None):
        """Reads until the connection ends and acks every message it gets, as a client displaying
        them would. signals: {"replayed" | rid: asyncio.Event} set when that frame arrives."""
        try:
            async for raw in ws:
                m = json.loads(raw)
                acks = []
                self.on_frame(u, serial, m, acks)
                for mid in acks:
                    await ws.send(json.dumps({"type": "ack", "id": mid}))
                    u.acked.add(mid)
                key = m.get("rid") or m.get("type")
                if signals and key in signals:
                    signals[key].set()
        except websockets.ConnectionClosed:
            pass

    def new_message(self, u):
        u.next_cid += 1
        cid = f"{u.name}-{u.next_cid}"
        if self.rng.random() < 0.7:
            to = self.rng.choice([x for x in self.users if x is not u]).name
            frame = {"type": "send", "to": to, "body": {"n": u.next_cid}, "cid": cid}
            u.kinds[cid] = "dm"
        else:
            frame = {"type": "send", "room": ROOM, "body": {"n": u.next_cid}, "cid": cid}
            u.kinds[cid] = "room"
        u.outbox[cid] = frame
        return frame

    async def session(self, u, deadline):
        """One connection's life: join, resend the unconfirmed, chat, then drop somehow."""
        ws, serial = await self.connect(u)
        rd = asyncio.ensure_future(self.reader(u, ws, serial))
        try:
            if not u.joined:
                await ws.send(json.dumps({"type": "join", "room": ROOM}))
                u.joined = True
            for frame in list(u.outbox.values()):  # same cid: stored at most once
                await ws.send(json.dumps(frame))
            life = time.time() + self.rng.uniform(0.3, 3.0)
            while time.time() < min(life, deadline):
                await ws.send(json.dumps(self.new_message(u)))
                self.stats["sends"] += 1
                if self.rng.random() < 0.1:
                    break  # drop right after a send: its receipt may never come, so it is resent
                await asyncio.sleep(self.rng.uniform(0.05, 0.4))
        except websockets.ConnectionClosed:
            pass
        how = self.rng.choice(DROPS) if time.time() < deadline else "clean"
        self.stats["drop " + how] += 1
        if how == "clean":
            await ws.close()
            await rd
        elif how == "reset":
            sock = ws.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            ws.transport.abort()
            await rd
        else:
            # stop reading (no pongs, no acks) and walk away; the server's heartbeat ends it, while
            # this user already connects again: two connections of one user overlap
            ws.transport.pause_reading()
            rd.cancel()
            self.abandoned.append((time.time(), ws))
        while self.abandoned and time.time() - self.abandoned[0][0] > 3:
            self.abandoned.pop(0)[1].transport.abort()

    async def client(self, u, deadline):
        while time.time() < deadline:
            try:
                await self.session(u, deadline)
            except (OSError, websockets.InvalidStatusCode, asyncio.TimeoutError) as e:
                self.stats["connect failures"] += 1
                print(f"{u.name}: connect failed: {e!r}", file=sys.stderr)
            await asyncio.sleep(self.rng.uniform(0.0, 0.3))

    async def collect(self, u):
        """Final pass: connect, read the whole replay, ack it, resend the unconfirmed, close."""
        ws, serial = await self.connect(u)
        signals = {"replayed": asyncio.Event(), "end": asyncio.Event()}
        rd = asyncio.ensure_future(self.reader(u, ws, serial, signals))
        await asyncio.wait_for(signals["replayed"].wait(), 30)
        for frame in list(u.outbox.values()):
            await ws.send(json.dumps(frame))
        # a round trip: the acks and resends sent before it are committed once it is answered
        await ws.send(json.dumps({"type": "presence", "users": [u.name], "rid": "end"}))
        await asyncio.wait_for(signals["end"].wait(), 30)
        await ws.close()
        await rd


def direct_state(srv):
    """Direct messages' delivery state as (id, to_user, delivered_at), whichever schema has it."""
    if srv.db_rows("SELECT count(*) FROM sqlite_master WHERE name = 'deliveries'")[0][0]:
        return "(SELECT msg_id AS id, to_user, delivered_at FROM deliveries)"
    return "(SELECT id, to_user, delivered_at FROM messages WHERE to_user IS NOT NULL)"


def wait_for(fn, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return True
        time.sleep(0.05)
    return fn()


def check(soak, srv):
    users = {u.name: u for u in soak.users}
    v = soak.violations
    # the attackers' rows (pipelined pushes, the hoarder's DMs to itself) are not the soak's
    rows = [r for r in srv.db_rows("SELECT id, sender, to_user, room, cid FROM messages")
            if r[1] not in ATTACK_SENDERS and r[2] != ATTACK_TARGET]
    by_cid = {}
    for mid, sender, to, room, cid in rows:
        if cid is None or (sender, cid) in by_cid:
            v.append(f"row {mid}: cid {cid!r} of {sender} missing or stored twice")
        by_cid[(sender, cid)] = (mid, to, room)
    receipts = {(u.name, cid): mid for u in soak.users for cid, mid in u.receipts.items()}
    for key, mid in receipts.items():
        row = by_cid.get(key)
        if row is None:
            v.append(f"receipt {key} -> {mid} has no stored row (lost)")
        elif row[0] != mid:
            v.append(f"receipt {key} -> {mid} but stored as {row[0]}")
    for key, (mid, to, room) in by_cid.items():
        if key not in receipts:
            v.append(f"row {mid} {key} stored but never confirmed to its sender")
        kind = users[key[0]].kinds.get(key[1])
        if kind != ("dm" if to else "room"):
            v.append(f"row {mid} {key}: stored as {'dm' if to else 'room'}, sent as {kind}")
    unsent = sum(len(u.outbox) for u in soak.users)
    if unsent:
        v.append(f"{unsent} messages still without a receipt after the final pass")

    dms = [(mid, to) for mid, _, to, _, _ in rows if to]
    for mid, to in dms:
        if mid not in users[to].received:
            v.append(f"dm {mid} to {to} never reached {to}")
    for serial, counter in soak.per_conn.items():
        twice = sorted(i for i, n in counter.items() if n > 1)
        if twice:
            v.append(f"connection {serial} got ids {twice[:10]} more than once")
    delivered, undelivered, deliveries = srv.db_rows(
        "SELECT count(delivered_at), count(*) - count(delivered_at), count(*) FROM "
        + direct_state(srv) + " WHERE to_user NOT IN ('hoarder', 'nobody')")[0]
    if delivered + undelivered != len(dms) or deliveries != len(dms):
        v.append(f"deliveries {deliveries} (delivered {delivered} + undelivered {undelivered})"
                 f" != direct messages stored {len(dms)}")
    if undelivered:
        v.append(f"{undelivered} direct messages still undelivered after every user collected")
    wrongly = [mid for mid, to, _ in srv.db_rows(
        f"SELECT id, to_user, delivered_at FROM {direct_state(srv)} WHERE delivered_at IS NOT NULL")
        if to in users and mid not in users[to].received]
    if wrongly:
        v.append(f"{len(wrongly)} deliveries marked delivered but never received: {wrongly[:10]}")

    room_rows = [mid for mid, _, to, room, _ in rows if room]
    # a member is owed every room message others stored after it joined (unless truncated)
    owed = srv.db_rows("SELECT r.user, m.id FROM room_members r JOIN messages m ON m.room = r.room"
                       " AND m.created_at > r.joined_at AND m.sender <> r.user")
    missing_room = [(user, mid) for user, mid in owed
                    if user in users and not users[user].truncated
                    and mid not in users[user].received]
    if missing_room:
        v.append(f"{len(missing_room)} room messages never reached a member: {missing_room[:10]}")
    active = srv.db_rows("SELECT count(*) FROM sessions WHERE ended_at IS NULL")[0][0]
    if active:
        v.append(f"{active} sessions still active after every client left")
    online = srv.db_rows("SELECT count(*) FROM presence WHERE state = 'online'")[0][0]
    if online:
        v.append(f"{online} users still online after every client left")
    reasons = dict(srv.db_rows("SELECT end_reason, count(*) FROM sessions GROUP BY end_reason"))
    return {
        "rows stored": len(rows), "receipts": len(receipts), "direct": len(dms),
        "room": len(room_rows), "delivered": delivered, "undelivered": undelivered,
        "room owed": len(owed), "room missing": len(missing_room),
        "end reasons": reasons,
    }


def main():
    # silent connections are dropped half-open; websockets' tasks for them are noise at exit
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    rng = random.Random(SEED)
    srv = Server(heartbeat={"ping_interval": "1s", "pong_timeout": "1s"},
                 limits={"max_connections_per_ip": "10000"},
                 server={"close_timeout": "2s", "drain_timeout": "5s"},
                 log={"level": "info"}).start()
    print(f"soak: {CLIENTS} clients, {SECONDS:g}s, seed {SEED}, server {srv.log_path}")
    users = [User(f"s{i}") for i in range(CLIENTS)]
    soak = Soak(srv, users, rng)

    async def warm_up():  # SQLite opens its WAL files on first use: take the fd baseline after
        async with websockets.connect(srv.chat_url("warmup")) as ws:
            while json.loads(await ws.recv())["type"] != "replayed":
                pass
    asyncio.run(warm_up())
    wait_for(lambda: srv.db_rows("SELECT count(*) FROM sessions WHERE ended_at IS NULL")[0][0]
             == 0, 5)
    time.sleep(0.2)
    fd0, rss0 = srv.fd_count(), srv.rss_kib()
    attackers = Attackers(srv, API_KEY) if ATTACKS else None
    t0 = time.time()
    try:
        if attackers:
            attackers.start()

        async def run():
            deadline = time.time() + SECONDS
            await asyncio.gather(*(soak.client(u, deadline) for u in users))
            for _, ws in soak.abandoned:
                ws.transport.abort()
            await asyncio.sleep(0.1)
        asyncio.run(run())
        if attackers:
            attackers.finish()
        chaos = time.time() - t0
        print(f"chaos phase over after {chaos:.1f}s", flush=True)
        # every silent connection is given up by the heartbeat (1s + 1s) or was aborted by now
        wait_for(lambda: srv.db_rows("SELECT count(*) FROM sessions WHERE ended_at IS NULL")[0][0]
                 == 0, 10)
        mid = srv.db_rows(f"SELECT count(*), count(delivered_at) FROM {direct_state(srv)}")[0]
        rss1 = srv.rss_kib()

        async def final():
            for u in users:  # one by one: a resend must not land after its recipient collected
                await soak.collect(u)
            for u in users:  # a second pass picks up what the resends of later users delivered
                await soak.collect(u)
        asyncio.run(final())
        wait_for(lambda: srv.db_rows("SELECT count(*) FROM sessions WHERE ended_at IS NULL")[0][0]
                 == 0, 10)
        wait_for(lambda: srv.fd_count() <= fd0, 15)  # the last close handshakes finish
        fd1 = srv.fd_count()
        rss2 = srv.rss_kib()
        if rss2 - rss0 > RSS_SLACK_KIB and not sanitized_build():
            soak.violations.append(f"server RSS {rss0} KiB at start, {rss2} KiB at the end")
        fd_list = sorted(os.readlink(f"/proc/{srv.proc.pid}/fd/{f}")
                         for f in os.listdir(f"/proc/{srv.proc.pid}/fd"))
        figures = check(soak, srv)
    finally:
        rc = srv.stop()
    log = srv.log()
    for mark in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        if mark in log:
            soak.violations.append(f"sanitizer report in {srv.log_path}: {mark}")
    if rc != 0:
        soak.violations.append(f"server exited with {rc}")
    if fd1 > fd0:
        soak.violations.append(f"server fds {fd0} at start, {fd1} at the end: {fd_list}")

    s = soak.stats
    print(f"chaos phase {chaos:.1f}s: {s['connections']} connections, {s['sends']} sends, drops "
          f"clean {s['drop clean']} / reset {s['drop reset']} / silent {s['drop silent']}, "
          f"{s['connect failures']} connect failures")
    print(f"after chaos: direct messages {mid[0]}: delivered (acked) {mid[1]} + undelivered "
          f"{mid[0] - mid[1]}; server RSS {rss0} -> {rss1} KiB")
    print(f"stored {figures['rows stored']} rows = {figures['receipts']} receipts "
          f"({figures['direct']} direct, {figures['room']} room); duplicate receipts (resends) "
          f"{s['duplicate receipts']}")
    print(f"at the end: delivered {figures['delivered']} + undelivered {figures['undelivered']} = "
          f"{figures['direct']} direct; room deliveries owed {figures['room owed']}, missing "
          f"{figures['room missing']}; fds {fd0} -> {fd1}")
    print(f"session end reasons: {figures['end reasons']}; server RSS at the end {rss2} KiB")
    if attackers:
        print("attacks beside them: " + ", ".join(f"{k} {v}" for k, v in attackers.counts.items()))
    if soak.violations:
        print(f"soak: FAILED, {len(soak.violations)} violations:")
        for line in soak.violations[:40]:
            print("  " + line)
        return 1
    print("soak: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
