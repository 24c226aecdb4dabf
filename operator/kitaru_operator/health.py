"""`/healthz` and `/readyz` for the kubelet's probes, served from start-up on.

Not kopf's liveness endpoint: that one exists only while kopf runs, and a standby
replica waiting for the Lease must look alive and ready too (a never-ready standby
would stall every rolling update). `/readyz` fails only while the active replica is
still listing what resolution needs.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web


async def serve(url: str, ready: Callable[[], bool]) -> web.AppRunner:
    """Serve on the host and port of `url` (e.g. http://0.0.0.0:8081/healthz)."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="listing versions and routes\n")

    parts = urlsplit(url)
    app = web.Application()
    app.router.add_get(parts.path or "/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, parts.hostname or "0.0.0.0", parts.port or 8081).start()
    return runner
