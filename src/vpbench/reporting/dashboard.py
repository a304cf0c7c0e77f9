"""``vpbench publish``: the nightly history as a static site to browse, like asv's.

One ``index.html`` with its assets beside it (plotly.js, bundled, so nothing is fetched at
view time; the data as a script, so the page works from ``file://`` as from GitHub Pages):
per query and scenario, its p50 and p95 across nights with its target line, the change
points and the verdicts against the night before marked, each point opening that night's
page (its figures, its commit); a table of the latest night, worst entries first; a filter
by workload. A night whose document cannot be read is left out and named on the page.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import subprocess
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from vpbench.analysis.changepoint import detect_change_points
from vpbench.analysis.comparison import Comparison, compare_sides, load_sides
from vpbench.errors import ResultsFormatError, VpbenchError
from vpbench.results.documents import KIND_AB, history_documents, results_folder

ASSETS = ("dashboard.js", "dashboard.css")


@dataclass(frozen=True)
class Night:
    """One stored nightly run."""

    path: Path
    document: dict[str, Any]

    @property
    def id(self) -> str:
        return self.path.stem

    @property
    def commit(self) -> str:
        return str(self.document["metadata"].get("git_commit") or "")

    @property
    def timestamp(self) -> str:
        return str(self.document["metadata"].get("timestamp") or "")

    @property
    def paired(self) -> bool:
        """Measured paired against the night it was judged against (``ci nightly``)."""
        return bool(self.document["kind"] == KIND_AB)

    @property
    def entries(self) -> list[dict[str, Any]]:
        """Tonight's entries: the run's, or the paired session's "after" side."""
        return list(self.document["after" if self.paired else "entries"])


@dataclass(frozen=True)
class History:
    nights: tuple[Night, ...]
    """oldest first"""
    unreadable: tuple[str, ...]
    """one line per file left out: its name and why"""


@dataclass(frozen=True)
class Published:
    index: Path
    nights: int
    entries: int
    unreadable: tuple[str, ...]


def read_history(history: Path) -> History:
    """The run documents of ``history``, oldest first; those that cannot be read are named
    and left out. Refuses a missing folder, or one with no readable night."""
    if not history.is_dir():
        raise ResultsFormatError("no such history folder", path=history)
    documents, unreadable = history_documents(history)
    nights = [Night(path, document) for path, document in documents]
    if not nights:
        why = f" ({unreadable[0]})" if unreadable else ""
        raise ResultsFormatError(f"no readable nightly run in the history{why}", path=history)
    nights.sort(key=lambda night: (night.timestamp, night.id))
    return History(tuple(nights), tuple(unreadable))


def publish(history: Path, out_dir: Path, *, repository: str | None = None) -> Published:
    """Write the site for ``history`` into ``out_dir``. ``repository``: the web address
    commits link to (default: the GitHub repository the environment or ``origin`` names)."""
    found = read_history(history)
    repository = repository if repository is not None else repository_url()
    with results_folder(out_dir):
        comparisons = judge_nights(found)
        data = site_data(found, comparisons, repository)
        assets = out_dir / "assets"
        assets.mkdir(exist_ok=True)
        _write_plotly(assets / "plotly.min.js")
        site = files("vpbench.reporting") / "site"
        for name in ASSETS:
            (assets / name).write_text(site.joinpath(name).read_text("utf-8"), "utf-8")
        (out_dir / "data.js").write_text(
            "window.VPBENCH = " + json.dumps(data, allow_nan=False) + ";\n", "utf-8"
        )
        pages = out_dir / "nights"
        pages.mkdir(exist_ok=True)
        for night, comparison in zip(found.nights, comparisons, strict=True):
            (pages / f"{night.id}.html").write_text(
                night_page(night, comparison, repository), "utf-8"
            )
        index = out_dir / "index.html"
        index.write_text(site.joinpath("index.html").read_text("utf-8"), "utf-8")
    return Published(index, len(found.nights), len(data["entries"]), found.unreadable)


def repository_url() -> str | None:
    """The repository's web address: GitHub Actions' own, else ``origin``'s if it is one."""
    server, name = os.environ.get("GITHUB_SERVER_URL"), os.environ.get("GITHUB_REPOSITORY")
    if server and name:
        return f"{server}/{name}"
    try:
        origin = subprocess.run(["git", "remote", "get-url", "origin"], capture_output=True,
                                text=True, check=False, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    ssh = re.match(r"^git@([^:]+):(.+?)(?:\.git)?$", origin)
    if ssh:
        return f"https://{ssh[1]}/{ssh[2]}"
    return origin.removesuffix(".git") if origin.startswith("https://") else None


def site_data(
    found: History, comparisons: list[Comparison | None], repository: str | None
) -> dict[str, Any]:
    """What ``dashboard.js`` draws: the nights, and per entry its points across them with
    the verdict of each night against the one before (``judge_nights``)."""
    nights = [
        {
            "id": night.id,
            "timestamp": night.timestamp,
            "commit": night.commit,
            "commit_url": _commit_url(repository, night.commit),
            "label": night.document["metadata"].get("label") or night.id,
            "page": f"nights/{night.id}.html",
        }
        for night in found.nights
    ]
    entries: dict[str, dict[str, Any]] = {}
    for index, (night, comparison) in enumerate(zip(found.nights, comparisons, strict=True)):
        judged = {row.name: row for row in comparison.rows} if comparison else {}
        for entry in night.entries:
            summary = entry.get("summary") or {}
            if summary.get("p95_ms") is None:
                continue
            found_entry = entries.setdefault(
                entry["name"],
                {"name": entry["name"], "kind": entry["kind"], "workload": entry["workload"],
                 "target_ms": entry.get("target_ms"), "points": []},
            )  # fmt: skip
            row = judged.get(entry["name"])
            found_entry["target_ms"] = entry.get("target_ms") or found_entry["target_ms"]
            found_entry["points"].append(
                {
                    "night": index,
                    "p50": summary.get("p50_ms"),
                    "p95": summary["p95_ms"],
                    "verdict": row.judgement.verdict if row else None,
                    "ratio": _finite(row.judgement.estimate.ratio) if row else None,
                    "low": _finite(row.judgement.estimate.low) if row else None,
                    "high": _finite(row.judgement.estimate.high) if row else None,
                    "paired": row is not None and comparison is not None
                    and comparison.paired_session,
                }
            )  # fmt: skip
    for entry in entries.values():
        p95s = [point["p95"] for point in entry["points"]]
        nights_of = [point["night"] for point in entry["points"]]
        entry["change_points"] = [
            {"night": nights_of[point.index], "ratio": point.ratio}
            for point in detect_change_points(p95s)
        ]
    return {
        "nights": nights,
        "entries": sorted(entries.values(), key=lambda e: (e["workload"], e["name"])),
        "latest": _latest(entries, len(nights) - 1),
        "unreadable": list(found.unreadable),
    }


def _latest(entries: dict[str, dict[str, Any]], last: int) -> list[dict[str, Any]]:
    """The latest night's entries, worst first: furthest over (or least under) the target,
    then slowest p95."""
    rows = []
    for entry in entries.values():
        point = next((p for p in entry["points"] if p["night"] == last), None)
        if point is None:
            continue
        target = entry["target_ms"]
        share = point["p95"] / target if target else None
        rows.append({"name": entry["name"], "workload": entry["workload"], "p50": point["p50"],
                     "p95": point["p95"], "target_ms": target, "of_target": share,
                     "verdict": point["verdict"], "ratio": point["ratio"]})  # fmt: skip
    return sorted(rows, key=lambda r: (-(r["of_target"] or 0.0), -r["p95"]))


def judge_nights(found: History) -> list[Comparison | None]:
    """Each night's verdicts: a paired night's own (against the night it was measured
    with); a run judged against the run before it, as runs collected apart (relative to
    the machine's drift). None for the first run, and where two cannot be compared
    (another profile, seed or server)."""
    judged: list[Comparison | None] = []
    previous: Night | None = None
    for night in found.nights:
        sides = [night.path] if night.paired else [previous.path, night.path] if previous else []
        previous = night
        try:
            base, new, paired = load_sides(sides) if sides else (None, None, False)
            judged.append(compare_sides(base, new, paired_session=paired) if base and new else None)
        except VpbenchError:
            judged.append(None)
    return judged


def night_page(night: Night, comparison: Comparison | None, repository: str | None) -> str:
    """One night's page: what ran, its commit, and every entry's figures and verdict."""
    meta = night.document["metadata"]
    commit = night.commit
    url = _commit_url(repository, commit)
    linked = f'<a href="{html.escape(url)}">{html.escape(commit[:12])}</a>' if url else (
        html.escape(commit[:12]) or "unknown")  # fmt: skip
    judged = {row.name: row for row in comparison.rows} if comparison else {}
    rows = []
    for entry in night.entries:
        summary = entry.get("summary") or {}
        row = judged.get(entry["name"])
        verdict = f"{row.judgement.verdict} {_ratio_text(row)}" if row else ""
        rows.append(
            "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in (
                entry["name"], entry["workload"], _ms(summary.get("p50_ms")),
                _ms(summary.get("p95_ms")), _ms(entry.get("target_ms")), verdict)) + "</tr>"
        )  # fmt: skip
    against = (
        (
            f"against {html.escape(comparison.base.label)}, measured paired in one session"
            if comparison.paired_session
            else "against the night before, runs collected apart"
        )
        + (f"; {html.escape(comparison.drift.note)}" if comparison.drift else "")
        if comparison
        else "the first night: nothing to judge it against"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vpbench night {html.escape(night.id)}</title>
<link rel="stylesheet" href="../assets/dashboard.css"></head>
<body class="night"><p><a href="../index.html">all nights</a></p>
<h1>Night {html.escape(night.id)}</h1>
<p>{html.escape(night.timestamp)} · commit {linked} · profile
{html.escape(str((meta.get("seed") or {}).get("profile", "?")))} ·
PostgreSQL {html.escape(str((meta.get("postgres") or {}).get("server_version", "?")))}</p>
<p>Verdicts: {against}.</p>
<table><thead><tr><th>entry</th><th>workload</th><th>p50</th><th>p95</th><th>target</th>
<th>verdict [95% CI]</th></tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""


def _ratio_text(row: Any) -> str:
    estimate = row.judgement.estimate
    if not all(math.isfinite(v) for v in (estimate.ratio, estimate.low, estimate.high)):
        return ""
    return f"{estimate.ratio:.2f}x [{estimate.low:.2f}, {estimate.high:.2f}]"


def _ms(value: Any) -> str:
    return "" if value is None else f"{float(value):,.2f} ms"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _commit_url(repository: str | None, commit: str) -> str | None:
    return f"{repository}/commit/{commit}" if repository and commit else None


def _write_plotly(path: Path) -> None:
    """plotly.js as the plotly package ships it: the page needs no network."""
    from plotly.offline import get_plotlyjs  # type: ignore[import-untyped, unused-ignore]

    path.write_text(get_plotlyjs(), "utf-8")
