"""Many clients joining one room at once (issue 16): every member hears of every later joiner
exactly once and in one order, however many joins share a group commit, and the member events of a
join storm (quadratic up to presence_fanout_max) do not leave the server holding their memory."""
import asyncio
import json
import time

import pytest
import websockets

from wsp import sanitized_build


async def connect(srv, user):
    ws = await websockets.connect(srv.chat_url(user), max_queue=None)
    while json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "replayed":
        pass
    return ws


async def frames_until_answer(ws, rid):
    """Every frame before the answer to a presence query with rid (which flushes what came before)."""
    await ws.send(json.dumps({"type": "presence", "users": ["nobody"], "rid": rid}))
    seen = []
    while True:
        f = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if f.get("rid") == rid:
            return seen
        seen.append(f)


def test_member_events_of_joins_in_one_commit_arrive_once_and_in_order(make_server):
    srv = make_server(limits={"rate": "0"}).start()
    n = 40

    async def body():
        clients = [await connect(srv, f"u{i:02d}") for i in range(n)]
        # every join at once: many of them are read in one loop iteration, one commit
        await asyncio.gather(*(ws.send(json.dumps({"type": "join", "room": "hall"}))
                               for ws in clients))
        heard = []
        got = [await frames_until_answer(ws, f"r{i}") for i, ws in enumerate(clients)]

        # The answer is a barrier on its own connection only: another connection's join may be
        # read after this query (with PostgreSQL every join costs round trips, so the server reads
        # the joins over several loop iterations). Take what is still on its way, all at once.
        async def late(ws, frames):
            while True:
                try:
                    frames.append(json.loads(await asyncio.wait_for(ws.recv(), 0.5)))
                except asyncio.TimeoutError:
                    return

        await asyncio.gather(*(late(ws, got[i]) for i, ws in enumerate(clients)))
        for i, ws in enumerate(clients):
            frames = got[i]
            assert sum(f["type"] == "joined" for f in frames) == 1
            heard.append([f["user"] for f in frames if f["type"] == "member"])
            assert all(f["event"] == "joined" and f["room"] == "hall"
                       for f in frames if f["type"] == "member")
        for ws in clients:
            await ws.close()
        return heard

    heard = asyncio.run(body())
    # a member hears of exactly those who joined after it: each list is a suffix of the first
    # joiner's, which names everyone else once
    first = max(heard, key=len)
    assert len(first) == n - 1 and len(set(first)) == n - 1
    for i, users in enumerate(heard):
        assert f"u{i:02d}" not in users
        assert users == first[len(first) - len(users):], f"u{i:02d} heard {users}"
    assert sorted(len(u) for u in heard) == list(range(n))


@pytest.mark.skipif(sanitized_build(), reason="ASan's allocator inflates RSS; measured on the plain build")
def test_join_storm_memory_stays_bounded(make_server):
    # 400 joins in about a second: 79,800 member events. Each once cost a 1 KiB buffer chain per
    # recipient while it waited for the commit (200 KiB per connection at the peak), kept for good.
    srv = make_server(limits={"rate": "0", "max_connections_per_ip": "1000"},
                      log={"level": "warn"}).start()
    n = 400

    async def body():
        rss0 = srv.rss_kib()
        clients = [await connect(srv, f"s{i:03d}") for i in range(n)]
        peak = srv.rss_kib()
        counts = [0] * n
        done = asyncio.Event()

        async def reader(i, ws):
            async for data in ws:
                if data.startswith('{"type":"member"'):
                    counts[i] += 1
                    if sum(counts) == n * (n - 1) // 2:
                        done.set()

        async def sampler():
            nonlocal peak
            while not done.is_set():
                peak = max(peak, srv.rss_kib())
                await asyncio.sleep(0.01)

        readers = [asyncio.ensure_future(reader(i, ws)) for i, ws in enumerate(clients)]
        sampling = asyncio.ensure_future(sampler())
        for i, ws in enumerate(clients):
            await ws.send(json.dumps({"type": "join", "room": "storm"}))
            if i % 40 == 39:
                await asyncio.sleep(0.1)
        try:
            await asyncio.wait_for(done.wait(), 60)
        except asyncio.TimeoutError:
            pass
        sampling.cancel()
        assert done.is_set(), f"{sum(counts)} of {n * (n - 1) // 2} member events"
        await asyncio.sleep(2.5)  # the server gives freed heap back once a second
        after = srv.rss_kib()
        for r in readers:
            r.cancel()
        for ws in clients:
            await ws.close()
        return rss0, peak, after

    rss0, peak, after = asyncio.run(body())
    per_peak, per_after = (peak - rss0) / n, (after - rss0) / n
    print(f"\njoin storm of {n}: RSS per connection peak {per_peak:.1f} KiB, after {per_after:.1f} KiB")
    assert per_peak < 20, f"peak {per_peak:.1f} KiB per connection"
    assert per_after < 12, f"after {per_after:.1f} KiB per connection"


@pytest.mark.skipif(sanitized_build(), reason="ASan's allocator inflates RSS; measured on the plain build")
def test_idle_room_members_cost_under_2_5_kib_each(make_server):
    # Issue 16's idle row: connections that joined one room and stay idle. What one more costs
    # (after 20 that page in the server's one-time costs) is its struct conn, chat state, registry
    # entries and session and membership rows: about 1.9 KiB measured. Each plain-TCP WebSocket
    # used to keep its bufferevent, two evbuffers and their callbacks too (about 1 KiB: 2.7-2.9).
    # no member events: the clients do not read, and this measures what stays, not what is in flight
    srv = make_server(limits={"rate": "0", "max_connections_per_ip": "2000",
                              "max_connections": "2000", "presence_fanout_max": "0"},
                      log={"level": "warn"}).start()
    from test_rooms import Client

    warm = [Client(srv, f"w{i:02d}") for i in range(20)]
    for c in warm:
        assert c.join("lobby")["type"] == "joined"
    time.sleep(1.2)  # the once-a-second trim has run
    before = srv.rss_kib()
    n = 1000
    clients = []
    for i in range(n):
        c = Client(srv, f"i{i:04d}")
        assert c.join("lobby")["type"] == "joined"
        clients.append(c)
    time.sleep(1.2)
    per = (srv.rss_kib() - before) / n
    print(f"\nRSS per idle room member: {per:.2f} KiB")
    assert per < 2.5
    for c in clients + warm:
        c.s.close()
