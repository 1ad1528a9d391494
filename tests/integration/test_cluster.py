"""
test_cluster.py -- cluster mode (issue 15): three wsproxy nodes sharing one real PostgreSQL (initdb +
pg_ctl in a temp dir, started here), each on its own loopback ports. Cross-node delivery of direct
and room messages, API pushes, broadcasts, kicks and receipts; acks seen by every node; presence
across nodes; kill -9 of a node with messages in flight (nothing with a receipt is lost) and its
users turning offline within the lease; the killed node restarting and rejoining.
"""
import asyncio
import itertools
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid

import pytest
import websockets

from conftest import assert_clean_log
from wsp import ROOT, Server, wait_api
from test_api import api

WAIT = 8  # seconds: bound of every single wait
LEASE_MS = 3000  # [cluster] lease of these nodes: a killed node is swept within lease + lease/3
PGTMP = os.path.join(ROOT, "scripts", "pgtmp.sh")

pytestmark = pytest.mark.skipif(
    not any(os.path.exists(f"/usr/lib/postgresql/{v}/bin/initdb") for v in range(12, 20)),
    reason="PostgreSQL server binaries are not installed (make test installs them)")

_dbs = itertools.count()


PG_DIRS = {}  # conninfo -> the server's directory (its postmaster.pid)


@pytest.fixture(scope="module")
def pg():
    """One PostgreSQL server for the module; yields a conninfo without dbname."""
    # directly under /tmp: the server runs as user postgres, which cannot enter pytest's 0700 dirs
    top = tempfile.mkdtemp(prefix="wsp-cluster-pg-")
    os.chmod(top, 0o755)
    d = os.path.join(top, "pg")
    out = subprocess.run(["bash", PGTMP, "start", d], check=True, capture_output=True, text=True)
    dsn = out.stdout.strip().rsplit(" dbname=", 1)[0]
    PG_DIRS[dsn] = d
    yield dsn
    subprocess.run(["bash", PGTMP, "stop", d], check=False, capture_output=True)
    os.rmdir(os.path.dirname(d))


def psql(dsn, db, sql):
    args = dict(kv.split("=", 1) for kv in dsn.split())
    return subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-h", args["host"], "-p",
                           args["port"], "-d", db, "-qAtc", sql],
                          check=True, capture_output=True, text=True).stdout


@pytest.fixture
def cluster(pg, tmp_path):
    """Factory: node(i) starts (or returns) node i of a cluster on a fresh database."""
    db = f"wsp_cluster_{os.getpid()}_{next(_dbs)}"
    psql(pg, "postgres", f"CREATE DATABASE {db}")
    dsn = f"{pg} dbname={db}"
    nodes = {}

    class Cluster:
        dsn_ = dsn
        pg_dir = PG_DIRS[pg]

        def node(self, i, start=True, **store):
            if i not in nodes:
                d = tmp_path / f"n{i}"
                d.mkdir(exist_ok=True)
                nodes[i] = Server(str(d), store={"backend": "postgresql", "dsn": dsn, **store},
                                  cluster={"node_name": f"n{i}", "lease": f"{LEASE_MS}ms",
                                           "poll": "100ms"})
                if start:
                    nodes[i].start()
            return nodes[i]

        def sql(self, q):
            return psql(pg, db, q)

    yield Cluster()
    for s in nodes.values():
        s.stop()
    for s in nodes.values():
        assert_clean_log(s)  # ASan/UBSan builds: a report in a node's log fails the test
    psql(pg, "postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


class Client:
    def __init__(self, ws, welcome, replay):
        self.ws, self.welcome, self.replay = ws, welcome, replay

    async def send(self, **f):
        await self.ws.send(json.dumps(f))

    async def recv(self, timeout=WAIT):
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def expect(self, type_, timeout=WAIT, skip=("presence", "member")):
        while True:
            f = await self.recv(timeout)
            if f.get("type") in skip and type_ not in skip:
                continue
            if f.get("type") == type_:
                return f
            raise AssertionError(f"expected {type_}, got {f}")

    async def until(self, pred, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("condition not met in time")
            f = await self.recv(left)
            if pred(f):
                return f

    async def close(self):
        await asyncio.wait_for(self.ws.close(), WAIT)


async def connect(srv, user):
    ws = await asyncio.wait_for(websockets.connect(srv.chat_url(user)), WAIT)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert welcome["type"] == "welcome", welcome
    replay = []
    while True:
        f = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if f["type"] == "replayed":
            return Client(ws, welcome, replay)
        replay.append(f)


def test_cluster_dm_from_node1_to_node2_arrives_live(cluster):
    n1, n2 = cluster.node(1), cluster.node(2)

    async def body():
        bob = await connect(n2, "bob")
        alice = await connect(n1, "alice")
        await alice.send(type="send", to="bob", body={"t": "hi"}, cid="c1")
        sent = await alice.expect("sent")
        m = await bob.expect("msg")
        assert (m["id"], m["from"], m["body"], m["cid"]) == (sent["id"], "alice", {"t": "hi"}, "c1")
        # bob acks on node 2: the receipt reaches alice on node 1
        await bob.send(type="ack", id=m["id"])
        d = await alice.expect("delivered")
        assert (d["id"], d["to"], d["cid"]) == (sent["id"], "bob", "c1")
        # and the reply goes the other way
        await bob.send(type="send", to="alice", body="back", cid="b1")
        await bob.expect("sent")
        assert (await alice.expect("msg"))["body"] == "back"
        await alice.close()
        await bob.close()

    run(body())


def test_cluster_room_spanning_three_nodes(cluster):
    ns = [cluster.node(i) for i in (1, 2, 3)]

    async def body():
        cs = [await connect(n, u) for n, u in zip(ns, ("ann", "ben", "cat"))]
        for c in cs:
            await c.send(type="join", room="lobby")
            await c.expect("joined")
        await cs[0].send(type="send", room="lobby", body="hello all", cid="r1")
        sent = await cs[0].expect("sent")
        for c in cs[1:]:
            m = await c.expect("msg")
            assert (m["id"], m["from"], m["room"], m["body"]) == (sent["id"], "ann", "lobby",
                                                                  "hello all")
        for c in cs:
            await c.close()

    run(body())


def test_cluster_api_push_on_node1_reaches_user_on_node3(cluster):
    n1, n3 = cluster.node(1), cluster.node(3)
    wait_api(n1)

    async def body():
        carol = await connect(n3, "carol")
        r = await asyncio.to_thread(api, n1, "POST", "/api/v1/push",
                                    {"to": "carol", "body": {"n": 1}})
        assert r.status == 202, r.body
        m = await carol.expect("msg")
        assert m["id"] == r.json()["id"] and m["body"] == {"n": 1} and m.get("via") == "api"
        # a broadcast through node 1 reaches node 3's connections too
        r = await asyncio.to_thread(api, n1, "POST", "/api/v1/push",
                                    {"broadcast": True, "body": {"reload": True}})
        assert r.status == 202, r.body
        f = await carol.until(lambda f: f.get("type") == "broadcast" and f.get("body") == {"reload": True})
        assert f["from"]
        await carol.close()

    run(body())


def test_cluster_kick_through_another_nodes_api(cluster):
    n1, n2 = cluster.node(1), cluster.node(2)
    wait_api(n1)

    async def body():
        dave = await connect(n2, "dave")
        sid = dave.welcome["session"]
        r = await asyncio.to_thread(api, n1, "DELETE", f"/api/v1/sessions/{sid}")
        assert r.status == 204, r.body
        with pytest.raises(websockets.ConnectionClosed) as e:
            await asyncio.wait_for(dave.ws.recv(), WAIT)
        assert e.value.rcvd.code == 1008 and e.value.rcvd.reason == "kicked"

    run(body())


def test_cluster_ack_on_one_node_stops_replay_on_another(cluster):
    n1, n2, n3 = cluster.node(1), cluster.node(2), cluster.node(3)

    async def body():
        alice = await connect(n1, "alice")
        ids = []
        for i in range(3):
            await alice.send(type="send", to="erin", body=i, cid=f"a{i}")
            ids.append((await alice.expect("sent"))["id"])
        erin = await connect(n2, "erin")  # offline until now: gets them as replay
        assert [f["id"] for f in erin.replay if f["type"] == "msg"] == ids
        await erin.send(type="ack", id=ids[0])
        await erin.send(type="ack", id=ids[1])
        await erin.send(type="presence", users=["x"], rid="sync")  # a round trip: acks committed
        await erin.expect("presence", skip=())
        await erin.close()
        again = await connect(n3, "erin")
        assert [f["id"] for f in again.replay if f["type"] == "msg"] == [ids[2]]
        await again.close()
        await alice.close()

    run(body())


def test_cluster_presence_across_nodes(cluster):
    n1, n2 = cluster.node(1), cluster.node(2)
    wait_api(n1)

    async def body():
        fay = await connect(n1, "fay")
        await fay.send(type="join", room="club")
        await fay.expect("joined")
        gus = await connect(n2, "gus")
        await gus.send(type="join", room="club")
        await gus.expect("joined")
        # gus's second device, on node 1: no "online" news (already online), and the API on
        # node 1 counts both connections
        gus2 = await connect(n1, "gus")
        j = (await asyncio.to_thread(api, n1, "GET", "/api/v1/presence?users=gus")).json()
        assert j["users"][0]["state"] == "online" and j["users"][0]["connections"] == 2
        await gus.close()  # still online on node 1: fay hears nothing
        await gus2.close()  # now gone everywhere: fay on node 1 hears it
        f = await fay.until(lambda f: f.get("type") == "presence" and f.get("user") == "gus")
        assert f["state"] == "offline", f
        j = (await asyncio.to_thread(api, n2, "GET", "/api/v1/presence?users=gus")).json()
        assert j["users"][0]["state"] == "offline"
        await fay.close()

    run(body())


def test_cluster_kill9_node_nothing_with_a_receipt_is_lost(cluster):
    """
    alice on node 1 streams DMs to bob on node 2; node 2 is killed mid-stream and bob reconnects to
    node 3: live frames plus the replay hold every message alice got a receipt for (dedupe by id).
    Then node 1 (the sender's) is killed mid-stream too: every receipt alice saw is in bob's inbox.
    """
    n1, n2, n3 = cluster.node(1), cluster.node(2), cluster.node(3)

    async def stream(sender, to, n, prefix, receipts, stop_at=None, kill=None):
        for i in range(n):
            await sender.send(type="send", to=to, body=i, cid=f"{prefix}{i}")
        try:
            while len(receipts) < n:
                f = await sender.recv()
                if f.get("type") == "sent":
                    receipts.add(f["id"])
                    if kill and len(receipts) == stop_at:
                        kill()
        except (websockets.ConnectionClosed, asyncio.TimeoutError):
            pass

    async def body():
        bob = await connect(n2, "bob")
        alice = await connect(n1, "alice")
        got = set()

        async def drain(c):
            try:
                while True:
                    f = await c.recv(WAIT)
                    if f.get("type") == "msg":
                        got.add(f["id"])
            except (websockets.ConnectionClosed, asyncio.TimeoutError):
                pass

        receipts = set()
        reader = asyncio.create_task(drain(bob))
        await stream(alice, "bob", 200, "k", receipts, stop_at=60, kill=n2.kill9)
        await reader
        assert len(receipts) == 200  # node 1 kept storing while bob's node died
        bob2 = await connect(n3, "bob")
        got |= {f["id"] for f in bob2.replay if f["type"] == "msg"}
        assert receipts <= got, f"lost: {sorted(receipts - got)[:10]}"
        for i in sorted(got):
            await bob2.send(type="ack", id=i)

        # now the sender's node dies with DMs in flight
        receipts2 = set()
        got2 = set()
        reader = asyncio.create_task(drain(bob2))
        await stream(alice, "bob", 300, "m", receipts2, stop_at=40, kill=n1.kill9)
        await reader
        assert len(receipts2) >= 40
        bob3 = await connect(n3, "bob")
        got2 |= {f["id"] for f in bob3.replay if f["type"] == "msg"}
        # live deliveries before the kill were not acked: all of them come back in the replay
        assert receipts2 <= got2, f"lost: {sorted(receipts2 - got2)[:10]}"
        await bob3.close()

    run(body())


def test_cluster_killed_nodes_users_go_offline_within_the_lease_and_node_rejoins(cluster):
    n1, n2 = cluster.node(1), cluster.node(2)
    wait_api(n1)

    async def body():
        hal = await connect(n1, "hal")
        await hal.send(type="join", room="ops")
        await hal.expect("joined")
        ivy = await connect(n2, "ivy")
        await ivy.send(type="join", room="ops")
        await ivy.expect("joined")
        sid = ivy.welcome["session"]
        t0 = time.monotonic()
        n2.kill9()
        # hal (node 1) is told ivy went offline once node 2's lease ran out and a sweep saw it
        f = await hal.until(lambda f: f.get("type") == "presence" and f.get("user") == "ivy",
                            timeout=LEASE_MS / 1000 * 2 + WAIT)
        took = time.monotonic() - t0
        assert f["state"] == "offline"
        assert took <= LEASE_MS / 1000 * 2 + 1, took
        j = (await asyncio.to_thread(api, n1, "GET", "/api/v1/presence?users=ivy")).json()
        assert j["users"][0]["state"] == "offline"
        r = (await asyncio.to_thread(api, n1, "GET", f"/api/v1/sessions/{sid}")).json()
        assert r["end_reason"] == "node_lost", r
        assert cluster.sql("SELECT state FROM nodes WHERE name = 'n2'").strip() == "lost"

        # node 2 restarts under its name and rejoins: up again, delivering across nodes
        n2.start()
        assert cluster.sql("SELECT state FROM nodes WHERE name = 'n2'").strip() == "up"
        ivy2 = await connect(n2, "ivy")
        await hal.send(type="send", to="ivy", body="welcome back", cid="wb")
        await hal.expect("sent")
        assert (await ivy2.expect("msg"))["body"] == "welcome back"
        await ivy2.close()
        await hal.close()

    run(body())


# ---- deploy/nginx/wsproxy-cluster.conf: nginx in front of two nodes, one of them killed ----

CLUSTER_SITE = os.path.join(ROOT, "deploy", "nginx", "wsproxy-cluster.conf")


def render_cluster_site(d, nodes, https_port, http_port, cert):
    from test_nginx import sub
    text = open(CLUSTER_SITE).read()
    for i, port in ((11, nodes[0].port), (12, nodes[1].port)):
        text = sub(text, f"server 10.0.0.{i}:8080 ", f"server 127.0.0.1:{port} ")
    for i, port in ((11, nodes[0].api_port), (12, nodes[1].api_port)):
        text = sub(text, f"server 10.0.0.{i}:8081 ", f"server 127.0.0.1:{port} ")
    text = sub(text, "    server 10.0.0.13:8080 max_fails=1 fail_timeout=10s;\n", "")
    text = sub(text, "    server 10.0.0.13:8081 max_fails=1 fail_timeout=10s;\n", "")
    text = sub(text, "    listen 80;\n", f"    listen 127.0.0.1:{http_port};\n")
    text = sub(text, "    listen [::]:80;\n", "")
    text = sub(text, "    listen 443 ssl http2;\n", f"    listen 127.0.0.1:{https_port} ssl http2;\n")
    text = sub(text, "    listen [::]:443 ssl http2;\n", "")
    text = sub(text, "/etc/letsencrypt/live/chat.example.com/fullchain.pem", cert[0])
    text = sub(text, "/etc/letsencrypt/live/chat.example.com/privkey.pem", cert[1])
    text = sub(text, "/var/log/nginx/wsproxy.access.log", os.path.join(d, "access.log"))
    text = sub(text, "/var/log/nginx/wsproxy.error.log", os.path.join(d, "error.log"))
    text = sub(text, "root /usr/share/wsproxy/web;", f"root {os.path.join(ROOT, 'web')};")
    return text


def test_cluster_behind_nginx_a_killed_nodes_client_reconnects_to_the_other(cluster, tmp_path):
    import ssl
    from test_nginx import NGINX, Nginx
    from wsp import free_port, make_token
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx is not installed")
    d = tmp_path / "certs"
    d.mkdir()
    crt, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", crt, "-days",
                    "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    n1, n2 = cluster.node(1), cluster.node(2)
    nd = str(tmp_path / "nginx")
    os.makedirs(nd)
    https_port, http_port = free_port(), free_port()
    ngx = Nginx(nd, render_cluster_site(nd, (n1, n2), https_port, http_port, (crt, key)),
                https_port, http_port).start()
    ctx = ssl.create_default_context(cafile=crt)

    async def via_nginx(user):
        ws = await websockets.connect(f"wss://127.0.0.1:{https_port}/ws?token={make_token(user)}",
                                      ssl=ctx, open_timeout=5, close_timeout=2)
        welcome = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        replay = []
        while True:
            f = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            if f["type"] == "replayed":
                return Client(ws, welcome, replay)
            replay.append(f)

    def node_of(session):
        return int(cluster.sql(f"SELECT node FROM sessions WHERE id = {int(session)}"))

    async def body():
        # least_conn spreads two clients over both nodes
        a = await via_nginx("ann")
        b = await via_nginx("bob")
        nodes = {node_of(a.welcome["session"]), node_of(b.welcome["session"])}
        assert len(nodes) == 2, nodes
        ids = dict(line.split("|") for line in cluster.sql("SELECT id, name FROM nodes").split())
        # bob's node dies; ann keeps sending to him through hers
        victim = n1 if ids[str(node_of(b.welcome["session"]))] == "n1" else n2
        victim.kill9()
        sent = []
        for i in range(5):
            await a.send(type="send", to="bob", body=i, cid=f"x{i}")
            sent.append((await a.expect("sent"))["id"])
        # bob reconnects through nginx, which skips the dead node, and gets all five
        b2 = await via_nginx("bob")
        assert [f["id"] for f in b2.replay if f["type"] == "msg"] == sent
        assert node_of(b2.welcome["session"]) != node_of(b.welcome["session"])
        await a.close()
        await b2.close()

    try:
        run(body())
    finally:
        ngx.stop()


def test_cluster_wsctl_reads_the_postgresql_store(cluster):
    """wsctl with a node's config: sessions (with their node), stats, nodes; backup refuses."""
    n1, n2 = cluster.node(1), cluster.node(2)
    wsctl = os.environ.get("WSCTL_BIN", os.path.join(os.path.dirname(os.path.abspath(
        os.environ.get("WSP_BIN", os.path.join(ROOT, "build", "wsproxy")))), "wsctl"))

    def ctl(*args):
        return subprocess.run([wsctl, "-c", n1.config_path, *args], capture_output=True, text=True,
                              timeout=20)

    async def body():
        kim = await connect(n2, "kim")
        r = ctl("--json", "sessions", "--active")
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)["sessions"]
        mine = [s for s in rows if s["user"] == "kim"]
        assert len(mine) == 1 and mine[0]["id"] == int(kim.welcome["session"])
        node2 = int(cluster.sql("SELECT id FROM nodes WHERE name = 'n2'"))
        assert mine[0]["node"] == node2
        r = ctl("stats")
        assert r.returncode == 0 and "postgresql" in r.stdout, r.stdout + r.stderr
        r = ctl("--json", "nodes")
        assert r.returncode == 0, r.stderr
        states = {n["name"]: n["state"] for n in json.loads(r.stdout)["nodes"]}
        assert states == {"n1": "up", "n2": "up"}
        r = ctl("backup", os.path.join(n1.dir, "copy.db"))
        assert r.returncode != 0 and "pg_dump" in r.stderr
        await kim.close()

    run(body())


def pg_pids(pg_dir):
    """The postmaster of the test server and its children."""
    with open(os.path.join(pg_dir, "data", "postmaster.pid")) as f:
        master = int(f.readline())
    pids = [master]
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == master:
                        pids.append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    return pids


def test_cluster_database_that_stops_answering_never_wedges_the_loop(cluster):
    """
    PostgreSQL frozen (SIGSTOP: connections open, no answers): a send fails with error internal
    (no receipt) after [store] pg_timeout, echo and pings go on being served throughout, and once
    the database answers again the same cid is stored (the node reconnected without waiting).
    """
    n1 = cluster.node(1, pg_timeout="300ms")

    async def body():
        alice = await connect(n1, "alice")
        echo = await asyncio.wait_for(websockets.connect(f"{n1.ws_url}/echo"), WAIT)
        await echo.send("warm")
        assert await asyncio.wait_for(echo.recv(), WAIT) == "warm"
        pids = pg_pids(cluster.pg_dir)
        for p in pids:
            os.kill(p, signal.SIGSTOP)
        try:
            await alice.send(type="send", to="bob", body="while frozen", cid="f1")
            # the loop keeps serving echo while the send waits for, then gives up on, the database
            for i in range(20):
                await echo.send(f"e{i}")
                assert await asyncio.wait_for(echo.recv(), WAIT) == f"e{i}"
            err = await alice.expect("error", timeout=WAIT)
            assert err["code"] == "internal" and err.get("cid") == "f1", err
            # later sends fail at once (no wait per call), echo still answers
            await alice.send(type="send", to="bob", body="still frozen", cid="f2")
            err = await alice.expect("error", timeout=WAIT)
            assert err["code"] == "internal", err
            await echo.send("alive")
            assert await asyncio.wait_for(echo.recv(), WAIT) == "alive"
        finally:
            for p in pids:
                os.kill(p, signal.SIGCONT)
        # back: the resend with the same cid is stored (the node reconnects on its own)
        deadline = time.monotonic() + 20
        while True:
            await alice.send(type="send", to="bob", body="while frozen", cid="f1")
            f = await alice.recv()
            while f.get("type") in ("presence", "member"):
                f = await alice.recv()
            if f.get("type") == "sent":
                break
            assert f.get("type") == "error" and f["code"] == "internal", f
            assert time.monotonic() < deadline, "the node did not reconnect"
            await asyncio.sleep(0.2)
        assert "postgresql" in n1.log()
        await echo.close()
        await alice.close()

    run(body())


def metric(srv, name):
    """A counter or gauge of srv's /metrics (answered at once, even while the store waits)."""
    r = api(srv, "GET", "/metrics")
    assert r.status == 200, r.body
    for line in r.body.decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise AssertionError(f"{name} not in /metrics")


def test_cluster_slow_database_delays_writes_and_serves_everything_else(cluster):
    """
    The store fiber (net/gate.h): a statement that waits on PostgreSQL (here a table lock another
    session holds) parks the fiber, not the loop. While it waits: echo answers, new connections are
    accepted, /metrics answers; chat frames wait their turn behind it. Once the lock goes, the DM is
    stored and delivered, its receipt comes after the COMMIT, and nothing on the serving path waited
    for the database on the loop itself (wsproxy_store_sync_waits_total stays 0).
    """
    n1 = cluster.node(1, pg_timeout="20s")
    wait_api(n1)
    import psycopg2

    async def body():
        alice = await connect(n1, "alice")
        bob = await connect(n1, "bob")
        echo = await asyncio.wait_for(websockets.connect(f"{n1.ws_url}/echo"), WAIT)
        await echo.send("warm")
        assert await asyncio.wait_for(echo.recv(), WAIT) == "warm"
        # a room message and a DM work as usual, and go through the fiber
        await alice.send(type="send", to="bob", body="before", cid="b0")
        await alice.expect("sent")
        assert (await bob.expect("msg"))["body"] == "before"
        syncs0 = await asyncio.to_thread(metric, n1, "wsproxy_store_sync_waits_total")
        parks0 = await asyncio.to_thread(metric, n1, "wsproxy_store_fiber_parks_total")

        locker = psycopg2.connect(cluster.dsn_)
        try:
            cur = locker.cursor()
            cur.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")  # held until commit
            await alice.send(type="send", to="bob", body="while locked", cid="s1")
            # more of them wait in alice's inbox behind it, in order
            for i in range(2, 52):
                await alice.send(type="send", to="bob", body=i, cid=f"s{i}")
            # the fiber is parked on the insert; the loop serves everything else
            for i in range(20):
                await echo.send(f"e{i}")
                assert await asyncio.wait_for(echo.recv(), WAIT) == f"e{i}"
            late = await asyncio.wait_for(websockets.connect(n1.chat_url("carol")), WAIT)
            assert await asyncio.to_thread(metric, n1, "wsproxy_store_fiber_parks_total") > parks0
            assert await asyncio.to_thread(metric, n1, "wsproxy_store_fiber_queue") >= 1
            # no receipt and no delivery while the insert cannot commit
            with pytest.raises(asyncio.TimeoutError):
                await alice.expect("sent", timeout=0.5)
            await echo.send("still")
            assert await asyncio.wait_for(echo.recv(), WAIT) == "still"
        finally:
            locker.commit()  # the lock goes
            locker.close()
        sent = await alice.expect("sent")
        m = await bob.expect("msg")
        assert (m["id"], m["body"], m["cid"]) == (sent["id"], "while locked", "s1")
        for i in range(2, 52):
            sent = await alice.expect("sent")
            m = await bob.expect("msg")
            assert (m["id"], m["body"], m["cid"], sent["cid"]) == (sent["id"], i, f"s{i}", f"s{i}")
        # carol's session, started while the fiber was busy, follows once it is free
        welcome = json.loads(await asyncio.wait_for(late.recv(), WAIT))
        assert welcome["type"] == "welcome", welcome
        await late.close()
        await echo.close()
        await alice.close()
        await bob.close()
        assert await asyncio.to_thread(metric, n1, "wsproxy_store_sync_waits_total") == syncs0 == 0

    run(body())


def test_cluster_serving_never_waits_for_the_database_on_the_loop(cluster):
    """
    Every path that reaches the store while serving (handshake, DMs, rooms, acks, history,
    presence, the API, closes, timers, cross-node delivery) runs on the store fiber: after a mixed
    workload on two nodes neither waited for PostgreSQL on the loop itself.
    """
    n1, n2 = cluster.node(1), cluster.node(2)
    wait_api(n1)
    wait_api(n2)

    async def body():
        a = await connect(n1, "ann")
        b = await connect(n2, "ben")
        for c in (a, b):
            await c.send(type="join", room="r")
            await c.expect("joined")
        await a.send(type="send", room="r", body="hi", cid="1")
        await a.expect("sent")
        m = await b.expect("msg")
        await b.send(type="ack", id=m["id"])
        await b.send(type="send", to="ann", body="dm", cid="2")
        await b.expect("sent")
        dm = await a.expect("msg")
        await a.send(type="ack", id=dm["id"])
        await a.send(**{"type": "history", "with": "ben", "rid": "h"})
        await a.until(lambda f: f.get("type") == "history" and f.get("rid") == "h")
        await a.send(type="presence", users=["ben"], rid="p")
        await a.until(lambda f: f.get("type") == "presence" and f.get("rid") == "p")
        r = await asyncio.to_thread(api, n2, "POST", "/api/v1/push", {"to": "ann", "body": 1})
        assert r.status == 202, r.body
        await a.until(lambda f: f.get("type") == "msg" and f.get("body") == 1)
        r = await asyncio.to_thread(api, n1, "GET", "/api/v1/sessions?user=ben")
        assert r.status == 200, r.body
        await b.send(type="leave", room="r")
        await b.until(lambda f: f.get("type") == "left")
        await a.close()
        await b.close()
        await asyncio.sleep(1.5)  # lease renewals, polls and the offline work of the closes
        for n in (n1, n2):
            assert await asyncio.to_thread(metric, n, "wsproxy_store_fiber_calls_total") > 0
            assert await asyncio.to_thread(metric, n, "wsproxy_store_sync_waits_total") == 0

    run(body())


def test_cluster_erasing_a_user_closes_their_connections_on_every_node(cluster):
    n1, n2 = cluster.node(1), cluster.node(2)
    wait_api(n1)

    async def body():
        a = await connect(n1, "lea")
        b = await connect(n2, "lea")
        r = await asyncio.to_thread(api, n1, "DELETE", "/api/v1/users/lea")
        assert r.status == 204, r.body
        for c in (a, b):
            with pytest.raises(websockets.ConnectionClosed) as e:
                while True:
                    await asyncio.wait_for(c.ws.recv(), WAIT)
            assert e.value.rcvd.code == 1008 and e.value.rcvd.reason == "kicked"
        await asyncio.sleep(0.3)  # the ends are written (or, erased, not written) by now
        assert cluster.sql("SELECT count(*) FROM sessions WHERE \"user\" = 'lea'").strip() == "0"
        assert cluster.sql("SELECT count(*) FROM presence WHERE \"user\" = 'lea'").strip() == "0"

    run(body())
