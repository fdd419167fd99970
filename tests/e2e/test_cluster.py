"""A cluster of hosts on one Redis (CONTRACT 10), with a real redis-server on a free
port: a push on node 3 reaches a user's tabs on nodes 1 and 2; a user created on node 1
resumes on node 2; a push while the user is offline is queued in Redis and delivered on
reconnect to node 3; a room with members on every node; a node killed with -9 leaves presence
within 10 s; Redis stopped then killed: local service goes on, cross-node sends answer 503 /
CLOUD_EUNAVAIL with one log line, and a new Redis heals the cluster without restarts; two
--reuse-port hosts on one port serve one user id across both. And what the bus may not do:
a forged PUBLISH on wshost:users gives no one a token; a push to a node killed before it
read the push is not lost and not said delivered; --max-users bounds the users in Redis and
on every node, also across a restart, whose join reads no whole hash."""

import asyncio
import hashlib
import re
import shutil

import websockets

from harness import *  # noqa: F401,F403

CLOUD_EUNAVAIL = -9


class Redis:
    """A throw-away redis-server on a free port (no persistence)."""

    def __init__(self, port=None, extra=()):
        self.port = port or free_port()
        self.proc = None
        self.extra = list(extra)
        self.password = None
        if "--requirepass" in self.extra:
            self.password = self.extra[self.extra.index("--requirepass") + 1]

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_until(lambda: self.ping(), timeout=10, what="redis-server to answer PING")
        return self

    def ping(self):
        try:
            return b"PONG" in self.call("PING")
        except OSError:
            return False

    def call(self, *args, timeout=2.0):
        """One command in RESP (after AUTH when the server wants a password); the raw reply."""
        if self.password:
            args = ("AUTH", self.password, *args)
        return self._call(*args, timeout=timeout)

    def _call(self, *args, timeout=2.0):
        cmds = [args[:2], args[2:]] if self.password else [args]
        req = b""
        for cmd in cmds:
            parts = [c if isinstance(c, bytes) else str(c).encode() for c in cmd]
            req += f"*{len(parts)}\r\n".encode() + b"".join(
                f"${len(x)}\r\n".encode() + x + b"\r\n" for x in parts)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(req)
            time.sleep(0.01)
            data = s.recv(65536)
        # AUTH's +OK comes first when a password was sent.
        return data[5:] if self.password and data.startswith(b"+OK\r\n") else data

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def node(redis, plugins=None, flags=()):
    return Host(plugins=plugins, flags=["--redis", redis.url, *flags])


def cluster_users(h):
    r = h.http("GET", "/_/users?cluster=1", auth=True)
    return r.json.get("users", []) if r.status == 200 else []


def wait_cluster_user(h, uid, present=True, timeout=10.0):
    wait_until(lambda: (uid in cluster_users(h)) == present, timeout=timeout,
               interval=0.1, what=f"user {uid} {'in' if present else 'gone from'} the cluster")


def wait_joined(*hosts):
    for h in hosts:
        h.wait_log("cluster: connected to", timeout=10)


async def test_push_from_node3_reaches_tabs_on_nodes_1_and_2():
    with Redis() as redis, node(redis) as h1, node(redis) as h2, node(redis) as h3:
        wait_joined(h1, h2, h3)
        ws1, g = await h1.user()
        uid, token = g["user_id"], g["token"]
        await async_wait_until(lambda: asyncio.to_thread(lambda: h2.sql(
            "SELECT 1 FROM users WHERE id = ?", (uid,))), timeout=10, what="node 2 to know the user")
        ws2, g2 = await h2.user(f"user_id={uid}&token={token}")
        assert g2["user_id"] == uid and g2["token"] is None, g2
        await asyncio.to_thread(wait_cluster_user, h3, uid)
        # Both tabs' nodes are registered before the push counts on them.
        await async_wait_until(lambda: asyncio.to_thread(
            lambda: sorted(redis.call("SCARD", f"wshost:un:{uid}").split()) == [b":2"]),
            timeout=10, what="both nodes in the user's presence")
        for i in range(5):
            r = await h3.apush(uid, f"m{i}")
            # Answered once Redis took it: no socket on node 3, two other nodes reached.
            assert r.status == 200 and r.json["delivered"] == 2, r
        _, got1 = await collect(ws1, 5, greeting_expected=False)
        _, got2 = await collect(ws2, 5, greeting_expected=False)
        assert got1 == got2 == [f"m{i}" for i in range(5)], (got1, got2)
        # The admin API answers once Redis did, with what it reached.
        r = await asyncio.to_thread(h3.push, uid, "via admin", True)
        assert r.status == 200 and r.json == {"delivered": 2}, r  # 0 sockets here + 2 nodes
        assert await recv(ws1) == "via admin" and await recv(ws2) == "via admin"
        # The operator's view of the whole cluster, from any node (its admin API).
        p = await asyncio.to_thread(subprocess.run, [
            sys.executable, os.path.join(SOURCE_DIR, "tools", "wshostctl"), "--url",
            f"http://127.0.0.1:{h3.port}", "--token", ADMIN_TOKEN, "--json", "users",
            "--cluster"], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        assert out["users"] == [uid] and len(out["nodes"]) == 3, out
        # online_users in each node's SQLite lists that node's users only.
        assert h1.online_users() == [uid] and h2.online_users() == [uid], "online_users"
        assert h3.online_users() == [], h3.online_users()
        await ws1.close()
        await ws2.close()


async def test_app_bound_user_is_cluster_wide():
    bind = {"__websocket__": tplugin("ws_bind"), "push": example("push")}
    with Redis() as redis, node(redis, bind) as h1, node(redis, bind) as h2:
        wait_joined(h1, h2)
        ws, g = await h1.user("name=alice&secret=letmein")
        assert g["user_id"] == "alice" and g["bind_rc"] == 0, g
        await asyncio.to_thread(wait_cluster_user, h2, "alice")
        await async_wait_until(lambda: asyncio.to_thread(lambda: h2.sql(
            "SELECT 1 FROM users WHERE id = 'alice'")), timeout=10, what="node 2 to know alice")
        r = await h2.apush("alice", "hi alice")
        assert r.status == 200, r
        assert await recv(ws) == "hi alice"
        # Unknown anywhere: 404, as on one node.
        r = await h2.apush("nobody-at-all", "x")
        assert r.status == 404, r
        await ws.close()


async def test_unix_socket_password_and_db_from_url_or_environment():
    sock = os.path.join(tempfile.mkdtemp(prefix="wshost-redis-"), "redis.sock")
    with Redis(extra=["--unixsocket", sock, "--unixsocketperm", "700",
                      "--requirepass", "s3cret"]) as redis:
        h1 = Host(flags=["--redis", f"unix://{sock}?db=3"], env={"WSHOST_REDIS_PASSWORD": "s3cret"})
        h2 = Host(flags=["--redis", f"redis://:s3cret@127.0.0.1:{redis.port}/3"])
        bad = Host(flags=["--redis", f"redis://:wrong@127.0.0.1:{redis.port}/3"])
        with h1, h2, bad:
            wait_joined(h1, h2)
            bad.wait_log("not reachable yet", timeout=10)
            assert "connected to" not in bad.log_since_start(), bad.log_tail()
            for h, pw in ((h2, "s3cret"), (bad, "wrong")):  # the host never logs the password
                lines = [ln for ln in h.log_since_start().splitlines() if "==== start" not in ln]
                assert not [ln for ln in lines if pw in ln], lines
            ws, g = await h1.user()
            await asyncio.to_thread(wait_cluster_user, h2, g["user_id"])
            r = await h2.apush(g["user_id"], "over a unix socket")
            assert r.status == 200 and await recv(ws) == "over a unix socket", r
            # db 3 holds the keys (SELECT from the URL on both kinds of URL).
            assert redis.call("SELECT", "3") == b"+OK\r\n"
            assert b"wshost:users" in redis.call("EVAL", "redis.call('SELECT', 3) "
                                                 "return redis.call('KEYS', 'wshost:users')", "0")
            await ws.close()
    # A URL the host cannot read stops it at start-up with a message.
    h = Host(flags=["--redis", "http://nope"])
    h.start(wait=False)
    assert h.wait_exit(10) != 0
    assert "--redis: cannot read" in h.log(), h.log_tail()


async def test_resume_on_node2_with_token_from_node1():
    with Redis() as redis, node(redis) as h1, node(redis) as h2:
        wait_joined(h1, h2)
        ws, g = await h1.user()
        uid, token = g["user_id"], g["token"]
        await ws.close()
        await async_wait_until(lambda: asyncio.to_thread(lambda: h2.sql(
            "SELECT 1 FROM users WHERE id = ?", (uid,))), timeout=10, what="node 2 to know the user")
        ws, g = await h2.user(f"user_id={uid}&token={token}")
        assert g["user_id"] == uid and g["token"] is None, g
        await ws.close()
        # A wrong token still never yields the id.
        ws, g = await h2.user(f"user_id={uid}&token={'A' * 43}")
        assert g["user_id"] != uid, g
        await ws.close()


async def test_offline_push_on_node2_delivered_on_node3():
    with Redis() as redis, node(redis) as h1, node(redis) as h2, node(redis) as h3:
        wait_joined(h1, h2, h3)
        ws, g = await h1.user()
        uid, token = g["user_id"], g["token"]
        await ws.close()
        await asyncio.to_thread(wait_cluster_user, h2, uid, False)
        r = await asyncio.to_thread(h2.push, uid, "queued 0", True)
        assert r.status == 200 and r.json == {"delivered": 0}, r
        assert redis.call("LLEN", f"wshost:ob:{uid}") == b":1\r\n"  # answered once queued
        for i in range(1, 4):
            r = await h2.apush(uid, f"queued {i}")
            assert r.status == 200, r
        await async_wait_until(lambda: asyncio.to_thread(
            lambda: redis.call("LLEN", f"wshost:ob:{uid}") == b":4\r\n"), timeout=10,
            what="4 messages in the cluster outbox")
        await async_wait_until(lambda: asyncio.to_thread(lambda: h3.sql(
            "SELECT 1 FROM users WHERE id = ?", (uid,))), timeout=10, what="node 3 to know the user")
        ws, others = await h3.ws(f"user_id={uid}&token={token}"), None
        g, others = await collect(ws, 4)
        assert g["user_id"] == uid and others == [f"queued {i}" for i in range(4)], (g, others)
        # Acknowledged once delivered: the outbox empties, nothing comes twice.
        await async_wait_until(lambda: asyncio.to_thread(
            lambda: redis.call("LLEN", f"wshost:ob:{uid}") == b":0\r\n"), timeout=10,
            what="the cluster outbox to empty")
        await no_message(ws)
        await ws.close()


async def test_example_push_answers_once_redis_took_it_and_says_507_when_full():
    """The example /push defers its answer until Redis replied (cloud_deferred_send_to_user):
    a queued push is in Redis when the caller hears 200, a full cluster outbox is a 507."""
    flags = ["--outbox-max", "2"]
    with Redis() as redis, node(redis, flags=flags) as h1, node(redis, flags=flags) as h2:
        wait_joined(h1, h2)
        ws, g = await h1.user()
        uid = g["user_id"]
        await ws.close()
        await asyncio.to_thread(wait_cluster_user, h2, uid, False)
        for i in range(2):
            r = await h2.apush(uid, f"queued {i}")
            assert r.status == 200 and r.json == {"delivered": 0}, r
            assert redis.call("LLEN", f"wshost:ob:{uid}") == f":{i + 1}\r\n".encode()
        r = await h2.apush(uid, "one too many")
        assert r.status == 507 and r.json == {"error": "outbox full"}, r
        assert redis.call("LLEN", f"wshost:ob:{uid}") == b":2\r\n"
        r = await h2.apush("nobody-at-all", "x")
        assert r.status == 404, r
        # A user online on the other node: 200 with the node it reached.
        ws, g = await h1.user()
        await asyncio.to_thread(wait_cluster_user, h2, g["user_id"])
        r = await h2.apush(g["user_id"], "hello there")
        assert r.status == 200 and r.json == {"delivered": 1}, r
        assert await recv(ws) == "hello there"
        await ws.close()


async def rrecv(ws):
    """The next room message, also one cmd() read past."""
    kept = SKIPPED.get(id(ws))
    return kept.pop(0) if kept else await recv(ws)


async def test_room_with_members_on_every_node():
    rooms = {"__websocket__": tplugin("rooms_ws")}
    with Redis() as redis, node(redis, rooms) as h1, node(redis, rooms) as h2, \
            node(redis, rooms) as h3:
        wait_joined(h1, h2, h3)
        socks = [await h.ws() for h in (h1, h2, h3)]
        outsider = await h1.ws()  # in no room: gets broadcasts only
        for ws in socks:
            assert await cmd(ws, "join lobby") == "0"

        async def members():
            return json.loads(await cmd(socks[0], "members lobby"))

        deadline = time.monotonic() + 10
        while len(m := await members()) < 3:
            if time.monotonic() > deadline:
                raise Fail(f"members on node 1: {m}")
            await asyncio.sleep(0.2)
        assert sorted(x["sockets"] for x in m) == [1, 1, 1], m
        await asyncio.sleep(0.3)  # every node's SUBSCRIBE has been sent before its HSET
        # From node 2 to everyone in the room (sayall: the sender too).
        assert await cmd(socks[1], "sayall lobby hello") == "1"  # reached on its own node
        for ws in socks:
            assert await rrecv(ws) == "hello"
        await no_message(outsider)
        # Broadcast from node 3 reaches every socket of every node but the sender (except).
        assert await cmd(socks[2], "bcast all-hands") == "0"  # nobody else on node 3
        for ws in socks[:2] + [outsider]:
            assert await rrecv(ws) == "all-hands"
        await no_message(socks[2])
        # A member leaving on node 3 leaves the merged list.
        assert await cmd(socks[2], "leave lobby") == "0"
        deadline = time.monotonic() + 10
        while len(m := await members()) != 2:
            if time.monotonic() > deadline:
                raise Fail(f"members on node 1 after a leave: {m}")
            await asyncio.sleep(0.2)
        # Join, leave and join again in one read (SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE in one
        # write to Redis): the node still hears the room (hiredis 0.14 drops a channel's
        # callback when the UNSUBSCRIBE's answer comes).
        await socks[2].send("join lobby")
        await socks[2].send("leave lobby")
        await socks[2].send("join lobby")
        for want in ("ok join 0", "ok leave 0", "ok join 0"):
            assert await recv(socks[2]) == want
        deadline = time.monotonic() + 10
        while len(m := await members()) != 3:
            if time.monotonic() > deadline:
                raise Fail(f"members on node 1 after leave and join: {m}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.3)
        assert await cmd(socks[0], "sayall lobby again") == "1"
        assert await rrecv(socks[0]) == "again" and await rrecv(socks[1]) == "again"
        assert await rrecv(socks[2]) == "again"
        for ws in socks + [outsider]:
            await ws.close()


async def test_killed_node_leaves_presence_within_10s():
    with Redis() as redis, node(redis) as h1, node(redis) as h2:
        wait_joined(h1, h2)
        ws, g = await h1.user()
        uid, token = g["user_id"], g["token"]
        await asyncio.to_thread(wait_cluster_user, h2, uid)
        serving = h1.serving_pid()
        h1.kill9()
        os.kill(serving, signal.SIGKILL) if os.path.exists(f"/proc/{serving}") else None
        t0 = time.monotonic()
        await asyncio.to_thread(wait_cluster_user, h2, uid, False, 12.0)
        assert time.monotonic() - t0 <= 11.0, time.monotonic() - t0  # TTL 10 s + a read
        # Its users' presence sets lose it by themselves (bounded by live users, not by what
        # a killed node ever had), before any push to them prunes it.
        await async_wait_until(lambda: asyncio.to_thread(
            lambda: redis.call("EXISTS", f"wshost:un:{uid}") == b":0\r\n"), timeout=10,
            interval=0.2, what="the dead node gone from the user's presence set")
        # Its users count as offline: a push queues, and the user resumes on node 2 with it.
        r = await asyncio.to_thread(h2.push, uid, "while you were away", True)
        assert r.status == 200 and r.json == {"delivered": 0}, r
        ws2 = await h2.ws(f"user_id={uid}&token={token}")
        g, others = await collect(ws2, 1)
        assert g["user_id"] == uid and others == ["while you were away"], (g, others)
        await ws2.close()


async def test_a_node_taken_for_dead_registers_its_users_again():
    """A node whose heartbeat lapsed (its loop stalled, or Redis lost the key) was taken out of
    its users' presence by the others' heartbeats; its next beat sees that and puts them back,
    so pushes to its users go live again instead of queueing until they reconnect."""
    with Redis() as redis, node(redis) as a, node(redis) as b:
        wait_joined(a, b)
        ws, g = await b.user()
        uid = g["user_id"]
        await asyncio.to_thread(wait_cluster_user, a, uid)
        nid = re.search(r"cluster: node ([0-9a-f]{16}) joining", b.log_since_start()).group(1)
        # What the other nodes' beats do to a node without a heartbeat.
        redis.call("DEL", f"wshost:node:{nid}", f"wshost:nu:{nid}", f"wshost:un:{uid}")
        await async_wait_until(lambda: asyncio.to_thread(
            lambda: redis.call("SISMEMBER", f"wshost:un:{uid}", nid) == b":1\r\n"),
            timeout=10, interval=0.2, what="node B to register its user again")
        assert "was taken for dead" in b.log_since_start(), b.log_tail()
        r = await asyncio.to_thread(a.push, uid, "live again", True)
        assert r.status == 200, r
        assert await recv(ws) == "live again"
        await ws.close()

async def test_redis_stopped_then_killed_then_back_heals():
    with Redis() as redis, node(redis) as h1, node(redis) as h2:
        wait_joined(h1, h2)
        ws1, g1 = await h1.user()
        ws2, g2 = await h2.user()
        u1, u2 = g1["user_id"], g2["user_id"]
        await asyncio.to_thread(wait_cluster_user, h1, u2)
        r = await h1.apush(u2, "before")
        assert r.status == 200 and await recv(ws2) == "before", r
        os.kill(redis.proc.pid, signal.SIGSTOP)
        for h in (h1, h2):
            h.wait_log("unreachable", timeout=10)
        # Each node keeps serving its own connections; local pushes work.
        await ws1.send("ping")
        assert await recv(ws1) == "I have received your message"
        r = await h1.apush(u1, "local")
        assert r.status == 200 and r.json["delivered"] == 1, r
        assert await recv(ws1) == "local"
        # Cross-node sends fail clearly: 503 from /push (CLOUD_EUNAVAIL) and /_/push.
        r = await h1.apush(u2, "lost?")
        assert r.status == 503 and r.json["error"] == "cluster unavailable", r
        r = await asyncio.to_thread(h1.push, u2, "lost?", True)
        assert r.status == 503, r
        await no_message(ws2)
        # A tab opened during the outage gets local pushes too (its outbox waits for Redis).
        tab = await h1.ws(f"user_id={u1}&token={g1['token']}")
        assert json.loads(await recv(tab))["user_id"] == u1
        r = await h1.apush(u1, "both tabs")
        assert r.status == 200 and r.json["delivered"] == 2, r
        assert await recv(ws1) == "both tabs" and await recv(tab) == "both tabs"
        await tab.close()
        # New users still work on each node (announced to the others when Redis is back).
        ws3, g3 = await h2.user()
        assert USER_ID_RE.match(g3["user_id"]), g3
        await ws3.close()
        os.kill(redis.proc.pid, signal.SIGKILL)
        redis.proc.wait(5)
        await asyncio.sleep(1.0)
        for h in (h1, h2):  # one line per outage
            assert h.log_since_start().count("unreachable") == 1, h.log_tail()
        # Redis back (empty: killed, no persistence): the nodes reconnect and re-register.
        redis.start()  # same port, the same Redis object stops it at the end
        for h in (h1, h2):
            h.wait_log("is back after", timeout=15)
        await asyncio.to_thread(wait_cluster_user, h1, u2)
        r = await h1.apush(u2, "after")
        assert r.status == 200, r
        assert await recv(ws2) == "after"
        r = await h2.apush(u1, "after too")
        assert r.status == 200 and await recv(ws1) == "after too", r
        # The user created on node 2 during the outage resumes on node 1.
        u3 = g3["user_id"]
        await async_wait_until(lambda: asyncio.to_thread(lambda: h1.sql(
            "SELECT 1 FROM users WHERE id = ?", (u3,))), timeout=10, what="node 1 to know it")
        ws3, g = await h1.user(f"user_id={u3}&token={g3['token']}")
        assert g["user_id"] == u3, g
        await ws3.close()
        await ws1.close()
        await ws2.close()


async def test_two_reuse_port_hosts_share_a_port_and_a_user():
    with Redis() as redis:
        port = free_port()
        flags = ["--port", str(port), "--reuse-port"]
        with node(redis, flags=flags) as a, node(redis, flags=flags) as b:
            assert a.port == b.port == port, (a.port, b.port)
            wait_joined(a, b)
            ws, g = await a.user()
            uid, token = g["user_id"], g["token"]
            await async_wait_until(lambda: asyncio.to_thread(lambda: all(h.sql(
                "SELECT 1 FROM users WHERE id = ?", (uid,)) for h in (a, b))), timeout=10,
                what="both hosts to know the user")
            tabs = [ws]
            # The kernel spreads connections over both: open tabs until each host has one.
            for _ in range(60):
                if uid in a.online_users() and uid in b.online_users():
                    break
                t, g = await a.user(f"user_id={uid}&token={token}")
                assert g["user_id"] == uid, g
                tabs.append(t)
            assert uid in a.online_users() and uid in b.online_users(), len(tabs)
            await asyncio.to_thread(wait_until, lambda: sorted(redis.call(
                "SMEMBERS", f"wshost:un:{uid}").split(b"\r\n")[0:1]) == [b"*2"], 10, 0.1,
                "both hosts in the user's presence")
            r = await a.apush(uid, "to every tab")
            assert r.status == 200, r
            for t in tabs:
                assert await recv(t) == "to every tab"
            for t in tabs:
                await t.close()


async def test_forged_publish_on_the_users_channel_gives_no_one_a_token():
    """Anyone who can PUBLISH on the Redis sends "alice <sha256(mytoken)>" on wshost:users:
    no node takes a token hash from the channel (it reads the hash key itself, and never
    changes a user it has), so ?user_id=alice&token=mytoken is not alice anywhere."""
    bind = {"__websocket__": tplugin("ws_bind"), "push": example("push")}
    with Redis() as redis, node(redis, bind) as h1, node(redis, bind) as h2:
        wait_joined(h1, h2)
        ws, g = await h1.user("name=alice&secret=letmein")
        assert g["user_id"] == "alice" and g["bind_rc"] == 0, g
        await ws.close()
        for h in (h1, h2):
            await async_wait_until(lambda: asyncio.to_thread(lambda: h.sql(
                "SELECT 1 FROM users WHERE id = 'alice'")), timeout=10, what="alice on the node")
        token = "mytoken-" + "A" * 35
        forged = hashlib.sha256(token.encode()).hexdigest()
        assert int(redis.call("PUBLISH", "wshost:users", f"alice {forged}")[1:]) == 2
        # A user Redis never heard of, announced with a hash: no node creates it.
        assert int(redis.call("PUBLISH", "wshost:users", f"mallory {forged}")[1:]) == 2
        await asyncio.sleep(0.5)
        for h in (h1, h2):
            assert h.sql("SELECT token_hash FROM users WHERE id = 'alice'") == [(None,)], h.port
            assert h.sql("SELECT 1 FROM users WHERE id = 'mallory'") == [], h.port
            for who in ("alice", "mallory"):
                ws, g = await h.user(f"user_id={who}&token={token}")
                assert g["user_id"] != who, (h.port, g)  # a new user, never the forged one
                await ws.close()
            assert "refused: unknown user or wrong token" in h.log_since_start(), h.log_tail()
        # The real path still works: alice as the app binds her, on either node.
        ws, g = await h2.user("name=alice&secret=letmein")
        assert g["user_id"] == "alice", g
        await ws.close()


async def test_kill9_of_the_users_node_loses_no_push_answered_200():
    """A stream of pushes from node A to a user on node B; B stops (SIGSTOP: it reads nothing
    more, as a node dying does) and is killed with -9; the user resumes on node C. Every push
    answered 200 reaches the user (on B before it died, or on C), and a push B never took is
    not answered "delivered"."""
    with Redis() as redis, node(redis) as a, node(redis) as b, node(redis) as c:
        wait_joined(a, b, c)
        ws, g = await b.user()
        uid, token = g["user_id"], g["token"]
        for h in (a, c):
            await async_wait_until(lambda: asyncio.to_thread(lambda: h.sql(
                "SELECT 1 FROM users WHERE id = ?", (uid,))), timeout=10, what="the user known")
        await asyncio.to_thread(wait_cluster_user, a, uid)
        got = []

        async def read_b():
            try:
                while True:
                    got.append(await ws.recv())
            except Exception:  # noqa: BLE001 - the node dies under it
                pass

        reader = asyncio.create_task(read_b())
        answered = {}  # message -> response

        async def push(msg):
            answered[msg] = await a.apush(uid, msg, True)

        for i in range(30):  # B alive: delivered (acknowledged within a second, or queued)
            await push(f"live {i}")
        assert all(r.status == 200 and r.json["delivered"] in (0, 1)
                   for r in answered.values()), answered
        serving = b.serving_pid()
        os.kill(serving, signal.SIGSTOP)
        stopped = asyncio.gather(*(push(f"stopped {i}") for i in range(10)))
        await asyncio.sleep(0.2)
        # Someone who may PUBLISH forges acknowledgements on every node's channel for the
        # first push ids: none of them names a push (the ids start at a random point).
        forged = redis.call("EVAL", "local n = 0 for _, ch in ipairs(redis.call('PUBSUB', "
                            "'CHANNELS', 'wshost:n:*')) do for i = 1, 500 do n = n + "
                            "redis.call('PUBLISH', ch, 'k1' .. i) end end return n", "0")
        assert int(forged[1:]) >= 1000, forged
        await stopped
        b.kill9()
        os.kill(serving, signal.SIGKILL) if os.path.exists(f"/proc/{serving}") else None
        for i in range(10):  # B dead, still in presence for up to 10 s
            await push(f"dead {i}")
        reader.cancel()
        ok = {m for m, r in answered.items() if r.status == 200}
        assert len(ok) == 50, {m: r for m, r in answered.items() if r.status != 200}
        ws2 = await c.ws(f"user_id={uid}&token={token}")
        seen = set(got)
        deadline = time.monotonic() + 15
        while not ok <= seen and time.monotonic() < deadline:
            try:
                m = await recv(ws2, max(0.1, deadline - time.monotonic()))
            except Fail:
                break
            if not is_greeting(m):
                seen.add(m)
        assert ok <= seen, sorted(ok - seen)
        # B never took the pushes made while it was stopped: none is said delivered.
        for i in range(10):
            r = answered[f"stopped {i}"]
            assert r.json == {"delivered": 0}, r
        await ws2.close()


async def test_max_users_bounds_redis_and_every_node_and_survives_a_restart():
    """--max-users 40 on two nodes, 120 anonymous users created on node A one after another:
    the users hash in Redis holds at most 40, node B's SQLite at most 40, and B restarted
    reads what it needs (the users seen lately, at most 40), not the whole hash."""
    flags = ["--max-users", "40"]
    with Redis() as redis, node(redis, flags=flags) as a, node(redis, flags=flags) as b:
        wait_joined(a, b)
        last = None
        for _ in range(120):
            ws, last = await a.user()
            await ws.close()
        await async_wait_until(lambda: asyncio.to_thread(lambda: b.sql(
            "SELECT 1 FROM users WHERE id = ?", (last["user_id"],))), timeout=10,
            what="node B to know the last user")

        def hlen():
            return int(redis.call("HLEN", "wshost:users")[1:])

        assert hlen() <= 40, hlen()
        assert int(redis.call("ZCARD", "wshost:useen")[1:]) <= 40
        for h in (a, b):
            n = h.sql("SELECT count(*) FROM users")[0][0]
            assert n <= 40, (h.port, n)
        # The newest user resumes on B.
        ws, g = await b.user(f"user_id={last['user_id']}&token={last['token']}")
        assert g["user_id"] == last["user_id"], g
        await ws.close()
        # B restarted: its join reads the users seen lately, and stays within its bound.
        b.stop()
        assert redis.call("CONFIG", "RESETSTAT") == b"+OK\r\n"
        b.start()
        wait_joined(b)
        for _ in range(20):
            ws, _g = await a.user()
            await ws.close()
        await asyncio.sleep(0.5)
        n = b.sql("SELECT count(*) FROM users")[0][0]
        assert n <= 40, n
        assert hlen() <= 40, hlen()
        stats = redis.call("INFO", "commandstats", timeout=5).decode()
        assert "cmdstat_hgetall" not in stats, stats
        assert "cmdstat_eval" in stats, stats  # the join's read (and the new users) ran


async def test_revoke_on_one_node_ends_resume_on_every_node():
    """The admin API's revoke on node 1: node 2 no longer resumes the user with its token, its
    socket there is closed with 4001, and a forged message on wshost:revoked revokes no one."""
    with Redis() as redis, node(redis) as h1, node(redis) as h2:
        wait_joined(h1, h2)
        ws, g = await h1.user()
        uid, token = g["user_id"], g["token"]
        await ws.close()
        other, g_other = await h1.user()
        await ws.close()
        for h in (h2,):
            for who in (uid, g_other["user_id"]):
                await async_wait_until(lambda: asyncio.to_thread(lambda: h.sql(
                    "SELECT 1 FROM users WHERE id = ?", (who,))), timeout=10,
                    what="node 2 to know the users")
        on2, g2 = await h2.user(f"user_id={uid}&token={token}")
        assert g2["user_id"] == uid, g2
        # A forged revoke of the other user: node 2 checks Redis and does nothing.
        assert int(redis.call("PUBLISH", "wshost:revoked", g_other["user_id"])[1:]) == 2
        r = await h1.ahttp("POST", f"/_/users/{uid}/revoke", auth=True)
        assert r.status == 200 and r.json["revoked"] is True, r
        try:
            while True:
                await asyncio.wait_for(on2.recv(), 10)
        except websockets.ConnectionClosed as e:
            assert e.rcvd and e.rcvd.code == 4001, e
        for h in (h1, h2):
            ws, g = await h.user(f"user_id={uid}&token={token}")
            assert g["user_id"] != uid, f"node {h.port} resumed a revoked user"
            await ws.close()
        ws, g = await h2.user(f"user_id={g_other['user_id']}&token={g_other['token']}")
        assert g["user_id"] == g_other["user_id"], "a forged revoke took effect"
        await ws.close()
        await other.close()


if __name__ == "__main__":
    if not shutil.which("redis-server"):
        skip_file("redis-server is not installed (tools/install-deps installs it)")
    run(globals())
