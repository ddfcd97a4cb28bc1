"""The dashboard in a real headless Chromium (Debian's, driven by Playwright; nothing is downloaded).

A hub and a node agent replaying the recorded H100 readings run as real processes. A person signs in,
looks at the pool and the node's GPU charts, submits a task and watches its output to the end,
downloads its artifact, downloads an owner's receipt and checks it with ``gpupool verify-receipt``,
and approves a pending worker as admin. Every page is saved as a screenshot under the test's tmp
folder (``GPUPOOL_SCREENSHOTS=DIR`` saves them there too) and its layout is checked: the sign-in form
gone once signed in, no horizontal scroll at phone width.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import sync_playwright

from gpupool import crypto
from gpupool.core import rewards
from tests.conftest import ADMIN_PASSWORD
from tests.factories import OWNER
from tests.procs import HubProcess, NodeProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EPOCH_SEC = 3
TASK = "echo counting; for i in 1 2 3; do echo line $i; done; mkdir -p output; echo result > output/r.txt"


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProcess, NodeProcess, Path]]:
    root = tmp_path_factory.mktemp("browser")
    hub = HubProcess(
        f"sqlite:///{root}/hub.db",
        root,
        GPUPOOL_HUB_HEARTBEAT_INTERVAL_SEC="1",
        GPUPOOL_HUB_REWARD_EPOCH_SEC=str(EPOCH_SEC),
        GPUPOOL_HUB_MIN_SETTLEMENT_MICRO="1",
        GPUPOOL_HUB_REWARD_AUTO_DISTRIBUTE="false",
    )
    hub.start()
    node = NodeProcess(hub.url, root, OWNER, GPUPOOL_NODE_MINER_ID="h100-replay")
    try:
        node.start()
        node.wait_healthy()
        _until(lambda: httpx.get(f"{hub.url}/v1/health").json()["online_miners"] == 1)
        yield hub, node, root
    finally:
        node.stop()
        hub.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert Path(CHROMIUM).exists(), "no chromium: `make test` installs Debian's (apt-get install chromium)"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def _until(check: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise TimeoutError("condition not met in time")


def shoot(page: Any, folder: Path, name: str) -> None:
    """A full-page screenshot under the test's folder (and under $GPUPOOL_SCREENSHOTS when set)."""
    page.wait_for_timeout(300)  # let the charts draw
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    if extra := os.environ.get("GPUPOOL_SCREENSHOTS"):
        Path(extra).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(extra) / f"{name}.png"), full_page=True)


def no_horizontal_scroll(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def sign_in(page: Any, url: str, username: str, password: str) -> None:
    page.goto(url)
    page.fill("#username", username)
    page.fill("#password", password)
    page.press("#password", "Enter")  # the keyboard is enough
    page.wait_for_selector("#who:has-text('" + username + "')")


def admin_headers(hub: HubProcess) -> dict[str, str]:
    resp = httpx.post(f"{hub.url}/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


@pytest.mark.timeout(300)  # real processes on a busy 2-core machine; about 15 s alone
def test_a_person_signs_in_runs_a_task_checks_a_receipt_and_approves_a_worker(
    pool: tuple[HubProcess, NodeProcess, Path], browser: Any, tmp_path: Path
) -> None:
    hub, _node, _root = pool
    admin = admin_headers(hub)
    mint = {"to": "user:admin", "amount": 50_000_000, "idempotency_key": "browser-mint"}
    assert httpx.post(f"{hub.url}/v1/admin/mint", json=mint, headers=admin).status_code in (200, 201)
    shots = tmp_path / "screenshots"
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(hub.url)
    assert page.is_visible("#login") and not page.is_visible("#nav")
    shoot(page, shots, "sign-in")
    sign_in(page, hub.url, "admin", ADMIN_PASSWORD)
    assert not page.is_visible("#login") and not page.is_visible("#login-panel")  # gone once signed in

    # The pool: the replayed H100 node with its readings, and the last hour's charts.
    page.wait_for_selector("#nodes-card a:has-text('h100-replay')")
    assert page.locator("#nodes-card").inner_text().count("H100") >= 1
    assert page.locator("figure.chart canvas").count() >= 4
    shoot(page, shots, "pool")

    # The node's page: utilisation, memory, temperature and power over time, with the replayed values.
    page.click("#nodes-card a:has-text('h100-replay')")
    page.wait_for_selector("text=GPU utilisation")
    assert page.locator("figure.chart canvas").count() == 4
    assert "PoC weight" in page.inner_text("main") and "trust" in page.inner_text("main")
    shoot(page, shots, "node")

    # A task: submitted from the form, its output watched live to the end, its artifact downloaded.
    page.click("nav a:has-text('Tasks')")
    page.fill("#t-command", TASK)
    page.click("#submit-form button[type=submit]")
    page.wait_for_selector("#output:has-text('[task ended]')", timeout=60_000)
    assert "line 3" in page.inner_text("#output")
    page.wait_for_selector("#task-facts:has-text('succeeded')")
    page.wait_for_selector("#artifacts button:has-text('Download')")
    with page.expect_download() as got:
        page.click("#artifacts button:has-text('Download')")
    saved = tmp_path / "r.txt"
    got.value.save_as(saved)
    assert saved.read_text() == "result\n"
    shoot(page, shots, "task")
    page.goto(f"{hub.url}/#node/h100-replay")  # the node's page lists the task it ran
    page.wait_for_selector("section:has-text('Tasks on this node') .s-succeeded")

    # The owner's receipt: close the epoch the task ran in, download the receipt, verify it offline.
    (task,) = httpx.get(f"{hub.url}/v1/tasks", headers=admin).json()
    epoch = rewards.epoch_of(task["finished_at"], EPOCH_SEC)
    _until(lambda: rewards.epoch_of(time.time(), EPOCH_SEC) > epoch)
    closed = httpx.post(f"{hub.url}/v1/rewards/distribute", json={"epoch": epoch}, headers=admin)
    assert closed.status_code == 200, closed.text
    page.click("nav a:has-text('Owner')")
    page.fill("#owner-address", OWNER)
    page.press("#owner-address", "Enter")
    page.wait_for_selector("button:has-text('Receipt')")
    command = page.locator("code.cmd").first.inner_text()
    assert command.startswith("gpupool verify-receipt receipt-")
    with page.expect_download() as got:
        page.click("button:has-text('Receipt')")
    receipt = tmp_path / command.split()[2]
    got.value.save_as(receipt)
    checked = subprocess.run(
        [sys.executable, "-m", "gpupool", "verify-receipt", str(receipt), "--hub", hub.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    shoot(page, shots, "owner")

    # The admin: a worker registered unsigned waits for approval; one click lets it in.
    key = crypto.KeyPair.generate()
    worker = {"pubkey": key.pubkey, "owner": OWNER, "node_type": "node-H100x1"}
    assert httpx.post(f"{hub.url}/workers", json=worker).status_code == 201
    page.click("nav a:has-text('Admin')")
    page.wait_for_selector(f"#pending-workers code:has-text('{key.pubkey[:16]}')")
    shoot(page, shots, "admin")
    page.click(f"button[aria-label='approve worker {key.pubkey[:16]}']")
    page.wait_for_selector("#pending-workers:has-text('no worker waits for approval')")
    workers = httpx.get(f"{hub.url}/v1/admin/workers", headers=admin).json()
    assert {w["pubkey"]: w["status"] for w in workers}[key.pubkey] != "pending"

    # Signing out brings the form back, and the session with it is gone.
    page.click("#logout")
    assert page.is_visible("#login") and not page.is_visible("#nav")
    assert errors == []
    context.close()


@pytest.mark.parametrize("width", [390, 1280])
def test_every_page_fits_the_screen_without_horizontal_scroll(
    pool: tuple[HubProcess, NodeProcess, Path], browser: Any, tmp_path: Path, width: int
) -> None:
    hub, _node, _root = pool
    context = browser.new_context(viewport={"width": width, "height": 800 if width > 400 else 844})
    page = context.new_page()
    sign_in(page, hub.url, "admin", ADMIN_PASSWORD)
    for name in ("pool", "node/h100-replay", "tasks", "owner", "admin"):
        page.goto(f"{hub.url}/#{name}")
        page.wait_for_selector("main .card")
        page.wait_for_load_state("networkidle")
        shoot(page, tmp_path / "screenshots", f"{name.split('/')[0]}-{width}")
        assert no_horizontal_scroll(page), (name, width)
        assert not page.is_visible("#login")
    context.close()


def test_the_dashboard_is_reachable_by_keyboard(
    pool: tuple[HubProcess, NodeProcess, Path], browser: Any
) -> None:
    hub, _node, _root = pool
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(hub.url)
    page.keyboard.press("Tab")  # skip link, then the form
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "username"
    page.keyboard.type("admin")
    page.keyboard.press("Tab")
    page.keyboard.type(ADMIN_PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_selector("#nodes-card")
    focused = [page.evaluate("document.activeElement.textContent.trim()")]
    for _ in range(5):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.textContent.trim()"))
    assert {"Pool", "Tasks", "Owner", "Admin", "Sign out"} <= set(focused)
    context.close()
