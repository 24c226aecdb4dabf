"""Who drives the dashboard, and that they meant to.

- **Host names.** The dashboard answers only to its own names (`kitaru.web_security`):
  a page that rebinds its DNS name to the dashboard's address is refused.
- **Origin.** A request that changes something (any method but GET, HEAD, OPTIONS) must
  come from a page of the dashboard itself: its `Origin` (or, without one, its
  `Referer`) names the host the request is sent to. Browsers set both; a page of
  another origin cannot forge them.
- **CSRF token.** Forms carry a token that is an HMAC of a random cookie (HttpOnly,
  SameSite=Strict, set by the dashboard) and of the signed-in user, under a key of the
  process: a token read from a page is worth nothing without that browser's cookie.
- **Who.** Behind an authenticating proxy (`ProxyAuth`), the user and groups the proxy
  names are trusted only from the proxy (a loopback peer — a sidecar in the same pod —
  or a request carrying the proxy's shared secret), and the dashboard acts as that
  user with Kubernetes impersonation; without a user it answers 401 and never acts
  as itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kitaru.web_security import is_loopback

CSRF_COOKIE = "kitaru_csrf"
PROXY_SECRET_HEADER = "X-Kitaru-Proxy-Secret"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Kubernetes' own identities (system:masters, system:kube-controller-manager,
# system:serviceaccount:...): never taken from a header, whatever RBAC would allow.
RESERVED_PREFIX = "system:"
# Set on every response: no other site may frame the dashboard (clickjacking), guess a
# content type, or learn the dashboard's paths from the Referer.
SECURITY_HEADERS = {
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class Identity:
    """The person a request is made for: the dashboard impersonates them."""

    user: str
    groups: tuple[str, ...] = ()


class Refused(Exception):
    """A request the dashboard will not serve; `status` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ProxyAuth:
    """The dashboard behind an authenticating proxy that names the user in headers.

    `secret` None trusts the headers only from a loopback peer (the proxy is a sidecar
    in the dashboard's pod, and the dashboard listens on loopback only); otherwise
    only requests carrying the secret in `X-Kitaru-Proxy-Secret` (an external proxy).
    Groups outside `allowed_groups` are dropped: the dashboard may impersonate only
    those (its RBAC names them).
    """

    user_header: str = "X-Forwarded-User"
    groups_header: str = "X-Forwarded-Groups"
    secret: bytes | None = None
    allowed_groups: frozenset[str] = frozenset()

    def identify(self, headers: Headers, peer: str | None) -> Identity:
        """The identity the proxy vouches for, or `Refused` (401 or 403)."""
        if self.secret is None:
            if peer is None or not is_loopback(peer):
                raise Refused(401, "sign in through the dashboard's authenticating proxy")
        else:
            given = headers.get(PROXY_SECRET_HEADER, "").encode()
            if not secrets.compare_digest(given, self.secret):
                raise Refused(401, "sign in through the dashboard's authenticating proxy")
        user = headers.get(self.user_header, "").strip()
        if not user:
            raise Refused(401, "the authenticating proxy named no user: sign in again")
        if user.lower().startswith(RESERVED_PREFIX):
            raise Refused(403, f"the dashboard never acts as a Kubernetes system user ({user!r})")
        named = {
            group.strip()
            for value in headers.getlist(self.groups_header)
            for group in value.split(",")
        }
        groups = tuple(sorted(named & self.allowed_groups))
        return Identity(user=user, groups=groups)


def exposure_problem(host: str, proxy: ProxyAuth | None) -> str | None:
    """Why the dashboard must not listen on `host` as configured (None: it may)."""
    if is_loopback(host):
        return None
    if proxy is None:
        return (
            f"--host {host} would let everyone who reaches it act with your Kitaru "
            "connection: keep the dashboard on loopback (the default), or put an "
            "authenticating proxy in front (--auth-proxy with --proxy-secret-file)"
        )
    if proxy.secret is None:
        return (
            f"--auth-proxy on {host} needs --proxy-secret-file: without the proxy's shared "
            "secret anyone who reaches the address could name any user (a sidecar proxy "
            "reaches the dashboard on loopback)"
        )
    return None


def cross_origin_problem(headers: Headers) -> str | None:
    """Why a state-changing request does not come from one of the dashboard's pages
    (None: it does): its Origin, else its Referer, must name the host it is sent to."""
    source = headers.get("origin") or headers.get("referer")
    if not source or source == "null":
        return "the request names no Origin: send it from the dashboard's own pages"
    origin = urlsplit(source).netloc.lower()
    if not origin or origin != headers.get("host", "").strip().lower():
        return f"cross-origin request refused: it comes from {source!r}"
    return None


@dataclass
class CsrfTokens:
    """Form tokens bound to a browser's cookie and the signed-in user (HMAC, key per process)."""

    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @staticmethod
    def new_cookie() -> str:
        return secrets.token_urlsafe(32)

    def token(self, cookie: str, user: str) -> str:
        message = f"{cookie}\0{user}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def valid(self, cookie: str, user: str, token: str) -> bool:
        return bool(cookie) and secrets.compare_digest(token, self.token(cookie, user))


def _response_headers(extra: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in extra.items()]


class DashboardGuard:
    """ASGI middleware: identity (behind a proxy), then Origin on state-changing requests;
    security headers on every response. `exempt` paths (the health probe) skip both."""

    def __init__(
        self,
        app: ASGIApp,
        proxy: ProxyAuth | None,
        exempt: Sequence[str] = ("/healthz",),
    ) -> None:
        self.app = app
        self.proxy = proxy
        self.exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    *_response_headers(SECURITY_HEADERS),
                ]
            await send(message)

        try:
            self._admit(scope)
        except Refused as refused:
            response: Response = PlainTextResponse(refused.message, status_code=refused.status)
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _admit(self, scope: Scope) -> None:
        if scope["path"] in self.exempt:
            return
        headers = Headers(scope=scope)
        if self.proxy is not None:
            client = scope.get("client")
            identity = self.proxy.identify(headers, client[0] if client else None)
            scope.setdefault("state", {})["identity"] = identity
        if scope["method"] not in SAFE_METHODS:
            problem = cross_origin_problem(headers)
            if problem:
                raise Refused(403, problem)
