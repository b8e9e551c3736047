"""The bench reports in a real browser (Debian's Chromium, as the other web tests): each kind
(drop, queue, draw, soak) rendered from a real run's JSON result in bench/results, opened as the
static file it is (no platform), a screenshot that is not blank, every chart drawn with data,
and the headline table of targets with its rows."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from snapshoe.bench import soak_report
from snapshoe.bench.report import render_file

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
# Per kind: the charts its page must draw with data.
CHARTS = {
    "drop": [
        "sell-out",
        "timeline",
        "compare-throughput",
        "compare-p99",
        "compare-sell-out",
        "latency",
    ],
    "queue": ["timeline", "streams", "cpu", "latency"],
    "draw": ["timeline", "charges", "outcome"],
    "soak": [
        "rss",
        "rss-growth",
        "open-files",
        "connections-mariadb",
        "connections-redis",
        "connections-rabbitmq",
        "latency",
        "latency-p50",
        "rps",
    ],
}
# Kinds whose page has a renderer of its own (not in ``report.render``).
RENDERERS = {"soak": soak_report.render_file}


def newest_result(kind: str) -> Path | None:
    """The checked-in result of ``kind`` that ran last (by its own ``started_at``)."""
    found = [
        (json.loads(p.read_text()).get("started_at", ""), p) for p in RESULTS.glob(f"{kind}-*.json")
    ]
    return max(found)[1] if found else None


# The screenshot drawn on a canvas in the page: how many distinct colours, and how far the
# pixels' brightness spreads (a blank page is one colour, spread 0).
PIXEL_STATS = """async (src) => {
  const img = new Image();
  await new Promise((ok, fail) => { img.onload = ok; img.onerror = fail; img.src = src; });
  const c = document.createElement("canvas");
  c.width = img.width; c.height = img.height;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  const colours = new Set();
  let sum = 0, sq = 0, n = 0;
  for (let i = 0; i < d.length; i += 4 * 7) {
    const v = (d[i] + d[i + 1] + d[i + 2]) / 3;
    sum += v; sq += v * v; n += 1;
    colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
  }
  const mean = sum / n;
  return {colours: colours.size, variance: sq / n - mean * mean, width: c.width, height: c.height};
}"""


async def pixel_stats(browser: Browser, png: bytes) -> dict[str, float]:
    page = await browser.new_page()
    try:
        src = "data:image/png;base64," + base64.b64encode(png).decode()
        stats: dict[str, float] = await page.evaluate(PIXEL_STATS, src)
        return stats
    finally:
        await page.close()


async def chart_data_marks(page: Page, name: str) -> int:
    chart = page.locator(f'svg.chart[data-chart="{name}"]')
    assert await chart.count() == 1, f"chart {name} missing"
    box = await chart.bounding_box()
    assert box is not None, name
    assert box["width"] > 300, (name, box)
    assert box["height"] > 80, (name, box)
    return await chart.locator(".data").count()


@pytest.mark.parametrize("kind", sorted(CHARTS))
async def test_report_in_a_browser(browser: Browser, tmp_path: Path, kind: str) -> None:
    source = newest_result(kind)
    assert source is not None, f"no {kind} result checked in under bench/results"
    await look_at_report(browser, source, tmp_path, kind)


async def look_at_report(browser: Browser, source: Path, tmp_path: Path, kind: str) -> None:
    charts = CHARTS[kind]
    html = RENDERERS.get(kind, render_file)(source, tmp_path / f"{kind}.html")
    page = await browser.new_page(viewport={"width": 900, "height": 900})
    try:
        await page.goto(html.as_uri())
        assert await page.title() == f"snapshoe bench {kind}"
        png = await page.screenshot(full_page=True)
        stats = await pixel_stats(browser, png)
        assert stats["height"] > 1500, stats  # the whole report, not one screen
        assert stats["colours"] > 20, stats
        assert stats["variance"] > 100, stats
        for name in charts:
            assert await chart_data_marks(page, name) > 0, f"chart {name} has no data"
        rows = page.locator("table.targets tbody tr")
        assert await rows.count() >= 2
        for k in range(await rows.count()):
            mark = await rows.nth(k).locator("td.mark").inner_text()
            assert mark.split()[0] in ("✔", "✘", "–"), mark
        assert await page.locator("table.setup tr").count() >= 5
        assert await page.locator(".verdict").count() == 1
        assert await page.locator("pre").count() == 0  # no raw JSON dumps
    finally:
        await page.close()
