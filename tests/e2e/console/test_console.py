"""The web console in headless Chromium (Debian `chromium`, driven by Playwright).

The page is opened first; a trigger produced afterwards must appear in the live
feed (WebSocket), and the experiment chart (SVG) must draw a conversion-rate
point and a 95% interval per variant that has exposures; the funnel table has a row
per rule and step (entered, sent, suppressed and exited by reason, converted) with
its bar. The live rules section (issue 20.5) shows the version and its history with
diffs, counts sends by version, and pauses and resumes a rule from its button.
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright

from tests.fixtures.workers import ARTIFACTS

pytestmark = pytest.mark.kafka

CONFIG = Path(__file__).resolve().parents[2] / "integration" / "audit" / "configs" / "audit.yaml"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian's chromium is required (make install adds it)"
    return path


@asynccontextmanager
async def _live_console(url: str, errors: list[str]) -> AsyncIterator[Page]:
    """The console open in headless Chromium, connected live; page errors go to `errors`."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(url + "/")
        await page.wait_for_selector("#status.live", timeout=30_000)
        yield page
        await browser.close()


def _event(user: str, type_: str, ts: int, **props: object) -> dict:
    return {
        "event_id": uuid.uuid4().hex,
        "user_id": user,
        "type": type_,
        "ts": ts,
        "properties": props,
    }


async def test_console_shows_live_triggers_and_the_experiment_chart(start_worker, receiver) -> None:
    worker = start_worker(CONFIG, env={"AUDIT_HOOK_URL": receiver.url})
    now = int(time.time() * 1000)
    shoppers = [f"shopper-{i}" for i in range(12)]
    carts = [_event(u, "cart_add", now, product_id="p1", price=80.0) for u in shoppers]
    assert (await worker.post_events(carts))[0] == 202

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    async with _live_console(worker.url, errors) as page:
        # Exposures arrive once the 2 s inactivity timers fire; then half the shoppers buy.
        await page.wait_for_function(
            "document.querySelectorAll('#feed li[data-kind=trigger][data-rule=cart_reminder]')"
            f".length >= {len(shoppers)}",
            timeout=60_000,
        )
        buys = [_event(u, "purchase", int(time.time() * 1000)) for u in shoppers[::2]]
        assert (await worker.post_events(buys))[0] == 202

        # A trigger produced while the page is open shows up in the live feed.
        visitor = f"visitor-{uuid.uuid4().hex[:6]}"
        assert (await worker.post_events([_event(visitor, "ping", int(time.time() * 1000))]))[
            0
        ] == 202
        row = await page.wait_for_selector(
            f"#feed li[data-kind=trigger][data-user={visitor}]", timeout=30_000
        )
        assert "ping" in await row.inner_text()

        # The chart: a rate point and a CI line per variant with exposures; conversions counted.
        await page.wait_for_function(
            "[...document.querySelectorAll('.experiment[data-rule=cart_reminder] tbody tr')]"
            ".reduce((n, tr) => n + Number(tr.children[6].textContent), 0) >= 1",
            timeout=30_000,
        )
        chart = page.locator(".experiment[data-rule=cart_reminder] svg.ci-chart")
        await chart.wait_for(timeout=10_000)
        drawn = await page.eval_on_selector(
            ".experiment[data-rule=cart_reminder]",
            """box => ({
                exposed: [...box.querySelectorAll('tbody tr')]
                    .filter(r => Number(r.children[1].textContent) > 0).length,
                points: box.querySelectorAll('svg.ci-chart circle.rate').length,
                intervals: box.querySelectorAll('svg.ci-chart line.ci').length,
            })""",
        )
        assert drawn["exposed"] >= 1
        assert drawn["points"] == drawn["intervals"] == drawn["exposed"]
        counters = await page.inner_text("#counters")
        assert "cart_reminder" in counters and "ping" in counters

        # The funnel per rule and step: every shopper entered step 0; each was sent the
        # reminder or held back as control; the buyers' conversions are the step's.
        step0 = ".funnel[data-rule=cart_reminder] tbody tr[data-step='0']"
        await page.wait_for_function(
            f"""(r => {{
                if (!r) return false;
                const n = (i) => parseInt(r.children[i].textContent, 10);
                return n(2) === {len(shoppers)} && n(3) + n(4) === n(2) && n(6) >= 1;
            }})(document.querySelector("{step0}"))""",
            timeout=30_000,
        )
        row = await page.eval_on_selector(
            step0,
            """r => ({cells: [...r.children].slice(0, 7).map(c => c.textContent),
                      bars: r.querySelectorAll('svg.funnel-bar rect.sent').length})""",
        )
        assert row["cells"][:2] == ["0", "send"] and row["bars"] == 1
        held_back = row["cells"][4]  # "0", or "2 (control 2)": the control group, by reason
        assert held_back == "0" or held_back.endswith(f"(control {held_back.split()[0]})")

        await page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)
    assert errors == []


async def test_console_shows_the_live_rules_and_pauses_one(start_worker, receiver) -> None:
    """Issue 20.5: the live version, its history with diffs, pause/resume, sends by version."""
    worker = start_worker(CONFIG, env={"AUDIT_HOOK_URL": receiver.url})
    errors: list[str] = []
    async with _live_console(worker.url, errors) as page:
        await page.wait_for_function(
            "document.getElementById('rules-live').textContent.startsWith('live version 1')",
            timeout=30_000,
        )
        first = (await page.text_content("#rules-history details[data-version='1'] pre.diff")) or ""
        assert first.startswith("--- (nothing live)") and "+rules:" in first

        user = f"visitor-{uuid.uuid4().hex[:6]}"
        assert (await worker.post_events([_event(user, "ping", int(time.time() * 1000))]))[0] == 202
        await page.wait_for_selector(
            "#rules-table tr[data-rule=ping] td[data-version='1']:not(:text-is('0'))",
            timeout=30_000,
        )

        await page.click("#rules-table tr[data-rule=ping] button[data-action=pause]")
        await page.wait_for_selector(
            "#rules-table tr[data-rule=ping] button[data-action=resume]", timeout=30_000
        )
        second = (
            await page.text_content("#rules-history details[data-version='2'] pre.diff")
        ) or ""
        assert "+# paused: ping" in second
        assert "live version 2" in await page.inner_text("#rules-live")

        await page.click("#rules-table tr[data-rule=ping] button[data-action=resume]")
        await page.wait_for_selector(
            "#rules-table tr[data-rule=ping] button[data-action=pause]", timeout=30_000
        )
        third = (await page.text_content("#rules-history details[data-version='3'] pre.diff")) or ""
        assert "-# paused: ping" in third
        await page.screenshot(path=str(ARTIFACTS / "console_rules.png"), full_page=True)
    assert errors == []
