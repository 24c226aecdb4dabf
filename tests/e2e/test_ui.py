"""The dashboard (`kitaru ui`) in a real headless Chromium, against the real API server.

The dashboard runs as a user would start it, with the CLI's connection; the viewer and
consumer cases give it a ServiceAccount token bound to the chart's role, so the API
server's RBAC decides what it shows. Screenshots of each step: `.artifacts/ui/`.
`test_seed_story_from_the_dashboard` runs a flow in a container (it needs the node).

One Chromium serves the module (`browser`: its cookies are cleared between tests) and the
operator is the module's shared one; each test has its namespace, its project (set up
with the CLI in this process) and its `kitaru ui`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chart_support import bind, token_of
from cli_support import FLOWS_AND_MORE, RESEARCH_FLOW, InProcessKitaru, Kitaru, new_project
from kubernetes import client, config
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select
from support import KUBECONFIG, get, kubectl, wait_for
from ui_support import Visitor, chromium, csrf_token, dashboard, present, screenshot, text_of

pytestmark = pytest.mark.usefixtures("crds_installed")

# research_agent whose `topic` became an integer: a move of a tag onto it is refused.
INCOMPATIBLE_FLOW = """from kitaru import flow


@flow
def research_agent(topic: int) -> str:
    return f"notes on {topic}"
"""


def deploy_twice(kitaru: Kitaru) -> None:
    """The seed story's producer: v1 with `default`, v2 with an exclusive `canary`."""
    kitaru('deploy flows/research.py:research_agent --input \'{"topic": "durable agents"}\'')
    kitaru(
        "deploy flows/research.py:research_agent --tag canary --exclusive "
        '--input \'{"topic": "durable agents"}\''
    )


@pytest.fixture(scope="module")
def chromium_of_module() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


@pytest.fixture
def browser(chromium_of_module: WebDriver) -> Iterator[WebDriver]:
    """The module's Chromium, without what the last test left in it."""
    yield chromium_of_module
    chromium_of_module.delete_all_cookies()
    chromium_of_module.get("about:blank")


@pytest.fixture
def producer(running_operator: object, namespace: str, tmp_path: Path) -> Kitaru:
    kitaru = new_project(tmp_path, namespace, FLOWS_AND_MORE, runner=InProcessKitaru)
    deploy_twice(kitaru)
    return kitaru


def token_env(kitaru: Kitaru, namespace: str, account: str, cluster_role: str) -> dict[str, str]:
    """The CLI environment of a user who has only a token of a ServiceAccount bound to
    `cluster_role` in `namespace`."""
    bind(namespace, account, cluster_role)
    admin = client.Configuration()
    config.load_kube_config(config_file=str(KUBECONFIG), client_configuration=admin)
    env = {k: v for k, v in kitaru.env.items() if k != "KUBECONFIG"}
    env.update(
        KITARU_SERVER_URL=admin.host,
        KITARU_AUTH_TOKEN=token_of(namespace, account),
        KITARU_CA_FILE=str(admin.ssl_ca_cert),
        KUBECONFIG=str(kitaru.project / "no-kubeconfig"),
    )
    return env


def submit_tag_form(browser: WebDriver, tag: str, version: int, exclusive: bool = False) -> None:
    form = browser.find_element(By.ID, "tag-form")
    form.find_element(By.NAME, "tag").send_keys(tag)
    form.find_element(By.NAME, "version").clear()
    form.find_element(By.NAME, "version").send_keys(str(version))
    if exclusive:
        form.find_element(By.NAME, "exclusive").click()
    form.find_element(By.CSS_SELECTOR, "button").click()


def runs_of(namespace: str) -> list[Any]:
    names = kubectl("get", "flowinvocations", "-o", "name", namespace=namespace).stdout
    return names.split()


def hold_runs(namespace: str) -> None:
    """Runs of this namespace stay unfinished (a quota admits no pod), also on the node:
    the pages are looked at while they are pending."""
    kubectl("create", "quota", "no-pods", "--hard=pods=0", namespace=namespace)


def test_pages_load(producer: Kitaru, browser: WebDriver, namespace: str, tmp_path: Path) -> None:
    hold_runs(namespace)
    # A run (it stays pending, resolved to v2 by the operator).
    exec_id = producer("invoke research_agent --tag canary -o json").json()["item"]["exec_id"]
    wait_for(
        lambda: ((get("flowinvocation", exec_id, namespace) or {}).get("status") or {}).get(
            "resolved"
        ),
        timeout=60,
        message="the run resolved",
    )
    with dashboard(producer.project, producer.env, tmp_path / "ui.log") as url:
        browser.get(url)
        screenshot(browser, "flows")
        routes = {
            row.get_attribute("data-tag"): row.text
            for row in browser.find_elements(By.CSS_SELECTOR, "#flow-research_agent tr.route")
        }
        assert "exclusive v1" in routes["default"]
        assert "exclusive v2" in routes["canary"]
        assert exec_id in routes["canary"], "the last run of the tag"
        assert text_of(browser, "header .project") == f"project {namespace}"

        browser.find_element(By.LINK_TEXT, "research_agent").click()
        screenshot(browser, "flow")
        assert {
            r.get_attribute("data-version")
            for r in browser.find_elements(By.CSS_SELECTOR, "tr.version")
        } == {"1", "2"}
        assert present(browser, "#tag-form"), "a producer may move tags"
        assert "no finished runs" in text_of(browser, "#charts")  # v2's run is still pending
        # Each single-version route has its snippets; curl is pinned to the version.
        curl = browser.find_element(By.CSS_SELECTOR, 'details.snippets[data-tag="canary"]')
        curl.click()
        assert "resolved to v2" in curl.text
        assert "kitaru invoke research_agent --tag canary" in curl.text
        history = text_of(browser, "#history")
        assert "canary" in history and "default" in history
        assert "(verified)" in history  # tagged by the CLI: signed, checked by admission

        browser.find_element(
            By.CSS_SELECTOR, 'tr.version[data-version="1"] a.invoke-version'
        ).click()
        assert "version v1 (kitaru::research_agent::v1)" in text_of(browser, "main")
        # A link cannot make the dashboard show a text of its own as a notice.
        browser.get(f"{url}/flows/research_agent?done=x&notice=Tagged")
        assert not present(browser, "#notice")

        browser.find_element(By.CSS_SELECTOR, 'tr.route[data-tag="canary"] a.invoke').click()
        screenshot(browser, "invoke-form")
        # The form is generated from v2's input schema, deploy-time values filled in.
        assert browser.find_element(By.ID, "in-topic").get_attribute("value") == "durable agents"
        assert browser.find_element(By.ID, "in-depth").get_attribute("type") == "number"
        assert browser.find_element(By.ID, "in-depth").get_attribute("value") == "1"

        browser.get(f"{url}/runs?flow=research_agent")
        screenshot(browser, "runs")
        assert present(browser, f'tr.run[data-exec="{exec_id}"]')
        browser.get(f"{url}/runs?flow=research_agent&version=1")
        assert "No runs match." in text_of(browser, "#runs")
        browser.get(f"{url}/runs?status=bogus")
        assert "unknown status 'bogus'" in text_of(browser, "#error")


def test_runs_are_followed_live(
    producer: Kitaru, browser: WebDriver, namespace: str, tmp_path: Path
) -> None:
    """The runs list and a run's page show a status change without a reload (a marker
    set in the page survives): here two pending runs are cancelled."""
    hold_runs(namespace)
    first, second = (
        producer("invoke research_agent -o json").json()["item"]["exec_id"] for _ in range(2)
    )
    with dashboard(producer.project, producer.env, tmp_path / "ui.log") as url:
        browser.get(f"{url}/runs?flow=research_agent")
        browser.execute_script("window.kitaruMarker = 1")
        producer(f"executions cancel {first}")
        row = f'tr.run[data-exec="{first}"] .status'
        wait_for(
            lambda: text_of(browser, row) == "cancelled", timeout=60, message="the list updated"
        )
        assert browser.execute_script("return window.kitaruMarker") == 1, "the page was reloaded"

        browser.get(f"{url}/runs/{second}")
        assert text_of(browser, "#run-status") in ("pending", "running")
        browser.execute_script("window.kitaruMarker = 2")
        producer(f"executions cancel {second}")
        wait_for(
            lambda: text_of(browser, "#run-status") == "cancelled",
            timeout=60,
            message="the run page",
        )
        screenshot(browser, "run-cancelled-live")
        assert browser.execute_script("return window.kitaruMarker") == 2, "the page was reloaded"


def test_the_form_starts_a_run_with_its_inputs(
    producer: Kitaru, browser: WebDriver, namespace: str, tmp_path: Path
) -> None:
    """Submitting the form creates one invocation of the tag with the inputs typed (the
    run itself needs a node: here it stays pending) and opens its page."""
    with dashboard(producer.project, producer.env, tmp_path / "ui.log") as url:
        browser.get(f"{url}/flows/research_agent/invoke?tag=canary")
        topic = browser.find_element(By.ID, "in-topic")
        topic.clear()
        topic.send_keys("form inputs")
        browser.find_element(By.ID, "in-depth").clear()  # empty: the deploy-time value applies
        browser.find_element(By.ID, "invoke-submit").click()
        wait_for(lambda: present(browser, "#run"), timeout=30, message="the run page")
        screenshot(browser, "invoked-from-form")
        exec_id = browser.current_url.rsplit("/", 1)[1]
        assert text_of(browser, "h1") == f"Run {exec_id}"
    (name,) = runs_of(namespace)
    assert name == f"flowinvocation.kitaru.dev/{exec_id}"
    spec = (get("flowinvocation", exec_id, namespace) or {})["spec"]
    assert (spec["flow"], spec["tag"], spec["inputs"]) == (
        "research_agent",
        "canary",
        {"topic": "form inputs"},
    )


def test_the_form_is_checked_before_anything_is_created(
    producer: Kitaru, browser: WebDriver, namespace: str, tmp_path: Path
) -> None:
    with dashboard(producer.project, producer.env, tmp_path / "ui.log") as url:
        browser.get(f"{url}/flows/research_agent/invoke?tag=canary")
        depth = browser.find_element(By.ID, "in-depth")
        depth.clear()
        depth.send_keys("1.5")  # not a whole number: the browser refuses to submit
        browser.find_element(By.ID, "invoke-submit").click()
        screenshot(browser, "invoke-refused-in-browser")
        assert browser.current_url.endswith("/invoke?tag=canary")
        assert browser.execute_script("return arguments[0].validity.valid", depth) is False

        # The server checks again with the CLI's rules (here without the browser's help),
        # sent as the browser would: its cookie, the page's token and Origin.
        cookie = browser.get_cookie("kitaru_csrf")
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        visitor = Visitor(url, {"Cookie": f"kitaru_csrf={cookie['value']}"})
        fields = {"csrf_token": csrf_token(browser.page_source), "topic": "x", "depth": "deep"}
        answer = visitor.post("/flows/research_agent/invoke?tag=canary", fields)
        assert answer.status == 400
        assert "input &#39;depth&#39;: &#39;deep&#39; is not a whole number" in answer.body
        # A form without the dashboard's token is refused.
        answer = visitor.post("/flows/research_agent/invoke?tag=canary", {"topic": "x"})
        assert answer.status == 400 and "the form has expired" in answer.body
    assert runs_of(namespace) == []


def test_a_refused_tag_move_shows_the_cli_error(
    producer: Kitaru, browser: WebDriver, namespace: str, tmp_path: Path
) -> None:
    (producer.project / "flows" / "research.py").write_text(INCOMPATIBLE_FLOW)
    producer("build flows/research.py:research_agent")  # v3, untagged, `topic` an integer
    cli = producer("flow tag research_agent canary --version 3 --exclusive -o json", check=False)
    assert cli.code == 1
    expected = cli.json()["error"]["message"]
    with dashboard(producer.project, producer.env, tmp_path / "ui.log") as url:
        browser.get(f"{url}/flows/research_agent")
        submit_tag_form(browser, "canary", 3, exclusive=True)
        wait_for(lambda: present(browser, "#tag-error"), timeout=30, message="the tag error")
        screenshot(browser, "tag-move-refused")
        assert text_of(browser, "#tag-error") == expected
        assert "would reject inputs" in expected
        assert "exclusive v2" in text_of(browser, 'tr.route[data-tag="canary"]')
    route = get("flowroute", "research-agent.canary", namespace)
    assert route is not None and route["spec"]["versions"] == [2]


@pytest.mark.parametrize(
    ("action", "tag", "command"),
    [
        ("untag", "default", "flow untag research_agent default"),
        ("rollback", "canary", "flow rollback research_agent canary"),
    ],
)
def test_refused_route_changes_show_the_cli_error(
    producer: Kitaru,
    browser: WebDriver,
    namespace: str,
    tmp_path: Path,
    action: str,
    tag: str,
    command: str,
) -> None:
    cli = producer(f"{command} -o json", check=False)
    assert cli.code == 1
    expected = cli.json()["error"]["message"]
    with dashboard(producer.project, producer.env, tmp_path / "ui.log") as url:
        browser.get(f"{url}/flows/research_agent")
        row = browser.find_element(By.CSS_SELECTOR, f'tr.route[data-tag="{tag}"]')
        row.find_element(By.CSS_SELECTOR, f"form.{action} button").click()
        wait_for(lambda: present(browser, "#tag-error"), timeout=30, message=f"the {action} error")
        screenshot(browser, f"{action}-refused")
        assert text_of(browser, "#tag-error") == expected
    assert get("flowroute", f"research-agent.{tag}", namespace) is not None


def test_route_changes_from_the_dashboard(
    producer: Kitaru, browser: WebDriver, namespace: str, tmp_path: Path
) -> None:
    """Add a shared tag, remove it from one version, move `canary` and roll it back: the
    history records each change."""
    producer("flow tag research_agent benchmark --version 1")
    with dashboard(producer.project, producer.env, tmp_path / "ui.log") as url:
        browser.get(f"{url}/flows/research_agent")
        submit_tag_form(browser, "benchmark", 2)
        wait_for(lambda: present(browser, "#notice"), timeout=30, message="the shared tag")
        assert "Tagged research_agent benchmark → v1, v2 (shared)" in text_of(browser, "#notice")

        row = browser.find_element(By.CSS_SELECTOR, 'tr.route[data-tag="benchmark"]')
        Select(row.find_element(By.NAME, "version")).select_by_value("1")
        row.find_element(By.CSS_SELECTOR, "form.untag button").click()
        wait_for(
            lambda: (
                "Removed tag benchmark of research_agent from v1" in text_of(browser, "#notice")
            ),
            timeout=30,
            message="the untag",
        )
        assert "shared v2" in text_of(browser, 'tr.route[data-tag="benchmark"]')

        submit_tag_form(browser, "canary", 1, exclusive=True)
        wait_for(
            lambda: "exclusive v1" in text_of(browser, 'tr.route[data-tag="canary"]'),
            timeout=30,
            message="canary moved to v1",
        )
        row = browser.find_element(By.CSS_SELECTOR, 'tr.route[data-tag="canary"]')
        row.find_element(By.CSS_SELECTOR, "form.rollback button").click()
        wait_for(
            lambda: "Rolled back research_agent canary → v2" in text_of(browser, "#notice"),
            timeout=30,
            message="the rollback",
        )
        wait_for(
            lambda: browser.refresh() or "rollback" in text_of(browser, "#history"),
            timeout=30,
            interval=1,
            message="the rollback in the history",
        )
        screenshot(browser, "route-changes")
    route = get("flowroute", "research-agent.canary", namespace)
    assert route is not None and route["spec"]["versions"] == [2]


def test_a_viewer_sees_no_invoke_button(
    roles: str, producer: Kitaru, browser: WebDriver, namespace: str, tmp_path: Path
) -> None:
    exec_id = producer("invoke research_agent --tag canary -o json").json()["item"]["exec_id"]
    viewer = token_env(producer, namespace, "ui-viewer", f"{roles}-viewer")
    with dashboard(producer.project, viewer, tmp_path / "viewer.log") as url:
        browser.get(f"{url}/runs?flow=research_agent&tag=canary")
        assert present(browser, f'tr.run[data-exec="{exec_id}"]')
        browser.get(f"{url}/runs/{exec_id}")
        # The page follows an unfinished run (polling) until the operator has resolved it.
        wait_for(lambda: present(browser, "#chain"), timeout=60, message="the resolution chain")
        screenshot(browser, "viewer-run")
        assert "v2" in text_of(browser, "#chain")
        assert "logs unavailable" in text_of(browser, "#logs"), "a viewer may not read pod logs"
        browser.get(f"{url}/flows/research_agent")
        screenshot(browser, "viewer-flow")
        assert present(browser, "tr.route"), "a viewer reads the routes"
        assert not present(browser, "a.invoke")
        assert not present(browser, "#tag-form")
        browser.get(f"{url}/flows/research_agent/invoke?tag=canary")
        screenshot(browser, "viewer-invoke")
        assert not present(browser, "#invoke-submit")
        assert present(browser, "#cannot-invoke")

    consumer = token_env(producer, namespace, "ui-consumer", f"{roles}-consumer")
    with dashboard(producer.project, consumer, tmp_path / "consumer.log") as url:
        browser.get(f"{url}/flows/research_agent")
        screenshot(browser, "consumer-flow")
        assert present(browser, "a.invoke"), "a consumer may invoke"
        assert not present(browser, "#tag-form"), "but not move tags"


def test_seed_story_from_the_dashboard(
    running_operator: object, browser: WebDriver, namespace: str, tmp_path: Path
) -> None:
    """Deploy twice with the CLI; then, in the browser only: move `stable` to v2,
    invoke it from the form, see the result and the logs. Needs the node."""
    kitaru = new_project(tmp_path, namespace, RESEARCH_FLOW)
    deploy_twice(kitaru)
    with dashboard(kitaru.project, kitaru.env, tmp_path / "ui.log") as url:
        browser.get(f"{url}/flows/research_agent")
        submit_tag_form(browser, "stable", 2, exclusive=True)
        wait_for(lambda: present(browser, "#notice"), timeout=30, message="the tag move")
        screenshot(browser, "story-1-stable-moved")
        assert "Tagged research_agent stable → v2 (exclusive)" in text_of(browser, "#notice")

        browser.find_element(By.CSS_SELECTOR, 'tr.route[data-tag="stable"] a.invoke').click()
        topic = browser.find_element(By.ID, "in-topic")
        topic.clear()
        topic.send_keys("deployment routing")
        screenshot(browser, "story-2-invoke-form")
        browser.find_element(By.ID, "invoke-submit").click()

        wait_for(
            lambda: (
                present(browser, "#run")
                and text_of(browser, "#run-status") in ("completed", "failed")
            ),
            timeout=240,
            interval=1,
            message="the run to finish, shown live",
        )
        screenshot(browser, "story-3-run-finished")
        assert text_of(browser, "#run-status") == "completed", text_of(browser, "#run-live")
        assert text_of(browser, "#result") == '"notes on deployment routing"'
        assert "v2" in text_of(browser, "#chain")

        def logs_shown() -> bool:
            if "researching deployment routing" in text_of(browser, "#logs"):
                return True
            browser.refresh()  # the logs of a finished run are read when the page is
            return False

        wait_for(logs_shown, timeout=60, interval=1, message="the run's logs")
        screenshot(browser, "story-4-logs")
