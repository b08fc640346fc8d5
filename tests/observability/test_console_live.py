"""The local console in a real browser: the real stack with its Prometheus and the console process, some
traffic on both routes, then headless Chromium (Debian's, through selenium) opens the page and every
panel draws data with uPlot. A screenshot is kept in out/console/ (a test artefact, not committed)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import pytest

from mesh.canary import apply_to_file
from mesh.canary_analysis import set_mirror
from observability.console.panels import PICKS
from services.local.observers import console_processes
from services.local.supervisor import LocalStack
from tests.observability.livestack import (
    REPO,
    Driver,
    classify,
    copy_spec,
    infer,
    needs_prometheus,
    observed_stack,
    prometheus_url,
    query,
    until,
)

pytestmark = [needs_prometheus, pytest.mark.timeout(240)]
ARTIFACTS = REPO / "out" / "console"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None, reason="Debian's chromium + chromium-driver (make system-deps installs them)"
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    tmp = tmp_path_factory.mktemp("console")
    spec_path = copy_spec(tmp)
    apply_to_file(spec_path, lambda doc: set_mirror(doc, "digits", {"version": 2, "percentage": 50}))
    with observed_stack(tmp / "run", spec_path, extra=[console_processes]) as running:
        yield running


@pytest.fixture(scope="module")
def loaded(stack: LocalStack) -> str:
    prometheus = prometheus_url(stack)
    until(lambda: len(query(prometheus, "up == 1")) >= 8, 30, "the targets up")
    with Driver(stack, classify, rate=20, limit=160) as pipeline, Driver(stack, infer, rate=20, limit=160) as direct:
        until(lambda: sum(pipeline.codes.values()) >= 120 and sum(direct.codes.values()) >= 120, 60, "the load")
    until(
        lambda: query(prometheus, "sum(meshserve_pipeline_mirror_agreement_total) > 0"), 20, "the comparisons scraped"
    )
    return stack.url("console")


def test_the_console_answers_bad_requests_with_4xx(loaded: str) -> None:
    assert httpx.get(f"{loaded}/api/panel/p1", params={"seconds": "-5"}).status_code == 400
    assert "no panel" in httpx.get(f"{loaded}/api/panel/nope").json()["error"]
    assert httpx.get(f"{loaded}/static/../app.py").status_code == 404
    assert httpx.get(f"{loaded}/static/uPlot.iife.min.js").status_code == 200


def _panel(console: str, title: str) -> dict:
    panels = httpx.get(f"{console}/api/panels").json()["panels"]
    panel = next(p for p in panels if p["title"] == title)
    reply = httpx.get(f"{console}/api/panel/{panel['id']}", params={"seconds": "120"})
    assert reply.status_code == 200, reply.text
    return {s["name"]: [v for _, v in s["values"] if v is not None] for s in reply.json()["series"]}


def test_the_panels_carry_the_mesh_as_it_runs(loaded: str) -> None:
    """The series behind the page: both routes answered by v1 (90%), the business API's configured split,
    and agreement of the mirrored v2 answers (the same model: close to 100%)."""
    by_route = _panel(loaded, "Requests by route and version")
    assert {"/v1/digits:classify v1", "/v2/models/digits/infer v1"} <= set(by_route), sorted(by_route)
    split = _panel(loaded, PICKS[1][1])
    assert split["stable v1 configured weight (local stack)"][-1] == pytest.approx(0.9)
    assert split["canary v2 configured weight (local stack)"][-1] == pytest.approx(0.1)
    agreement = _panel(loaded, PICKS[9][1])
    assert agreement and all(v >= 0.9 for values in agreement.values() for v in values), agreement


def test_up_prints_the_console_url(stack: LocalStack) -> None:
    from services.local.commands import example

    assert f"{stack.url('console')}/" in example(stack)


@needs_chromium
def test_every_panel_draws_data_in_a_real_browser(loaded: str) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,2000")
    for arg in flags:
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    try:
        browser.get(loaded + "/")

        def drawn(_driver: object) -> list | bool:
            panels = browser.find_elements(By.CSS_SELECTOR, "section.panel")
            done = [p for p in panels if int(p.get_attribute("data-points") or 0) > 0]
            return panels if len(panels) == len(PICKS) and len(done) == len(panels) else False

        try:
            panels = WebDriverWait(browser, 60, poll_frequency=0.5).until(drawn)
        except Exception:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(ARTIFACTS / "console-failed.png"))
            states = [
                (p.get_attribute("id"), p.find_element(By.TAG_NAME, "h2").text, p.get_attribute("data-points"))
                for p in browser.find_elements(By.CSS_SELECTOR, "section.panel")
            ]
            pytest.fail(f"not every panel drew data within 60 s: {states}")
        for panel in panels:
            assert panel.find_elements(By.CSS_SELECTOR, ".chart canvas"), panel.get_attribute("id")
            assert int(panel.get_attribute("data-series")) >= 1
        titles = [p.find_element(By.TAG_NAME, "h2").text for p in panels]
        assert titles == [title for _, title in PICKS]
        models = browser.find_element(By.ID, "models").text
        assert "canary v2 at step 10%" in models and "mirror 50% to v2" in models
        assert "live from http://127.0.0.1:" in browser.find_element(By.ID, "status").text
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.set_window_size(1500, browser.execute_script("return document.body.scrollHeight") + 40)
        assert browser.save_screenshot(str(ARTIFACTS / "console.png"))
    finally:
        browser.quit()
    assert (ARTIFACTS / "console.png").stat().st_size > 10_000
