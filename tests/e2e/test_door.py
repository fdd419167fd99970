"""test_door.py: the connection event decides at the door (CONTRACT 11): it runs before
the 101, so cloud_reject refuses the upgrade with an HTTP status and leaves no user, connection
or greeting; cloud_accept_protocol picks an offered subprotocol; a client offering
subprotocols is never dropped without an answer."""

import asyncio

import websockets

from harness import Fail, Host, door_close, http_request, recv, recv_json, run, tplugin, wait_until


def door_host(**kw):
    return Host(plugins={"__websocket__": tplugin("door")}, **kw)


def counts(h):
    return (h.sql("SELECT count(*) FROM users")[0][0],
            h.sql("SELECT count(*) FROM connections")[0][0])


async def test_reject_leaves_no_user_no_connection_no_greeting():
    with door_host() as h:
        before = counts(h)
        # 401 and 403 reach a browser as close 4401/4403 after the 101 (an HTTP answer before
        # it is only 1006 there), with the function's reason and nothing before the close;
        # other statuses keep their HTTP answer.
        for status in [403] * 50 + [401] * 25:
            code, reason, _ = await asyncio.to_thread(door_close, h.port, f"reject={status}")
            assert (code, reason) == (4000 + status, "go away"), (status, code, reason)
        for _ in range(25):
            try:
                await h.ws("reject=429")
                raise Fail("a rejected upgrade was accepted")
            except websockets.exceptions.InvalidStatusCode as e:
                assert e.status_code == 429, e
        # Bound to an app id first, then rejected: still nothing stored. With a subprotocol
        # offered too (lws binds the upgrade to the slot protocol): the close still comes.
        for _ in range(5):
            code, _, _ = await asyncio.to_thread(door_close, h.port, "bind=mallory&reject=403",
                                                 "Sec-WebSocket-Protocol: graphql-ws\r\n")
            assert code == 4403, code
        await asyncio.sleep(0.1)
        assert counts(h) == before, (before, counts(h))
        assert not h.sql("SELECT 1 FROM users WHERE id = 'mallory'")
        assert "door: close" not in h.log(), "a rejected upgrade got a close event"
        # The body of an HTTP refusal says why, with the request id.
        r = await asyncio.to_thread(http_request, h.port, "GET", "/?reject=429", None, {
            "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"})
        assert r.status == 429 and r.json["error"] == "go away" and r.json["requestId"], r
        # An accepted one is stored, and what the event sent arrives right after the 101.
        ws = await h.ws()
        hello = await recv_json(ws)
        assert len(hello["user_id"]) == 22 and "protocols" not in hello, hello
        await ws.send("ping")
        assert await recv(ws) == "ping"
        assert wait_until(lambda: counts(h) == (before[0] + 1, before[1] + 1), 5)
        await ws.close()


async def test_subprotocol_accepted_offered_not_accepted_and_too_long():
    with door_host() as h:
        # graphql-ws clients offer graphql-transport-ws; the function picks it.
        ws = await websockets.connect(h.ws_url("accept=graphql-transport-ws"),
                                      subprotocols=["graphql-transport-ws", "graphql-ws"])
        assert ws.subprotocol == "graphql-transport-ws", ws.subprotocol
        hello = await recv_json(ws)
        assert hello["protocols"] == "graphql-transport-ws, graphql-ws", hello
        await ws.close()
        # The second offer: the 101 names the one accepted, not the first offered.
        ws = await websockets.connect(h.ws_url("accept=graphql-ws"),
                                      subprotocols=["graphql-transport-ws", "graphql-ws"])
        assert ws.subprotocol == "graphql-ws", ws.subprotocol
        await ws.close()
        # Offered, none accepted: the upgrade succeeds without a subprotocol (no silent drop).
        ws = await websockets.connect(h.ws_url(), subprotocols=["mqtt"])
        assert ws.subprotocol is None
        assert (await recv_json(ws))["protocols"] == "mqtt"
        await ws.send("still here")
        assert await recv(ws) == "still here"
        await ws.close()
        # Accepting a name that was not offered is refused to the function.
        ws = await websockets.connect(h.ws_url("accept=v12.stomp"), subprotocols=["mqtt"])
        assert ws.subprotocol is None
        await ws.close()
        h.wait_log(r"door: v12\.stomp was not offered")
        # No header at all still works, and the next offer after a refusal binds correctly.
        ws = await h.ws()
        assert "protocols" not in await recv_json(ws)
        await ws.close()
        ws = await websockets.connect(h.ws_url("accept=v12.stomp"), subprotocols=["v12.stomp"])
        assert ws.subprotocol == "v12.stomp"
        await ws.close()
        # A list lws 4.1 cannot take (over 120 bytes, or a name over 63): 400 with a reason.
        for offer in (["p%03d-%s" % (i, "x" * 10) for i in range(10)], ["n" * 70]):
            try:
                await websockets.connect(h.ws_url(), subprotocols=offer)
                raise Fail("accepted")
            except websockets.exceptions.InvalidStatusCode as e:
                assert e.status_code == 400, e


if __name__ == "__main__":
    run(globals())
