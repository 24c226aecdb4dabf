"""The module kopf loads: registration only.

kopf watches the invocations that have not finished (a server-side field selector, see
`settings`) and hands each event to the invocation reconcile; everything else comes
from the informers `startup` starts. No kopf indexes, finalizers, progress annotations
or per-handler patches: a dispatch costs only our own two API calls.

Run it with `kitaru-operator` (`main`), which passes the configuration as kopf's memo.
"""

from __future__ import annotations

from typing import Any

import kopf
from kitaru.core.names import API_VERSION, GROUP, INVOCATIONS

from kitaru_operator import startup
from kitaru_operator.invocations import forget_invocation, reconcile_invocation
from kitaru_operator.kube import authorization_header, load_configuration
from kitaru_operator.runtime import Runtime
from kitaru_operator.settings import configure_settings


@kopf.on.startup()
async def on_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    if "config" not in memo:
        raise kopf.PermanentError("start the operator with `kitaru-operator`, not `kopf run`")
    configure_settings(settings)
    memo.runtime = await startup.start(memo.config)


@kopf.on.login()
def login(**_kwargs: Any) -> kopf.ConnectionInfo:
    """kopf's watch connects with the operator's own credentials (`kube.load_configuration`:
    in-cluster service account, else the kubeconfig by kubectl's rules, exec plugins
    included). kopf logs in again on a 401, which reads a refreshed token."""
    configuration = load_configuration()
    scheme, _, token = authorization_header(configuration).get("Authorization", "").partition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        proxy_url=configuration.proxy,
    )


@kopf.on.cleanup()
async def on_cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "runtime" in memo:
        await startup.stop(memo.runtime)


@kopf.on.event(GROUP, API_VERSION, INVOCATIONS, id="reconcile-invocation")
async def invocation_event(body: kopf.Body, type: str, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    meta = body["metadata"]
    if type == "DELETED":  # deleted, or finished (it left the field selector)
        forget_invocation(runtime, meta["namespace"], meta["name"])
        return
    plain = {key: body[key] for key in body}
    runtime.invocations[(meta["namespace"], meta["name"])] = plain
    await reconcile_invocation(runtime, plain)
