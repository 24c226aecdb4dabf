"""Who may talk to Kitaru's own HTTP servers (`kitaru ui`, `kitaru mcp --transport
streamable-http`): the host names they answer to, and a bearer token.

A server on loopback is still within reach of every web page its user opens. A page can
rebind its own DNS name to 127.0.0.1 and then read from and post to the server as if it
were the same origin (DNS rebinding), and the server would act with the user's Kubernetes
identity. The browser still sends the name the page was loaded from in `Host`, so a
server that answers only to its own names (loopback, the address it is bound to, and
the names given with `--allowed-host`) refuses all of those requests.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# Binding to these listens on every interface: they are no name anyone reaches it by.
ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is loopback."""
    host = host.strip().lower().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(netloc: str) -> str:
    """The host of a `Host` header or URL authority, lower case, without the port:
    `Example.COM:8080` -> `example.com`, `[::1]:80` -> `::1`."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        end = netloc.find("]")
        return netloc[1:end] if end > 0 else ""
    if netloc.count(":") == 1:
        return netloc.split(":", 1)[0]
    return netloc


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The host names a server bound to `bind_host` answers to: loopback, the bound
    address itself (unless it is the any-address) and `extra` (ports are ignored)."""
    names = set(LOOPBACK_NAMES)
    if bind_host.strip("[]") not in ANY_ADDRESS:
        names.add(host_name(bind_host) if bind_host.startswith("[") else bind_host.lower())
    names.update(host_name(name) for name in extra if name.strip())
    return frozenset(names)


class TrustedHosts:
    """ASGI middleware: requests whose `Host` is not one of `hosts` get 421 (Starlette's
    TrustedHostMiddleware does the same, but splits `[::1]:8080` at the first colon).
    `exempt` paths (health probes, which name the pod's IP) answer to any host."""

    def __init__(
        self, app: ASGIApp, hosts: frozenset[str], exempt: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.exempt:
            name = host_name(Headers(scope=scope).get("host", ""))
            if name not in self.hosts:
                known = ", ".join(sorted(self.hosts))
                response = PlainTextResponse(
                    f"unknown host name {name!r}: this server answers to {known} "
                    "(add a name with --allowed-host)",
                    status_code=421,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def new_token() -> str:
    """A bearer token for one server start (256 random bits)."""
    return secrets.token_urlsafe(32)


class BearerToken:
    """ASGI middleware: every HTTP request must carry `Authorization: Bearer <token>`,
    else 401 (the token is compared in constant time)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scheme, _, given = Headers(scope=scope).get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(
                given.strip().encode(), self.token
            ):
                response = PlainTextResponse(
                    "this server needs its bearer token: send 'Authorization: Bearer <token>' "
                    "with the token it printed at start (or the one it was given)",
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="kitaru"'},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
