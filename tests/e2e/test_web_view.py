"""The web view in a real browser (Debian's chromium, driven by playwright) against a real
server: a canary of the demo app waits for promotion, under traffic; the page lists it, shows
its steps, weights, analysis windows, decision log and tasks; promote, confirmed, and the phase
turns to succeeded on the page by itself — from the event stream, without a reload. A wrong
token gets one clear message and the form again.

``WARREN_UI_SCREENSHOT=docs/ui.png`` also keeps the screenshot taken (the README's)."""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import ServerProcess, free_port, wait_for, warren
from warren.domain.deployments import Phase

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WAIT_MS = 30_000
"""The longest any step in the browser may take (a promotion replaces the stable tasks)."""
WIDTH, HEIGHT = 1280, 800

SERVICE = """
apiVersion: warren.io/v1
kind: Service
metadata: {name: web}
spec:
  command: ["python", "-m", "warren.demo.app"]
  replicas: 2
  env: {VERSION: v1}
  ports: [{published: PORT}]
  healthCheck: {http: {path: /healthz}, interval: 200ms, retries: 25}
  deploy:
    strategy: canary
    canary:
      steps:
        - setWeight: 30
        - pause: {}
      analysis: {interval: 1s, successRate: 0.9, minRequests: 3}
"""


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is missing: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is missing: pip install -e '.[dev]'")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=WAIT_MS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def traffic() -> Iterator[list[int]]:
    """Requests to the port put in the list, until the test ends (the canary's analysis
    windows need some)."""
    ports: list[int] = []
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(timeout=2) as http:
            while not stop.wait(0.02):
                for port in ports:
                    with contextlib.suppress(httpx.HTTPError):
                        http.get(f"http://127.0.0.1:{port}/")

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    yield ports
    stop.set()
    thread.join(10)


def _canary_awaiting_promotion(server: ServerProcess, tmp_path: Path, traffic: list[int]) -> None:
    port = free_port()
    manifest = tmp_path / "web.yaml"
    manifest.write_text(SERVICE.replace("PORT", str(port)))
    applied = warren(server, "apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    client = server.client()
    wait_for(lambda: client.deployment_status("web").ready_tasks == 2, 30, "web's tasks")
    traffic.append(port)
    update = warren(server, "service", "update", "web", "--env", "VERSION=v2", "--detach")
    assert update.returncode == 0, update.stderr
    wait_for(
        lambda: client.deployment_status("web").phase == Phase.AWAITING_PROMOTION, 30,
        "the canary at its pause",
    )  # fmt: skip
    # Two analysis windows with figures: something to draw.
    wait_for(
        lambda: sum(
            1 for d in client.deployment_status("web").decisions
            if d.reason == "AnalysisPassed" and d.measured.get("requests")
        ) >= 2, 30, "two analysis windows",
    )  # fmt: skip


def test_a_rollout_seen_and_promoted_in_the_browser(
    server: ServerProcess, tmp_path: Path, browser: Any, traffic: list[int]
) -> None:
    _canary_awaiting_promotion(server, tmp_path, traffic)
    token = (server.data_dir / "admin.token").read_text().strip()
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    sent: list[tuple[str, str]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization", ""))))
    page.on("dialog", lambda dialog: dialog.accept())
    errors: list[str] = []  # a script error, or something the page's CSP blocked
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))

    page.goto(f"{server.addr}/ui/#token={token}")
    # The services page: the canary, awaiting promotion; the token out of the address bar.
    row = page.locator("#services-rows tr[data-service=web]")
    row.locator("[data-phase=awaiting_promotion]").wait_for()
    assert "token" not in page.url
    # As `warren service ls` counts them: ready tasks of any revision (the canary's too).
    assert row.locator("td").nth(1).inner_text() == "3 / 2"
    assert row.locator("td").nth(2).inner_text() == "canary"
    page.locator("#live.on").wait_for()

    # Its rollout page.
    row.locator("a").click()
    page.locator("#rollout-facts [data-phase=awaiting_promotion]").wait_for()
    assert page.locator("#rollout-title").inner_text() == "web"
    current = page.locator("#steps li[aria-current=step]")
    assert current.inner_text() == "pause until promoted"
    assert page.locator("#steps li.done").all_inner_texts() == ["set weight 30%"]
    bars = {
        b.get_attribute("data-revision"): b.locator(".pct").inner_text()
        for b in page.locator("#weights .bar-row").all()
    }
    assert bars == {"1": "70%", "2": "30%"}
    reasons = page.locator("#decisions tr").evaluate_all("rows => rows.map(r => r.dataset.reason)")
    assert {"NewRevision", "CanaryScaled", "WeightSet", "AwaitingPromotion"} <= set(reasons)
    assert page.locator("#analysis svg.chart circle.dot-rate").count() >= 2
    tasks = page.locator("#tasks tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    assert sorted(t[1] for t in tasks if t[3] == "running") == ["1", "1", "2"], tasks
    assert all(t[2] == "test-node" for t in tasks)
    assert page.locator("button[data-action=resume]").is_disabled()

    shot = page.screenshot()
    _check_screenshot(shot, page)
    if os.environ.get("WARREN_UI_SCREENSHOT"):
        Path(os.environ["WARREN_UI_SCREENSHOT"]).write_bytes(shot)

    # Promote, confirmed: the answer, then the phase from the event stream alone.
    page.evaluate("window.stillTheSamePage = true")
    page.locator("button[data-action=promote]").click()
    page.locator("#action-result.ok").wait_for()
    assert page.locator("#action-result").inner_text().startswith("promote: deployment web-1")
    page.locator("#rollout-facts [data-phase=succeeded]").wait_for()
    assert page.evaluate("window.stillTheSamePage") is True
    assert page.locator("#live").inner_text() == "live"
    assert page.locator("#steps li[aria-current=step]").count() == 0
    assert {b.get_attribute("data-revision") for b in page.locator("#weights .bar-row").all()} == {
        "2"
    }

    # The token went to this server only, in the header: never in an address.
    assert sent and all(token not in url for url, _ in sent)
    api_calls = [(url, auth) for url, auth in sent if "/v1/" in url]
    assert api_calls and all(auth == f"Bearer {token}" for _, auth in api_calls)
    assert any("/v1/events/stream" in url for url, _ in api_calls)
    assert errors == []
    context.close()


AB_TEST = """
apiVersion: warren.io/v1
kind: Service
metadata: {name: shop}
spec:
  command: ["python", "-m", "warren.demo.app"]
  replicas: 2
  env: {VERSION: v1}
  ports: [{published: PORT}]
  healthCheck: {http: {path: /healthz}, interval: 200ms, retries: 25}
  deploy:
    strategy: ab-test
    abTest: {weight: 50, duration: 5m, interval: 1s, minRequests: 5}
"""


def test_an_ab_tests_figures_side_by_side_in_the_browser(
    server: ServerProcess, tmp_path: Path, browser: Any, traffic: list[int]
) -> None:
    """Before: the A/B figures (a heading, a table, a note) were drawn as the text
    "[object HTMLHeadingElement],…"."""
    port = free_port()
    manifest = tmp_path / "shop.yaml"
    manifest.write_text(AB_TEST.replace("PORT", str(port)))
    assert warren(server, "apply", "-f", str(manifest)).returncode == 0
    traffic.append(port)
    update = warren(server, "service", "update", "shop", "--env", "VERSION=v2", "--detach")
    assert update.returncode == 0, update.stderr
    client = server.client()
    wait_for(lambda: bool(client.deployment_status("shop").experiment), 30, "the figures")
    token = (server.data_dir / "admin.token").read_text().strip()
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{server.addr}/ui/#/services/shop&token={token}")
    figures = page.locator("#weights table")
    figures.wait_for()
    heads = figures.locator("tbody th").all_inner_texts()
    assert heads == ["A: revision 1", "B: revision 2"], heads
    assert "[object" not in page.locator("#weights").inner_text()
    context.close()


def test_a_wrong_token_shows_one_message_and_the_form(server: ServerProcess, browser: Any) -> None:
    token = (server.data_dir / "admin.token").read_text().strip()
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{server.addr}/ui/#token=not-the-token")
    error = page.locator("#login-error")
    error.wait_for()
    assert "refused this token" in error.inner_text()
    assert page.locator("#login-form").is_visible()
    assert page.locator("#services").is_hidden()
    assert page.evaluate("sessionStorage.getItem('warren.token')") is None

    # The right one, through the form: in.
    page.locator("#token").fill(token)
    page.locator("#login-form button[type=submit]").click()
    page.locator("#services").wait_for()
    page.locator("#services-empty").wait_for()
    assert page.locator("#login").is_hidden()
    assert page.evaluate("sessionStorage.getItem('warren.token')") == token
    context.close()


# ── the screenshot, checked structurally ─────────────────────────────────────────────────────


def _check_screenshot(png: bytes, page: Any) -> None:
    """1280x800, not blank (many colours, none covering nearly all of it), and the new
    revision's bar drawn: its filled part another colour than its empty part."""
    width, height, pixels = _decode_png(png)
    assert (width, height) == (WIDTH, HEIGHT)
    counts = Counter(pixels)
    assert len(counts) >= 20, f"{len(counts)} colours"
    assert counts.most_common(1)[0][1] < 0.9 * width * height
    bar = page.locator("#weights .bar-row[data-revision='2'] .bar").bounding_box()
    assert bar is not None
    y = int(bar["y"] + bar["height"] / 2)
    filled = pixels[y * width + int(bar["x"] + 0.15 * bar["width"])]  # 30% of it is filled
    empty = pixels[y * width + int(bar["x"] + 0.85 * bar["width"])]
    assert filled != empty, (filled, empty)


def _decode_png(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """A PNG of 8-bit RGB or RGBA, not interlaced (what chromium writes), into pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, idat = 8, {}, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IDAT":
            idat += body
        chunks.setdefault(kind, body)
        pos += 12 + length
    width, height, depth, colour, _c, _f, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    n = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * n
    rows: list[bytearray] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(kind, line, prev, n)
        rows.append(line)
        prev = line
    pixels = [tuple(r[i : i + n]) for r in rows for i in range(0, stride, n)]
    return width, height, pixels


def _unfilter(kind: int, line: bytearray, prev: bytearray, n: int) -> None:
    for i in range(len(line)):
        a = line[i - n] if i >= n else 0
        b = prev[i]
        c = prev[i - n] if i >= n else 0
        if kind == 1:
            line[i] = (line[i] + a) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + b) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (a + b) // 2) & 0xFF
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            predictor = a if pa <= pb and pa <= pc else b if pb <= pc else c
            line[i] = (line[i] + predictor) & 0xFF
