"""The dashboard as a user runs it (`kitaru ui` in a subprocess), a real headless
Chromium driven by Selenium (Debian's `chromium` and `chromium-driver`), plain HTTP
visitors with a browser's cookie jar (`Visitor`), and oauth2-proxy in front of it.

Screenshots go to `.artifacts/ui/` in the checkout (ignored by git), one per step.
"""

from __future__ import annotations

import base64
import hashlib
import http.cookiejar
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cli_support import kitaru_argv
from kubernetes import client, config
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from support import KUBECONFIG, REPO, wait_for

ARTIFACTS = REPO / ".artifacts" / "ui"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def connection_env(namespace: str, token: str, home: Path) -> dict[str, str]:
    """The environment of someone whose only credential is `token` for the local
    cluster's API server, in project `namespace` (no kubeconfig)."""
    admin = client.Configuration()
    config.load_kube_config(config_file=str(KUBECONFIG), client_configuration=admin)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KITARU_")}
    env.update(
        KITARU_SERVER_URL=admin.host,
        KITARU_AUTH_TOKEN=token,
        KITARU_CA_FILE=str(admin.ssl_ca_cert),
        KITARU_PROJECT=namespace,
        KUBECONFIG=str(home / "no-kubeconfig"),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_CACHE_HOME=str(home / "cache"),
    )
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def dashboard(project: Path, env: dict[str, str], log: Path, *args: str) -> Iterator[str]:
    """`kitaru ui ARGS` on a free loopback port with `env`'s connection; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*kitaru_argv(), "ui", "--port", str(port), *args],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: proc.poll() is not None or _healthy(url),
            timeout=30,
            message=f"kitaru ui on {url}",
        )
        assert proc.poll() is None, log.read_text()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "Traceback" not in log.read_text(), log.read_text()


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """A headless Chromium."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1600"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def text_of(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def present(driver: WebDriver, css: str) -> bool:
    return bool(driver.find_elements(By.CSS_SELECTOR, css))


# --- plain HTTP, as a browser would send it -----------------------------------------


@dataclass(frozen=True)
class Answer:
    """An HTTP response; header names in lower case."""

    status: int
    headers: Mapping[str, str]
    body: str


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class Visitor:
    """A visitor of `url` over real HTTP with a cookie jar, like a browser: it keeps
    the cookies the server sets and sends them back; redirects are not followed (each
    answer is looked at). `headers` go with every request (e.g. Authorization)."""

    def __init__(self, url: str, headers: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.headers = dict(headers or {})
        self.cookies = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirects()
        )

    def request(
        self,
        method: str,
        path: str,
        fields: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Answer:
        """One request: a form of `fields`, or `body` as it is."""
        data = urllib.parse.urlencode(fields).encode() if fields is not None else body
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={**self.headers, **(headers or {})},
        )
        try:
            with self._opener.open(request, timeout=30) as response:
                return Answer(response.status, _lower(response.headers), response.read().decode())
        except urllib.error.HTTPError as error:
            return Answer(error.code, _lower(error.headers), error.read().decode())

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Answer:
        return self.request("GET", path, headers=headers)

    def post(
        self, path: str, fields: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> Answer:
        """A form POST from one of the dashboard's own pages (its Origin), unless
        `headers` say otherwise."""
        return self.request("POST", path, fields, {"Origin": self.url, **(headers or {})})

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.cookies if c.name == name), None)


def csrf_token(page: str) -> str:
    """The CSRF token of a dashboard page (every page carries it, forms or not: the API
    server, not the buttons shown, decides what a signed-in person may do)."""
    return page.split('<meta name="csrf-token" content="')[1].split('"')[0]


# --- oauth2-proxy in front of the dashboard -------------------------------------------


def htpasswd(passwords: Mapping[str, str]) -> str:
    """An htpasswd file of `{SHA}` entries (oauth2-proxy reads SHA1 and bcrypt ones; the
    standard library has no bcrypt). Test credentials only."""
    lines = []
    for user, password in passwords.items():
        digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
        lines.append(f"{user}:{{SHA}}{digest}\n")
    return "".join(lines)


def basic_auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def prepared_auth_proxy(cluster_dir: Path) -> dict[str, str]:
    """oauth2-proxy built (`build.sh authproxy`) and its image in the node's containerd:
    {"binary": path, "image": repository@digest}."""
    proc = subprocess.run(
        [sys.executable, "-m", "kitaru_localnode.authproxy", f"--dir={cluster_dir}"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    prepared: dict[str, str] = json.loads(proc.stdout)
    return prepared


def auth_proxy_binary() -> Path:
    """oauth2-proxy, built once per version (`build.sh authproxy`)."""
    out = subprocess.run(
        ["bash", str(REPO / "cluster" / "build.sh"), "authproxy"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    return Path(out.strip().splitlines()[-1]) / "oauth2-proxy"


@contextmanager
def oauth2_proxy(
    binary: Path, workdir: Path, args: Callable[[int], list[str]], log: Path
) -> Iterator[str]:
    """oauth2-proxy with `args(port)` (its address on a free loopback port, upstream,
    sign-in and header settings); yields its URL once it answers /ping."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(binary), *args(port)], cwd=workdir, stdout=out, stderr=subprocess.STDOUT
        )
    try:

        def up() -> bool:
            if proc.poll() is not None:
                return True
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(up, timeout=30, message=f"oauth2-proxy on {url}")
        assert proc.poll() is None, log.read_text()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
