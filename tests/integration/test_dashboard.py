"""The dashboard at /, loaded in headless Debian Chromium (driven by Playwright) against a real `pacs serve`:
node identity, studies pushed with storescu, the C-STORE transaction, search, a hostile patient name shown as
text, the live ingest rate moving while instances arrive, the token prompt once tokens exist, and a screenshot in
the test's directory."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from tests.factory import make_image, save
from tests.node import PACS, REPO, Node, wait_until
from tests.peers import storescu

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOSTILE = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2><b>Mallory</b>"
WAIT_MS = 60_000  # how long the page may take to show what the API answers (it polls every 5 s; CI may be busy)

pytestmark = pytest.mark.dcmtk


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One Chromium for the module (a launch costs a second or two)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is required (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser(chromium: Browser) -> Iterator[Browser]:
    """The module's Chromium; the pages (browsing contexts) a test opened are closed after it."""
    yield chromium
    for context in chromium.contexts:
        context.close()


def open_dashboard(browser: Browser, node: Node) -> tuple[Page, list[str]]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("response", lambda response: print("response", response.status, response.url)
            if response.status >= 400 else None)  # shown when a test fails
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None)
    # (an API answer of 401 or 403 is logged by Chromium as a console error: expected where tokens are tested)
    page.on("request", lambda request: None if request.url.startswith(node.api) or request.url.startswith("data:")
            else problems.append(f"external request: {request.url}"))
    page.goto(f"{node.api}/")
    return page, problems


def push(node: Node, tmp_path: Path, calling_aet: str, *images: tuple[str, str, str]) -> None:
    """Store one image per (patient name, patient ID, SOP class) from ``calling_aet``."""
    folder = tmp_path / f"push-{calling_aet}"
    folder.mkdir()
    paths = [save(make_image(sop_class, patient_name=name, patient_id=pid), folder / f"{index}.dcm")
             for index, (name, pid, sop_class) in enumerate(images)]
    result = storescu(node.dicom_port, paths, calling_aet=calling_aet)
    assert result.returncode == 0, result.stdout + result.stderr


def search(page: Page, **fields: str) -> None:
    form = page.locator("#study-search")
    form.locator("button[type=reset]").click()
    for name, value in fields.items():
        form.locator(f"input[name={name}]").fill(value)
    form.locator("button[type=submit]").click()


def study_rows(page: Page) -> Locator:
    return page.locator("#study-rows tr[data-study]")


def create_token(node: Node, name: str, role: str) -> str:
    result = subprocess.run([*PACS, "token", "create", name, "--role", role], cwd=REPO, env=node.env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def test_the_dashboard_shows_the_node_its_studies_and_transactions(embedded_node: Node, browser: Browser,
                                                                   tmp_path: Path) -> None:
    node = embedded_node
    push(node, tmp_path, "CT_ROOM3", ("Doe^John", "PID-DOE", CT), ("Smith^Anna", "PID-SMITH", CT),
         (HOSTILE, "PID-HOSTILE", CT))
    push(node, tmp_path, "MR_ROOM1", ("Moreau^Claire", "PID-MOREAU", MR))
    registered = httpx.put(f"{node.api}/api/modalities/ct-room3", timeout=10, json={
        "ae_title": "CT_ROOM3", "host": "10.1.2.3", "port": 104, "allow": ["echo", "store"],
        "description": "CT <i>room</i> 3"})
    assert registered.status_code == 201, registered.text
    node.wait_indexed(4)

    page, problems = open_dashboard(browser, node)
    expect(page.locator("#node-ae")).to_have_text(node.ae_title, timeout=WAIT_MS)
    expect(page.locator("#node-port")).to_have_text(str(node.dicom_port), timeout=WAIT_MS)
    expect(page.locator("#node-version")).not_to_have_text("…")
    expect(page.locator("#count-instances")).to_have_text("4", timeout=WAIT_MS)
    expect(page.locator("#queue-pending")).to_have_text("0")
    expect(page.locator("#queue-dead")).to_have_text("0")
    expect(page.locator("#services")).to_contain_text("scp")
    expect(page.locator("#services")).to_contain_text("alive")

    # Studies, newest first, with who sent them.
    expect(study_rows(page)).to_have_count(4, timeout=WAIT_MS)
    expect(study_rows(page).first).to_contain_text("Moreau, Claire")
    doe = study_rows(page).filter(has_text="Doe, John")
    expect(doe).to_contain_text("PID-DOE")
    expect(doe).to_contain_text("CT_ROOM3")
    expect(doe).to_contain_text("2026-11-26")

    # The hostile name is text: shown literally, no element made from it, nothing ran.
    hostile = study_rows(page).filter(has_text="PID-HOSTILE").locator("td.patient")
    expect(hostile).to_have_text(HOSTILE)
    assert page.locator("#study-rows script, #study-rows img, #study-rows b").count() == 0
    assert page.evaluate("window.__pwned") is None
    expect(page.locator("#modality-rows")).to_contain_text("CT <i>room</i> 3")
    assert page.locator("#modality-rows i").count() == 0

    # The C-STORE association of CT_ROOM3 in the recent transactions (newest first).
    stores = page.locator("#audit-rows tr[data-action=c_store]")
    expect(stores.filter(has_text="CT_ROOM3")).to_have_count(1, timeout=WAIT_MS)
    expect(stores.filter(has_text="CT_ROOM3")).to_contain_text("3 instances")
    expect(stores.filter(has_text="MR_ROOM1")).to_contain_text("1 instance")
    expect(page.locator("#audit-rows tr[data-action=modality_saved]")).to_have_count(1)
    times = page.locator("#audit-rows td:first-child").evaluate_all("cells => cells.map(c => c.title)")
    assert times == sorted(times, reverse=True) and len(times) >= 5

    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    # Search narrows the list: by name (case-insensitive, part of it), ID, modality, sending AE, date.
    search(page, patient_name="doe")
    expect(study_rows(page)).to_have_count(1, timeout=WAIT_MS)
    expect(study_rows(page)).to_contain_text("Doe, John")
    search(page, patient_id="PID-SM*")
    expect(study_rows(page)).to_have_count(1, timeout=WAIT_MS)
    expect(study_rows(page)).to_contain_text("Smith, Anna")
    search(page, modality="mr")
    expect(study_rows(page)).to_have_count(1, timeout=WAIT_MS)
    expect(study_rows(page)).to_contain_text("Moreau, Claire")
    search(page, sending_aet="CT_ROOM3")
    expect(study_rows(page)).to_have_count(3, timeout=WAIT_MS)
    search(page, patient_name="mallory")
    expect(study_rows(page)).to_have_count(1, timeout=WAIT_MS)
    search(page, date_from="2026-11-27")
    expect(study_rows(page)).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator("#study-rows")).to_contain_text("No study matches this search.")
    search(page, date_from="2026-11-01", date_to="2026-11-30", sending_aet="MR_ROOM1")
    expect(study_rows(page)).to_have_count(1, timeout=WAIT_MS)
    page.locator("#study-search button[type=reset]").click()
    expect(study_rows(page)).to_have_count(4, timeout=WAIT_MS)
    assert page.evaluate("window.__pwned") is None
    assert not problems, problems
    print(f"screenshot: {tmp_path / 'dashboard.png'}")


def test_the_dashboard_shows_the_live_ingest_rate_while_instances_arrive(embedded_node: Node, browser: Browser,
                                                                        tmp_path: Path) -> None:
    node = embedded_node
    page, problems = open_dashboard(browser, node)
    expect(page.locator("#connection")).to_have_text("live", timeout=WAIT_MS)
    # A rate needs two refreshes (5 s apart) of the listener's counter: nothing arrived, so 0.
    expect(page.locator("#ingest-now")).to_have_text("0.0 / s", timeout=WAIT_MS)
    expect(page.locator("#ingest-window")).to_have_text("0 / min")
    expect(page.locator("#ingest-spark .spark-peak")).to_have_text("peak 0.0 / s")

    images = [(f"Rate^Patient{index}", f"PID-RATE-{index}", CT) for index in range(30)]
    push(node, tmp_path, "CT_RATE", *images)
    node.wait_indexed(len(images))
    # The page polls on its own: the listener's counter moves, then the indexed count of the API's window.
    expect(page.locator("#ingest-now")).to_have_text(re.compile(r"^(?!0\.0 )\d+(\.\d)? / s$"), timeout=WAIT_MS)
    expect(page.locator("#ingest-spark .spark-peak")).not_to_have_text("peak 0.0 / s")
    expect(page.locator("#ingest-window")).to_have_text("6 / min", timeout=WAIT_MS)  # 30 in the 5-minute window
    expect(page.locator("#count-instances")).to_have_text("30", timeout=WAIT_MS)
    assert page.locator("#ingest-spark svg rect").count() >= 2
    page.locator("#ingest").screenshot(path=str(tmp_path / "dashboard-ingest.png"))
    assert not problems, problems


def test_the_dashboard_asks_for_a_token_once_tokens_exist(embedded_node: Node, browser: Browser,
                                                           tmp_path: Path) -> None:
    node = embedded_node
    push(node, tmp_path, "CT_ROOM3", ("Doe^John", "PID-DOE", CT))
    node.wait_indexed(1)
    viewer = create_token(node, "dashboard-viewer", "viewer")
    admin = create_token(node, "dashboard-admin", "admin")
    wait_until(lambda: node.get("/api/studies").status_code == 401, 10, "the API to require a token")

    # The shell is open and holds no data; what it shows comes from the API with a token.
    shell = node.get("/")
    assert shell.status_code == 200 and shell.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in shell.headers["content-security-policy"]
    assert shell.headers["x-content-type-options"] == "nosniff"
    assert "PID-DOE" not in shell.text and "Doe" not in shell.text
    for asset in ("/dashboard/dashboard.js", "/dashboard/dashboard.css"):
        assert node.get(asset).status_code == 200, asset
    assert "/" not in httpx.get(f"{node.api}/openapi.json", timeout=10).json()["paths"]

    page, problems = open_dashboard(browser, node)
    expect(page.locator("#token-dialog")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#token-error")).to_be_hidden()
    page.screenshot(path=str(tmp_path / "dashboard-token.png"))
    page.locator("#token-input").fill("pacs_" + "x" * 43)
    page.locator("#token-form button[type=submit]").click()
    expect(page.locator("#token-error")).to_contain_text("refused", timeout=WAIT_MS)

    page.locator("#token-input").fill(viewer)
    page.locator("#token-form button[type=submit]").click()
    expect(page.locator("#token-dialog")).to_be_hidden()
    expect(page.locator("#node-ae")).to_have_text(node.ae_title, timeout=WAIT_MS)
    expect(study_rows(page)).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#transactions-message")).to_contain_text("admin token", timeout=WAIT_MS)
    assert page.evaluate("sessionStorage.getItem('pacs.dashboard.token')") == viewer

    page.locator("#token-button").click()
    page.locator("#token-input").fill(admin)
    page.locator("#token-form button[type=submit]").click()
    expect(page.locator("#audit-rows tr[data-action=c_store]")).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#transactions-message")).to_be_hidden()

    # The token lives in that tab's session storage only: another browsing context asks again.
    other = browser.new_page()
    other.goto(f"{node.api}/")
    expect(other.locator("#token-dialog")).to_be_visible(timeout=WAIT_MS)
    page.screenshot(path=str(tmp_path / "dashboard-admin.png"), full_page=True)
    assert not [p for p in problems if "status of 401" not in p and "status of 403" not in p], problems
