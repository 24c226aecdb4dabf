"""The dashboard: a Starlette app of server-rendered pages over `kitaru.client`.

Every read and write goes through the client with the dashboard's connection — or,
behind an authenticating proxy, as the signed-in user (impersonation) — so the API
server decides what may be seen and done, and refusals carry the CLI's messages.
Buttons for writes are shown only when a SelfSubjectAccessReview allows them.
Who may send requests at all, and how forms are protected: `kitaru.ui.security`.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kitaru.client import KitaruClient
from kitaru.client.connection import Connection, Impersonation
from kitaru.client.curl import render_curl
from kitaru.client.errors import (
    InvalidArguments,
    KitaruConnectionError,
    KitaruError,
    NotFound,
    Rejected,
)
from kitaru.client.records import STATUSES, ExecutionInfo
from kitaru.core.inputs import InvalidInputs
from kitaru.core.names import INVOCATIONS, ROUTES
from kitaru.ui import views
from kitaru.ui.security import CSRF_COOKIE, CsrfTokens, DashboardGuard, Identity, ProxyAuth
from kitaru.web_security import TrustedHosts

HERE = Path(__file__).parent
# Runs read per flow for the last-run-per-tag column and the canary charts.
RUNS_PER_FLOW = 200
RUNS_PER_PAGE = 100
# Versions listed on a flow's page unless all are asked for (?versions=all).
VERSIONS_SHOWN = 50
# Notices of writes not yet shown that are kept (the oldest go first).
MAX_NOTICES = 256
# How often an in-cluster connection is read again (the kubelet rotates its token).
RECONNECT_SECONDS = 300.0


@dataclass(frozen=True)
class Permissions:
    """What the connection may do in the project, as the API server answers."""

    invoke: bool
    tag: bool


class Connector:
    """The dashboard's clients: one with its own connection, or one per person it acts
    for (impersonation; the `max_people` most recent are kept). All are made again once
    the connection is older than `max_age` seconds (None: never). Requests run in a
    thread pool, so the cache is changed under a lock."""

    def __init__(
        self,
        connection: Callable[[], Connection],
        max_age: float | None = None,
        max_people: int = 256,
    ) -> None:
        self._connection = connection
        self._max_age = max_age
        self._max_people = max_people
        self._own: KitaruClient | None = None
        self._people: OrderedDict[Identity, KitaruClient] = OrderedDict()
        self._made = 0.0
        self._lock = threading.Lock()

    def __call__(self, identity: Identity | None = None) -> KitaruClient:
        with self._lock:
            stale = self._max_age is not None and time.monotonic() - self._made > self._max_age
            if self._own is None or stale:
                self._own = KitaruClient(self._connection())
                self._people.clear()
                self._made = time.monotonic()
            if identity is None:
                return self._own
            client = self._people.get(identity)
            if client is None:
                who = Impersonation(user=identity.user, groups=identity.groups)
                client = KitaruClient(replace(self._own.connection, impersonate=who))
                self._people[identity] = client
                while len(self._people) > self._max_people:
                    self._people.popitem(last=False)
            self._people.move_to_end(identity)
            return client


def status_code(error: KitaruError) -> int:
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, KitaruConnectionError):
        return 502
    if isinstance(error, Rejected) and "forbidden" in error.message.lower():
        return 403
    return 400


def _version_arg(text: str | None) -> int | None:
    if text in (None, ""):
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidArguments(
            f"version must be a whole number such as 2, not {text!r}", kind="InvalidArguments"
        ) from None


def _versions(versions: tuple[int, ...]) -> str:
    return ", ".join(f"v{v}" for v in versions) or "(none)"


def create_app(
    connect: Callable[[Identity | None], KitaruClient],
    hosts: frozenset[str],
    proxy: ProxyAuth | None = None,
) -> Starlette:
    """The dashboard answering to the host names `hosts`. Requests are made with the
    client `connect(identity)` returns: behind an authenticating proxy (`proxy`) the
    identity is the signed-in user's, and a request without one never gets this far."""
    csrf = CsrfTokens()
    # What a write did, shown once on the page it redirects to (`?done=<key>`): kept here
    # rather than in the URL, so no link can make the dashboard show a text of its own.
    notices: dict[str, str] = {}
    templates = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def permissions(client: KitaruClient) -> Permissions:
        kube = client.kube
        return Permissions(
            invoke=kube.allowed("create", INVOCATIONS),
            tag=kube.allowed("patch", ROUTES) and kube.allowed("create", ROUTES),
        )

    def identity_of(request: Request) -> Identity | None:
        identity: Identity | None = request.scope.get("state", {}).get("identity")
        if proxy is not None and identity is None:
            # DashboardGuard admits no request without one; never act as ourselves.
            raise RuntimeError("a request without an identity reached the dashboard")
        return identity

    def client_of(request: Request) -> KitaruClient:
        return connect(identity_of(request))

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        client = client_of(request)
        identity = identity_of(request)
        cookie = request.cookies.get(CSRF_COOKIE) or csrf.new_cookie()
        html = templates.get_template(name).render(
            project=client.project,
            user=identity.user if identity else None,
            csrf_token=csrf.token(cookie, identity.user if identity else ""),
            notice=notices.pop(request.query_params.get("done", ""), ""),
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        if cookie != request.cookies.get(CSRF_COOKIE):
            response.set_cookie(
                CSRF_COOKIE,
                cookie,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    def error_page(request: Request, error: KitaruError) -> HTMLResponse:
        return page(request, "error.html", status_code(error), error=error)

    def check_csrf(request: Request, form: FormData) -> None:
        identity = identity_of(request)
        cookie = request.cookies.get(CSRF_COOKIE, "")
        token = str(form.get("csrf_token", ""))
        if not csrf.valid(cookie, identity.user if identity else "", token):
            raise Rejected("the form has expired: reload the page and submit it again")

    # --- pages ----------------------------------------------------------------------

    def flows_page(request: Request) -> Response:
        client = client_of(request)
        try:
            flows = client.deployments.flows()
            routes = client.deployments.routes()
            last_runs = {
                f.flow: views.last_run_per_tag(client.executions.list(f.flow, limit=RUNS_PER_FLOW))
                for f in flows
            }
        except KitaruError as error:
            return error_page(request, error)
        return page(request, "flows.html", flows=flows, routes=routes, last_runs=last_runs)

    def flow_context(client: KitaruClient, flow: str, all_versions: bool = False) -> dict[str, Any]:
        deployments = client.deployments
        versions = deployments.list(flow)
        if not versions:
            # The same NotFound the CLI gives for a flow without deployments.
            deployments.resolve(flow)
        routes = deployments.routes(flow)
        runs = client.executions.list(flow, limit=RUNS_PER_FLOW)
        stats = views.version_stats(runs)
        by_version = {v.version: v for v in versions}
        newest = sorted(versions, key=lambda v: v.version, reverse=True)
        snippets = {}
        connection = client.connection
        for route in routes:
            if len(route.versions) != 1 or route.versions[0] not in by_version:
                continue
            version = by_version[route.versions[0]]
            snippets[route.tag] = {
                "CLI": views.cli_snippet(flow, route.tag, version.inputs),
                "Python": views.python_snippet(flow, route.tag, version.inputs),
                "curl": render_curl(
                    server=connection.server.value or "",
                    namespace=client.project,
                    flow=flow,
                    version=version.version,
                    inputs=version.inputs,
                    tag=route.tag,
                    ca_file=connection.ca_path(),
                ),
            }
        return {
            "flow": flow,
            "versions": newest[: None if all_versions else VERSIONS_SHOWN],
            "versions_total": len(newest),
            "routes": routes,
            "history": deployments.history(flow)["changes"],
            "last_runs": views.last_run_per_tag(runs),
            "stats": stats,
            "success_chart": views.success_chart(stats),
            "duration_chart": views.duration_chart(stats),
            "snippets": snippets,
            "can": permissions(client),
        }

    def flow_page(request: Request) -> Response:
        flow = request.path_params["flow"]
        try:
            context = flow_context(
                client_of(request), flow, request.query_params.get("versions") == "all"
            )
        except KitaruError as error:
            return error_page(request, error)
        return page(request, "flow.html", **context)

    def change_route(request: Request, form: FormData) -> Response:
        """Tag, untag or roll back through the client; a refusal is shown on the flow
        page with the client's message."""
        flow = request.path_params["flow"]
        client = client_of(request)
        action = str(form.get("action") or "tag")
        tag = str(form.get("tag", "")).strip()
        version = None
        reason = str(form.get("reason") or "").strip() or None
        try:
            check_csrf(request, form)
            version = _version_arg(str(form.get("version", "")).strip())
            if action == "untag":
                route = client.deployments.untag(flow, tag, version, reason=reason)
                notice = f"Removed tag {tag} of {flow}" + (f" from v{version}" if version else "")
            elif action == "rollback":
                route = client.deployments.rollback(flow, tag, reason=reason)
                notice = f"Rolled back {flow} {tag} → {_versions(route.versions)}"
            elif action == "tag":
                if version is None:
                    raise InvalidArguments("choose the version to route the tag to")
                route = client.deployments.tag(
                    flow,
                    tag,
                    version,
                    exclusive=form.get("exclusive") == "on",
                    force=form.get("force") == "on",
                    reason=reason,
                )
                notice = f"Tagged {flow} {tag} → {_versions(route.versions)} ({route.mode})"
            else:
                raise InvalidArguments(f"unknown route action {action!r}: tag, untag or rollback")
        except KitaruError as error:
            try:
                context = flow_context(client, flow)
            except KitaruError:
                return error_page(request, error)
            filled = dict(form) if action == "tag" else {}
            return page(
                request,
                "flow.html",
                status_code(error),
                tag_error=error.message,
                tag_form=filled,
                **context,
            )
        while len(notices) >= MAX_NOTICES:
            notices.pop(next(iter(notices)))
        key = secrets.token_urlsafe(8)
        notices[key] = notice
        return RedirectResponse(
            request.url_for("flow", flow=flow).include_query_params(done=key), status_code=303
        )

    async def routes_post(request: Request) -> Response:
        form = await request.form()
        return await run_in_threadpool(change_route, request, form)

    def invoke_context(client: KitaruClient, request: Request, flow: str) -> dict[str, Any]:
        params = request.query_params
        tag = params.get("tag") or None
        version = _version_arg(params.get("version"))
        deployment = client.deployments.get(flow, tag=tag, version=version)
        return {
            "flow": flow,
            "tag": tag,
            "version": version,
            "deployment": deployment,
            "fields": views.form_fields(deployment.input_schema, deployment.inputs),
            "can": permissions(client),
        }

    def invoke_page(request: Request) -> Response:
        try:
            context = invoke_context(client_of(request), request, request.path_params["flow"])
        except KitaruError as error:
            return error_page(request, error)
        return page(request, "invoke.html", **context)

    async def invoke(request: Request) -> Response:
        submitted = await request.form()
        return await run_in_threadpool(start_run, request, submitted)

    def start_run(request: Request, submitted: FormData) -> Response:
        flow = request.path_params["flow"]
        client = client_of(request)
        try:
            context = invoke_context(client, request, flow)
        except KitaruError as error:
            return error_page(request, error)
        form = {k: str(v) for k, v in submitted.items()}
        try:
            check_csrf(request, submitted)
            inputs = views.inputs_from_form(context["fields"], form)
            handle = client.deployments.invoke(
                flow, tag=context["tag"], version=context["version"], inputs=inputs
            )
        except (KitaruError, InvalidInputs) as error:
            message = error.message
            status = status_code(error) if isinstance(error, KitaruError) else 400
            filled = [
                views.FormField(**{**f.__dict__, "value": form.get(f.name, f.value)})
                for f in context["fields"]
            ]
            return page(
                request,
                "invoke.html",
                status,
                invoke_error=message,
                **{**context, "fields": filled},
            )
        return RedirectResponse(request.url_for("run", exec_id=handle.exec_id), status_code=303)

    def runs_filters(request: Request) -> dict[str, Any]:
        params = request.query_params
        return {
            "flow": params.get("flow") or None,
            "tag": params.get("tag") or None,
            "version": _version_arg(params.get("version")),
            "status": params.get("status") or None,
        }

    def runs_list(client: KitaruClient, filters: dict[str, Any]) -> list[ExecutionInfo]:
        selector = f"status.resolved.version={filters['version']}" if filters["version"] else ""
        tag = filters["tag"]
        runs = client.executions.list(
            filters["flow"],
            filters["status"],
            limit=None if tag else RUNS_PER_PAGE,
            selector=selector,
        )
        if tag:
            runs = [r for r in runs if (r.resolved_tag or r.tag) == tag][:RUNS_PER_PAGE]
        return runs

    def runs_page(request: Request) -> Response:
        try:
            filters = runs_filters(request)
            runs = runs_list(client_of(request), filters)
        except KitaruError as error:
            return error_page(request, error)
        name = "_runs_table.html" if request.query_params.get("fragment") else "runs.html"
        return page(request, name, runs=runs, filters=filters, statuses=STATUSES)

    def run_page(request: Request) -> Response:
        exec_id = request.path_params["exec_id"]
        client = client_of(request)
        try:
            run = client.executions.get(exec_id)
            chain = client.executions.resolution(exec_id)
        except KitaruError as error:
            return error_page(request, error)
        try:
            logs = client.executions.logs(exec_id)
        except KitaruError as error:  # e.g. the viewer role may not read pod logs
            logs = f"(logs unavailable: {error.message})"
        name = "_run_detail.html" if request.query_params.get("fragment") else "run.html"
        return page(request, name, run=run, chain=chain, logs=logs)

    def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/", flows_page, name="flows"),
            Route("/flows/{flow}", flow_page, name="flow"),
            Route("/flows/{flow}/routes", routes_post, methods=["POST"], name="routes"),
            Route("/flows/{flow}/invoke", invoke_page, name="invoke_form"),
            Route("/flows/{flow}/invoke", invoke, methods=["POST"], name="invoke"),
            Route("/runs", runs_page, name="runs"),
            Route("/runs/{exec_id}", run_page, name="run"),
            Route("/healthz", healthz, name="healthz"),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        # Outermost first: a request for another host name is refused before anything
        # reads it; then who sends it, and from which origin.
        middleware=[
            Middleware(TrustedHosts, hosts=hosts, exempt=frozenset({"/healthz"})),
            Middleware(DashboardGuard, proxy=proxy),
        ],
    )
