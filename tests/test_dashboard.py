"""``vpbench publish``: the nightly history as a static site, opened in a real browser
(headless Chromium through Playwright): every chart drawn with its points and target line,
a click on a point opens that night's page, a corrupted night left out and named."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vpbench.cli.main import main
from vpbench.reporting.dashboard import publish

LEGACY = Path(__file__).parent / "data" / "runs" / "legacy.json"
ARTIFACTS = "VPBENCH_TEST_ARTIFACTS"
"""where the screenshot is kept after the run (.ci/run sets it), else the test's tmp_path"""
SLOWED = "course_progress"
NIGHTS = 5


def history(folder: Path, *, corrupted: bool = False) -> Path:
    """Five nights of the legacy run, ``SLOWED`` 3x slower from the fourth on with a new
    plan (as an index dropped by a commit would make it); optionally a sixth file that is
    cut short."""
    folder.mkdir()
    source = json.loads(LEGACY.read_text())
    rng = np.random.default_rng(3)
    for night in range(NIGHTS):
        document: dict[str, Any] = json.loads(json.dumps(source))
        document["metadata"]["timestamp"] = f"2026-12-0{night + 1}T02:00:00+00:00"
        document["metadata"]["git_commit"] = f"{night:x}" * 40
        for entry in document["entries"]:
            slowed = entry["name"] == SLOWED and night >= 3
            factor = rng.uniform(0.97, 1.03) * (3.0 if slowed else 1.0)
            entry["samples_ns"] = [int(ns * factor) for ns in entry["samples_ns"]]
            for key, value in (entry.get("summary") or {}).items():
                if key.endswith("_ms") and value is not None:
                    entry["summary"][key] = value * factor
            if slowed:
                for summary in entry["plan_summaries"].values():
                    summary["fingerprint"] = "e" * 16
                for explain in entry["explains"]:
                    explain["shared_hit_blocks"] *= 4
        (folder / f"2026120{night + 1}T020000Z-nightly.json").write_text(json.dumps(document))
    if corrupted:
        (folder / "20261203T030000Z-nightly.json").write_text('{"schema_version": 5, "kind"')
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's, installed by .ci/run), or a skip saying why not."""
    executable = next(
        (found for name in ("chromium", "chromium-browser", "google-chrome")
         if (found := shutil.which(name))), None)  # fmt: skip
    if executable is None:
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except sync_api.Error as exc:
            pytest.skip(f"Chromium at {executable} does not start: {str(exc).splitlines()[0]}")
        yield launched
        launched.close()


def test_the_site_draws_every_chart_and_a_point_opens_its_night(
    browser: Any, tmp_path: Path
) -> None:
    site = publish(history(tmp_path / "history"), tmp_path / "site", repository="https://x/app")
    assert site.nights == NIGHTS and site.unreadable == ()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(site.index.as_uri())
    page.wait_for_selector("body[data-rendered]", timeout=30_000)
    assert errors == []
    drawn = page.evaluate(
        """() => [...document.querySelectorAll('.chart')].map((div) => ({
            id: div.id,
            p95: div.data.find((trace) => trace.name === 'p95').y.length,
            target: div.layout.shapes.filter((shape) => shape.name === 'target')
                .map((shape) => shape.y0),
            markers: div.querySelectorAll('.scatterlayer .trace .points path').length,
            slower: (div.data.find((trace) => trace.name === 'slower') || {x: []}).x.length,
        }))"""
    )
    assert len(drawn) == site.entries == 12
    for chart in drawn:
        assert chart["p95"] == NIGHTS, chart
        assert chart["markers"] >= 2 * NIGHTS, chart  # p50 and p95 points, drawn as SVG
        assert len(chart["target"]) == 1 and chart["target"][0] > 0, chart
    # The night the slowdown landed is marked slower (a plan change confirms it); no other.
    assert {c["id"]: c["slower"] for c in drawn if c["slower"]} == {f"chart-{SLOWED}": 1}
    worst = page.locator("#latest tbody tr").first.locator("td").first.inner_text()
    rows = page.evaluate("() => window.VPBENCH.latest.map((row) => row.name)")
    assert worst == rows[0]
    kept = Path(os.environ.get(ARTIFACTS) or tmp_path)
    kept.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(kept / "dashboard.png"), full_page=True)
    assert (kept / "dashboard.png").stat().st_size > 20_000

    # A click on the p95 point of the fourth night opens that night's page.
    box = page.evaluate(
        f"""() => {{
            const div = document.getElementById('chart-{SLOWED}');
            const trace = [...div.querySelectorAll('.scatterlayer .trace')][0];
            const point = trace.querySelectorAll('.points path')[3].getBoundingClientRect();
            return {{x: point.x + point.width / 2, y: point.y + point.height / 2}};
        }}"""
    )
    page.mouse.move(box["x"], box["y"])
    page.mouse.click(box["x"], box["y"])
    page.wait_for_url("**/nights/20261204T020000Z-nightly.html", timeout=10_000)
    assert "Night 20261204T020000Z-nightly" in page.inner_text("h1")
    text = page.inner_text("body")
    assert "slower 2." in text and "https://x/app/commit/" + "3" * 40 in page.content()
    page.close()


def test_a_corrupted_night_is_left_out_and_named(browser: Any, tmp_path: Path) -> None:
    site = publish(history(tmp_path / "history", corrupted=True), tmp_path / "site")
    assert site.nights == NIGHTS and len(site.unreadable) == 1
    page = browser.new_page()
    page.goto(site.index.as_uri())
    page.wait_for_selector("body[data-rendered]", timeout=30_000)
    shown = page.inner_text("#unreadable")
    assert "20261203T030000Z-nightly.json: not a readable results file" in shown
    assert page.evaluate("() => document.querySelectorAll('.chart').length") == 12
    page.close()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: tmp / "missing", "no such history folder"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "no readable nightly run"),
    ],
    ids=["missing", "empty"],
)
def test_publish_refuses_a_history_with_nothing_to_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, expected: str
) -> None:
    folder = make(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["publish", str(folder), "--out", str(tmp_path / "site")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "site").exists()


def test_publish_refuses_an_unwritable_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(["publish", str(history(tmp_path / "history")), "--out", str(blocker / "site")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and "cannot write results" in lines[0]
