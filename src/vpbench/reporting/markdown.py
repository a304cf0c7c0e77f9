"""``vpbench report``: Markdown for a pull request, with PNG charts beside it.

The first line says what a reviewer needs: which targets pass, the biggest win, any
regression. Tables follow; images are referenced relatively so the folder can be attached
or committed as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vpbench.analysis.comparison import Comparison, compare_sides, load_sides
from vpbench.analysis.verdicts import DEFAULT_ALPHA, DEFAULT_THRESHOLD, Threshold
from vpbench.migrations.folder import short_ids
from vpbench.reporting import charts
from vpbench.reporting.comparison_report import comparison_markdown, comparison_table
from vpbench.reporting.provenance import describe_data
from vpbench.reporting.run_report import run_report
from vpbench.reporting.traffic_tables import (
    availability_table,
    deploy_cell,
    old_app_table,
    timeline_chart,
)
from vpbench.reporting.units import human_bytes, ratio, short_ms
from vpbench.results.documents import KIND_RUN, ensure_writable, read_document, results_folder

REPORT = "report.md"


def build_report(
    inputs: Sequence[Path],
    out_dir: Path,
    *,
    threshold: Threshold = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    force: bool = False,
) -> Path:
    """A steps folder gives the migration-series report, one run document the run's report;
    one step/ab document or two runs give a before/after comparison report."""
    with results_folder(out_dir):
        if len(inputs) == 1 and (inputs[0] / "summary.json").is_file():
            return _write(out_dir, _steps_report(inputs[0], out_dir, threshold, alpha))
        if len(inputs) == 1 and inputs[0].is_file():
            document = read_document(inputs[0])
            if document.get("kind") == KIND_RUN:
                return _write(out_dir, run_report(document, out_dir))
        base, new, paired = load_sides(list(inputs))
        comparison = compare_sides(
            base, new, paired_session=paired, threshold=threshold, alpha=alpha, force=force
        )
        return comparison_report(comparison, out_dir)


def comparison_report(comparison: Comparison, out_dir: Path) -> Path:
    """The before/after report of a comparison already judged (its charts beside it)."""
    ensure_writable(out_dir)
    return _write(out_dir, comparison_markdown(comparison, out_dir))


def _write(out_dir: Path, text: str) -> Path:
    path = out_dir / REPORT
    path.write_text(text, encoding="utf-8")
    return path


def _p(samples: list[int], q: int) -> float | None:
    return float(np.percentile(np.asarray(samples) / 1e6, q)) if samples else None


# -- steps -----------------------------------------------------------------------------


def _steps_report(folder: Path, out: Path, threshold: Threshold, alpha: float) -> str:
    summary = read_document(folder / "summary.json")
    steps = [read_document(folder / row["document"]) for row in summary["steps"]]
    if not steps:  # the database was at the series' end already (a copy of one, say)
        data = f" Data: {describe_data(summary['data'])}." if summary.get("data") else ""
        return f"**0 migrations:** none was pending, so nothing was measured.{data}\n"
    latency = _latency_frame(steps)
    charts.steps_latency_chart(latency, out / "steps-latency.png")
    charts.cost_chart(_cost_frame(summary), out / "steps-cost.png")
    charts.integrity_chart(_integrity_frame(steps), out / "steps-integrity.png")
    lines = [_steps_headline(summary, latency), ""]
    if summary.get("data"):
        lines += [f"Data: {describe_data(summary['data'])}.", ""]
    lines += ["![latency across the migration series](steps-latency.png)", ""]
    labels = _headline_labels(summary)
    lines += [
        "| step | "
        + " | ".join(labels)
        + " | violations | index size | inserts | old app | reversible | checks |"
    ]
    lines += ["|---" * (len(labels) + 7) + "|"]
    for row in summary["steps"]:
        heads = {h["label"]: h for h in row["headlines"]}
        cells = [f"`{row['migration']}`"]
        cells += [_headline_cell(heads[label]) if label in heads else "" for label in labels]
        before, after = row["audit_violations"]
        cells += [
            f"{before:,} → {after:,}",
            human_bytes(row["index_bytes_added"], signed=True),
            "<br>".join(_write_cell(w) for w in row.get("writes", [])),
            deploy_cell(row),
            "yes" if row["reversible"] else "**no**",
            "pass" if row["passed"] else "**FAIL**",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Each cell: p95 before → after; the paired ratio (median of after/before pairs) with "
        f"its 95% interval over rounds, and the verdict at {threshold}; *sees ±x%*: the "
        "smallest change the step could have detected. Inserts: WAL per inserted row "
        "(deterministic) and the paired insert time.",
    ]
    online = [s["migration"] for s in steps if s["migration"].get("online")]
    if online:
        lines += ["", "Run online by alembic, on vpbench's connection (their statements are not "
                  "observed one by one): " + "; ".join(f"`{m['id']}`: {m['online']}"
                                                       for m in online) + "."]  # fmt: skip
    lines += availability_table(steps)
    lines += _audit_tables(steps)
    lines += _time_table(summary)
    lines += old_app_table(steps)
    lines += _index_table(steps)
    lines += ["", "### What the series taught", ""]
    lines += [f"- **{k.replace('_', ' ')}**: {v}" for k, v in summary["answers"].items()]
    lines += [
        "",
        "![cost per step](steps-cost.png)",
        "",
        "![integrity violations per step](steps-integrity.png)",
        "",
    ]
    for document, path in zip(
        steps, [folder / r["document"] for r in summary["steps"]], strict=True
    ):
        base, new, _ = load_sides([path])
        comparison = compare_sides(base, new, paired_session=True, threshold=threshold, alpha=alpha)
        lines += [f"### `{document['migration']['id']}` — {document['migration']['title']}", ""]
        lines += [document["migration"]["why"].strip(), ""]
        lines += [*comparison_table(comparison), ""]
        lines += timeline_chart(document, out)
    return "\n".join(lines)


def _time_table(summary: dict[str, Any]) -> list[str]:
    """Where the series' wall time went, phase by phase (summaries that recorded it)."""
    spent = summary.get("time")
    if not spent:
        return []
    lines = ["", "### Where the time went", ""]
    lines += ["| phase | seconds | share |", "|---|---:|---:|"]
    lines += [f"| {r['phase']} | {r['seconds']:.1f} | {r['share']:.0%} |" for r in spent["phases"]]
    lines.append(f"| **total** | **{summary['seconds']:.1f}** | 100% |")
    peak = spent.get("peak_disk_bytes")
    lines += [
        "",
        "The harness's own share (all but the migrations' `up` and `down` and the paired rounds): "
        f"{spent['harness_share']:.0%}."
        + (f" Peak extra disk of a step: {human_bytes(peak)}." if peak is not None else ""),
    ]
    return lines


def _index_table(steps: list[dict[str, Any]]) -> list[str]:
    """Every index a step added: the queries that use it and their gain, its bytes and the
    insert cost of its table."""
    added = [(d["migration"]["id"], i) for d in steps for i in d.get("indexes", [])]
    if not added:
        return []
    lines = ["", "### Which index gave the gain", ""]
    lines += ["| step | index | size | used by (paired ratio, verdict) | inserts into its table |"]
    lines += ["|---|---|---:|---|---|"]
    for step, index in added:
        used = "<br>".join(
            f"`{u['query']}` {_interval(u['judgement'])} {_verdict_text(u['judgement'])}"
            for u in index["used_by"]
        )
        wal = index.get("insert_wal_bytes")
        insert = f"WAL {human_bytes(wal[0])} → {human_bytes(wal[1])}/row" if wal else "not measured"
        if index["sharing_write_cost"] > 1:
            insert += f" (shared by the step's {index['sharing_write_cost']} new indexes)"
        lines.append(
            f"| `{step}` | `{index['index']}` | {human_bytes(index['bytes'])} | "
            f"{used or _unused(index.get('foreign_keys', []))} | {insert} |"
        )
    lines += [
        "",
        "Used by: the workload queries whose EXPLAIN after the step uses the index. The insert "
        "cost is measured per table, so the indexes a step adds to one table share it.",
    ]
    return lines


def _unused(foreign_keys: list[str]) -> str:
    """What an index no workload query uses is for: a foreign key, or nothing."""
    if not foreign_keys:
        return "**pure cost**: no workload query uses it"
    keys = ", ".join(f"`{key}`" for key in foreign_keys)
    return (f"no workload query; serves the foreign key {keys} (a delete in the parent "
            "finds the referencing rows by it)")  # fmt: skip


def _verdict_text(judgement: dict[str, Any]) -> str:
    verdict = str(judgement["verdict"])
    return f"**{verdict}**" if verdict in ("faster", "slower") else verdict


def _interval(judgement: dict[str, Any]) -> str:
    if judgement.get("ratio") is None:
        return ""
    if judgement.get("ci_low") is None or judgement.get("ci_high") is None:
        return f"{ratio(judgement['ratio'])}x"
    low, middle, high = (ratio(judgement[k]) for k in ("ci_low", "ratio", "ci_high"))
    return f"{middle}x [{low}, {high}]"


def _headline_cell(headline: dict[str, Any]) -> str:
    cell = f"{short_ms(headline['before_p95_ms'])} → {short_ms(headline['after_p95_ms'])} ms"
    judgement = headline.get("judgement")
    if judgement:
        seen = f", sees ±{judgement['mde']:.0%}" if judgement.get("mde") is not None else ""
        cell += f"<br>{_interval(judgement)} {_verdict_text(judgement)}{seen}"
    return cell


def _write_cell(write: dict[str, Any]) -> str:
    if write.get("error") or write.get("wal_bytes_before") is None:
        return f"{write['table']}: {write.get('error') or 'not measured'}"
    cell = (
        f"{write['table']}: WAL {human_bytes(write['wal_bytes_before'])} → "
        f"{human_bytes(write['wal_bytes_after'])}/row"
    )
    if write.get("timing"):
        cell += f", insert {_interval(write['timing'])} {_verdict_text(write['timing'])}"
    return cell


def _headline_labels(summary: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(h["label"] for row in summary["steps"] for h in row["headlines"]))


def _latency_frame(steps: list[dict[str, Any]]) -> pd.DataFrame:
    """Scenarios and the queries of scenario-less workloads, legacy first, then per step."""
    rows = []
    states = [("legacy", steps[0]["before"])] + [(s["migration"]["id"], s["after"]) for s in steps]
    with_scenarios = {e.get("workload") for e in steps[0]["after"] if e["kind"] == "scenario"}
    for step, entries in states:
        for entry in entries:
            if entry["kind"] == "scenario" or (
                entry["kind"] == "query" and entry.get("workload") not in with_scenarios
            ):
                rows.append(
                    {
                        "step": step,
                        "series": entry["name"],
                        "p50_ms": _p(entry["samples_ns"], 50),
                        "p95_ms": _p(entry["samples_ns"], 95),
                        "target_ms": entry.get("target_ms"),
                    }
                )
    return pd.DataFrame(rows)


def _cost_frame(summary: dict[str, Any]) -> pd.DataFrame:
    """Index bytes added and the change of WAL bytes per inserted row, per step and table."""
    rows = []
    for row in summary["steps"]:
        wal = {w["table"]: w.get("wal_change") for w in row.get("writes", [])}
        rows.append(
            {
                "step": row["migration"],
                "index_bytes_added": row["index_bytes_added"],
                "wal_change_quiz_attempts": wal.get("quiz_attempts"),
                "wal_change_reflections": wal.get("reflections"),
            }
        )
    return pd.DataFrame(rows)


def _integrity_frame(steps: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    states = [("legacy", steps[0]["audit_before"])]
    states += [(s["migration"]["id"], s["audit_after"]) for s in steps]
    for step, audit in states:
        for check in audit["checks"]:
            if check.get("group") == "generic":  # objects, not rows: _audit_tables
                continue
            violations = check["violations"] if check["applicable"] else float("nan")
            rows.append({"step": step, "check": check["name"], "violations": violations})
    return pd.DataFrame(rows)


def _check_cell(check: dict[str, Any] | None) -> str:
    if check is None:
        return "-"
    example = f" (e.g. `{check['examples'][0]}`)" if check["examples"] else ""
    return f"{check['violations']:,}{example}"


def _audit_tables(steps: list[dict[str, Any]]) -> list[str]:
    """A team's own checks (``--checks``) per state, with the first example ids, and the
    generic schema findings of the state the series ends in."""
    states = [("legacy", steps[0]["audit_before"])]
    states += [(s["migration"]["id"], s["audit_after"]) for s in steps]
    lines: list[str] = []
    yours = [c["name"] for c in states[0][1]["checks"] if c.get("group") == "yours"]
    short = short_ids(name for name, _ in states)
    if yours:
        lines += ["", "### Your checks per state", "",
                  "| check | " + " | ".join(f"`{short[name]}`" for name, _ in states) + " |",
                  "|---" * (len(states) + 1) + "|"]  # fmt: skip
        for name in yours:
            found = [next((c for c in a["checks"] if c["name"] == name), None) for _, a in states]
            lines.append(f"| {name} | " + " | ".join(_check_cell(c) for c in found) + " |")
    final = [c for c in states[-1][1]["checks"] if c.get("group") == "generic" and c["violations"]]
    if final:
        lines += ["", "Schema findings (generic checks) in the state the series ends in: "
                  + "; ".join(f"{c['name'].replace('_', ' ')}: {', '.join(c['examples'])}"
                              for c in final) + "."]  # fmt: skip
    return lines


def _steps_headline(summary: dict[str, Any], latency: pd.DataFrame) -> str:
    parts = []
    for series, group in latency.groupby("series", sort=False):
        first, last = group.iloc[0], group.iloc[-1]
        target = last["target_ms"]
        met = "" if pd.isna(target) else (" ✅" if last["p95_ms"] <= target else " ❌")
        if not pd.isna(target):
            parts.append(
                f"{series} p95 {short_ms(first['p95_ms'])} → {short_ms(last['p95_ms'])} ms "
                f"(target {short_ms(target)} ms{met})"
            )
    answers = summary["answers"]
    broke = answers["what_broke"]
    status = "all checks passed" if broke.startswith("nothing") else f"**broke**: {broke}"
    return (
        f"**{len(summary['steps'])} migrations:** "
        + "; ".join(parts)
        + f". Biggest win: {answers['biggest_gain']}. Regressions: "
        f"{answers.get('regressions', 'n/a')}. {status[0].upper()}{status[1:]}."
    )
