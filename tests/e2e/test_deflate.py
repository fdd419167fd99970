"""test_deflate.py: permessage-deflate (RFC 7692; issue 12). Negotiated when a client offers
it (--deflate on), every kind of message round-trips compressed, empty ones too
(lws 4.1.6 aborts on those: the host writes them itself), and a message that inflates past
--max-message is closed with 1009 however small it was on the wire (a deflate bomb). Off by
default (lws 4.1.6's compressor crashes on big messages: sends over 64 KB are refused on such
a connection)."""

import zlib

from harness import CLOSE_TOO_BIG, Host, default_plugins, expect_close, recv, run, tplugin


def echo_host(flags=("--deflate", "on")):
    plugins = default_plugins()
    plugins["__websocket__"] = tplugin("ws_echo")
    return Host(plugins=plugins, flags=list(flags))


async def test_negotiated_and_every_message_round_trips():
    with echo_host() as h:
        ws = await h.ws()
        await recv(ws)  # greeting
        assert [type(e).__name__ for e in ws.extensions] == ["PerMessageDeflate"], ws.extensions
        for msg in ["hello", b"\x00" * 1000, "", b"", "after empty", "é" * 20000, b"", "x"]:
            await ws.send(msg)
            assert await recv(ws) == msg, msg[:20]
        await ws.close()
    with echo_host(["--deflate", "off"]) as h:  # the default
        ws = await h.ws()
        await recv(ws)
        assert ws.extensions == [], ws.extensions
        await ws.send("plain")
        assert await recv(ws) == "plain"
        await ws.close()


async def test_deflate_bomb_is_closed_1009():
    with echo_host(["--deflate", "on", "--max-message", "65536"]) as h:
        ws = await h.ws(max_size=None)
        await recv(ws)
        bomb = "a" * 4_000_000  # a few KB on the wire
        assert len(zlib.compress(bomb.encode())) < 10_000
        await ws.send(bomb)
        code, _ = await expect_close(ws)
        assert code == CLOSE_TOO_BIG, code
        # The host lives on and serves.
        assert h.http("GET", "/_/healthz").status == 200
        ws = await h.ws()
        await recv(ws)
        await ws.send("still serving")
        assert await recv(ws) == "still serving"
        await ws.close()


if __name__ == "__main__":
    run(globals())
