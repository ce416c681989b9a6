"""The reference: a bare aiohttp app that reads a POST body and answers 200, nothing else.

    python -m bench.reference --port 8123 [--uvloop]

Same framework, same route, same response as catbot's webhook, without verification,
parsing or storage: the ceiling catbot's ingest is compared against.
"""

from __future__ import annotations

import argparse

from aiohttp import web

_OK = b'{"ok": true}'


async def events(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=_OK, content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/webhook/twitter", events)
    app.router.add_get("/readyz", ready)
    loop_factory = None
    if args.uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    kwargs = {"loop": loop_factory()} if loop_factory else {}
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None,
                **kwargs)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
