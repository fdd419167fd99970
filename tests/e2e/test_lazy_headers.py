"""Headers built lazily. A function that exports CLOUD_OPTIONS(CLOUD_OPT_LAZY_HEADERS)
gets ctx->headers NULL in its connection event and reads headers through cloud_request_header;
every function without it (all plugins built before, ABI 1 included) keeps getting
ctx->headers. Also run with --isolation process (make test-isolation)."""

import json

from harness import *  # noqa: F401,F403

HEADERS = {"User-Agent": "ua-14", "X-Custom": "c-14"}


async def report(h, query="q=7"):
    ws = await h.ws(query, extra_headers={"X-Custom": HEADERS["X-Custom"]},
                    user_agent_header=HEADERS["User-Agent"])
    got = json.loads(await recv(ws))
    await ws.close()
    return got


async def test_lazy_function_gets_no_headers_object_but_every_header():
    with Host(plugins={"__websocket__": tplugin("hdr_lazy")}) as h:
        got = await report(h)
        assert got["headers_null"] is True, got
        assert got["ua"] == "ua-14" and got["custom"] == "c-14", got
        assert got["host"] == f"127.0.0.1:{h.port}", got
        assert got["absent"] is None and got["q"] == "7", got


async def test_function_without_options_still_gets_ctx_headers():
    with Host(plugins={"__websocket__": tplugin("hdr_eager")}) as h:
        got = await report(h)
        assert got["headers_null"] is False and got["headers_ua"] == "ua-14", got
        assert got["ua"] == "ua-14" and got["custom"] == "c-14" and got["q"] == "7", got
        assert got["absent"] is None, got


async def test_abi1_function_still_gets_ctx_headers():
    with Host(plugins={"__websocket__": tplugin("abi1")}) as h:
        ws = await h.ws("hdr=1", user_agent_header="ua-abi1")
        assert await recv(ws) == "ua-abi1"
        await ws.close()


async def test_lazy_websocket_behind_an_interceptor_that_reads_headers():
    """gate (an interceptor without CLOUD_OPTIONS) reads x-gate and ?deny; the lazy
    __websocket__ behind it still sees no ctx->headers and every header by name."""
    with Host(plugins={"__websocket__": tplugin("hdr_lazy"),
                       "__interceptor__": tplugin("gate")}) as h:
        got = await report(h)
        assert got["headers_null"] is True and got["custom"] == "c-14", got
        try:
            await h.ws("deny=1")
            raise Fail("the interceptor's 429 did not stop the upgrade")
        except websockets.exceptions.InvalidStatusCode as e:
            assert e.status_code == 429, e


async def test_example_declares_lazy_headers_and_greets_as_before():
    """plugins/__websocket__.c exports the option; its greeting is the same JSON."""
    with Host() as h:
        ws, g = await h.user()
        assert set(g) == {"event", "user_id", "token"} and g["event"] == "connected", g
        ws2, g2 = await h.user(f"user_id={g['user_id']}&token={g['token']}")
        assert g2 == {"event": "connected", "user_id": g["user_id"], "token": None}, g2
        for w in (ws, ws2):
            await w.close()
    with open(example("__websocket__"), "rb") as f:
        assert b"cloud_plugin_options" in f.read()


if __name__ == "__main__":
    run(globals())
