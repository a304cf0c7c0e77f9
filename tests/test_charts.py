"""Charts for PR reports: each renders a readable PNG from realistic frames and survives the
awkward ones (a single step, all-NaN series, zeros on a would-be log axis, long names)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.patches import Patch

from vpbench.reporting import charts, plotting

STEPS = [
    "legacy",
    "0001_quiz_attempt_links",
    "0002_reflection_links",
    "0003_composite_indexes",
    "0004_questions_jsonb",
    "0005_computed_scores",
    "0006_voice_memo_columns",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def steps_frame() -> pd.DataFrame:
    page = [700.0, 610.0, 590.0, 85.0, 62.0, 48.0, 40.0]
    memos = [250.0, 240.0, 190.0, 31.0, 30.0, 27.0, 3.1]
    by_video = [420.0, 300.0, 290.0, 12.0, 11.0, 9.5, 9.0]
    rows = []
    for series, p95s, target in (
        ("video_page p95", page, 100.0),
        ("voice_memos worst p95", memos, 20.0),
        ("quiz_attempts_for_video", by_video, np.nan),
    ):
        for step, p95 in zip(STEPS, p95s, strict=True):
            rows.append((step, series, p95 * 0.55, p95, target))
    return pd.DataFrame(rows, columns=["step", "series", "p50_ms", "p95_ms", "target_ms"])


def comparison_frame(queries: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    verdicts = ["faster", "slower", "unchanged", "inconclusive"]
    rows = []
    for i in range(queries):
        verdict = verdicts[i % 4]
        ratio = {"faster": 0.08 * (i + 1), "slower": 1.3 + 0.05 * i}.get(verdict, 1.0)
        ratio *= float(rng.uniform(0.97, 1.03))
        spread = 0.4 if verdict == "inconclusive" else 0.06
        base = float(rng.uniform(2, 400))
        name = f"q{i:02d}_{['video_page', 'voice_memos', 'quiz_scores', 'course_outline'][i % 4]}"
        rows.append(
            (name, ratio, ratio * (1 - spread), ratio * (1 + spread), verdict, base, base * ratio)
        )
    columns = ["name", "ratio", "ci_low", "ci_high", "verdict", "base_p50_ms", "new_p50_ms"]
    return pd.DataFrame(rows, columns=columns)


def samples_frame(queries: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    parts = []
    for i in range(queries):
        median = [180.0, 40.0, 8.0, 2.5, 90.0][i % 5]
        for run, factor in (("base", 1.0), ("new", 0.2 if i % 2 == 0 else 1.1)):
            latency = rng.lognormal(np.log(median * factor), 0.35, 150)
            parts.append(pd.DataFrame({"name": f"query_{i}", "run": run, "latency_ms": latency}))
    return pd.concat(parts, ignore_index=True).assign(target_ms=20.0)


def cost_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "step": STEPS,
            "index_bytes_added": [0, 0, 0, 48_500_000, 12_000_000, -3_400_000, 2_100_000],
            "wal_change_quiz_attempts": [np.nan, -0.04, 0.0, -0.21, -0.06, 0.09, 0.0],
            "wal_change_reflections": [np.nan, 0.0, -0.08, -0.17, 0.0, 0.0, -0.11],
        }
    )


def integrity_frame() -> pd.DataFrame:
    counts: dict[str, list[float]] = {
        "orphan_quiz_attempts": [1840, 0, 0, 0, 0, 0, 0],
        "dangling_reflection_links": [412, 412, 0, 0, 0, 0, 0],
        "null_reflection_links": [3250, 3250, 0, 0, 0, 0, 0],
        "stale_scores": [97, 97, 97, 97, 97, np.nan, np.nan],
        "invalid_question_json": [12, 12, 12, 12, 0, 0, 0],
        "unparsed_voice_memo_metadata": [np.nan] * 6 + [3],
    }
    rows = [
        (step, check, values[i]) for check, values in counts.items() for i, step in enumerate(STEPS)
    ]
    return pd.DataFrame(rows, columns=["step", "check", "violations"])


def trend_frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for night in range(20):
        run = f"nightly-2025-05-{night + 1:02d}"
        memos = (45.0 if night < 12 else 120.0) * float(rng.uniform(0.93, 1.07))
        rows.append((run, "voice_memos_for_video", memos, 20.0))
        rows.append((run, "video_page", 60.0 * float(rng.uniform(0.95, 1.05)), 100.0))
        rows.append((run, "quiz_scores", 4.0 * float(rng.uniform(0.9, 1.1)), np.nan))
    return pd.DataFrame(rows, columns=["run", "name", "p95_ms", "target_ms"])


def render_all(folder: Path) -> list[Path]:
    """Every chart from the realistic frames (also used to preview them by eye)."""
    return [
        charts.steps_latency_chart(steps_frame(), folder / "steps.png"),
        charts.before_after_chart(comparison_frame(), folder / "before_after.png"),
        charts.distribution_chart(samples_frame(), folder / "distribution.png"),
        charts.cost_chart(cost_frame(), folder / "cost.png"),
        charts.integrity_chart(integrity_frame(), folder / "integrity.png"),
        charts.trend_chart(
            trend_frame(), folder / "trend.png", change_points=[("voice_memos_for_video", 12)]
        ),
    ]


def assert_readable_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width = imread(path).shape[:2]
    assert 900 <= width <= 1600
    assert 400 <= height <= 1200
    assert path.stat().st_size > 15_000


def legend_texts(figure: Figure) -> list[str]:
    legends = [ax.get_legend() for ax in figure.axes] + list(figure.legends)
    return [text.get_text() for legend in legends if legend for text in legend.get_texts()]


def test_every_chart_is_a_readable_png(tmp_path: Path) -> None:
    paths = render_all(tmp_path / "nested")
    assert [p.name for p in paths] == [
        "steps.png",
        "before_after.png",
        "distribution.png",
        "cost.png",
        "integrity.png",
        "trend.png",
    ]
    for path in paths:
        assert_readable_png(path)
    assert not list((tmp_path / "nested").glob(".*partial"))


def test_log_scale_when_latencies_span_more_than_20x() -> None:
    assert charts._steps_figure(steps_frame(), "t").axes[0].get_yscale() == "log"
    assert charts._distribution_figure(samples_frame(), "t").axes[0].get_yscale() == "log"
    narrow = trend_frame().query("name == 'video_page'")
    assert charts._trend_figure(narrow, (), "t").axes[0].get_yscale() == "linear"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0, 25.0], True),
        ([1.0, 15.0, np.nan], False),
        ([0.0, 500.0], False),
        ([-2.0, 500.0], False),
        ([np.nan, np.nan], False),
        ([], False),
    ],
)
def test_wants_log_scale(values: list[float], expected: bool) -> None:
    assert plotting.wants_log_scale(values) is expected


def test_zero_latency_falls_back_to_linear_scale() -> None:
    frame = steps_frame()
    frame.loc[0, "p50_ms"] = 0.0
    assert charts._steps_figure(frame, "t").axes[0].get_yscale() == "linear"


def test_target_lines_are_named_in_the_legend() -> None:
    texts = legend_texts(charts._steps_figure(steps_frame(), "t"))
    assert "page target (100 ms)" in texts
    assert "query target (20 ms)" in texts
    other = trend_frame().assign(target_ms=250.0)
    assert "target 250 ms" in legend_texts(charts._trend_figure(other, (), "t"))
    assert "query target (20 ms)" in legend_texts(charts._distribution_figure(samples_frame(), "t"))


def test_change_points_are_marked_and_annotated() -> None:
    figure = charts._trend_figure(trend_frame(), [("voice_memos_for_video", 12)], "t")
    notes = [text.get_text() for text in figure.axes[0].texts]
    assert any(note.startswith("change:") and "→" in note for note in notes)
    assert "change point" in legend_texts(figure)


def test_before_after_uses_a_log_ratio_axis_with_verdicts() -> None:
    figure = charts._before_after_figure(comparison_frame(), "t")
    assert figure.axes[0].get_xscale() == "log"
    assert {"faster", "slower", "unchanged", "inconclusive", "no change (1.0)"} <= set(
        legend_texts(figure)
    )


ChartCall = Callable[[pd.DataFrame, Path], Path]
CASES: list[tuple[str, ChartCall, Callable[[], pd.DataFrame]]] = [
    ("step", charts.steps_latency_chart, steps_frame),
    ("ci_high", charts.before_after_chart, comparison_frame),
    ("latency_ms", charts.distribution_chart, samples_frame),
    ("wal_change_reflections", charts.cost_chart, cost_frame),
    ("violations", charts.integrity_chart, integrity_frame),
    ("p95_ms", charts.trend_chart, trend_frame),
]


@pytest.mark.parametrize(("column", "chart", "make"), CASES)
def test_missing_column_is_named(
    tmp_path: Path, column: str, chart: ChartCall, make: Callable[[], pd.DataFrame]
) -> None:
    with pytest.raises(ValueError, match=column):
        chart(make().drop(columns=[column]), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_unknown_verdict_is_rejected(tmp_path: Path) -> None:
    frame = comparison_frame().assign(verdict="much better")
    with pytest.raises(ValueError, match="much better"):
        charts.before_after_chart(frame, tmp_path / "x.png")


LONG = "reflections_with_voice_memos_for_a_course_ordered_by_recency_and_duration"


@pytest.mark.parametrize(
    ("chart", "frame"),
    [
        pytest.param(charts.steps_latency_chart, steps_frame().iloc[[0, 7, 14]], id="one-step"),
        pytest.param(charts.steps_latency_chart, steps_frame().assign(p50_ms=np.nan), id="nan-p50"),
        pytest.param(
            charts.steps_latency_chart,
            steps_frame().assign(p50_ms=np.nan, p95_ms=np.nan, target_ms=np.nan),
            id="all-nan",
        ),
        pytest.param(charts.before_after_chart, comparison_frame(1), id="one-query"),
        pytest.param(charts.before_after_chart, comparison_frame(24), id="many-queries"),
        pytest.param(
            charts.before_after_chart,
            comparison_frame(3).assign(ci_low=np.nan, ci_high=np.nan),
            id="no-ci",
        ),
        pytest.param(charts.distribution_chart, samples_frame(16), id="many-distributions"),
        pytest.param(
            charts.distribution_chart,
            samples_frame(1).assign(name=LONG).query("run == 'new'"),
            id="one-run-long-name",
        ),
        pytest.param(charts.cost_chart, cost_frame().iloc[:1], id="one-step-cost"),
        pytest.param(charts.integrity_chart, integrity_frame().iloc[:0], id="empty-integrity"),
        pytest.param(charts.trend_chart, trend_frame().iloc[:3], id="one-run"),
        pytest.param(
            charts.trend_chart, trend_frame().assign(name=LONG, p95_ms=0.0), id="zeros-long"
        ),
    ],
)
def test_awkward_inputs_still_render(tmp_path: Path, chart: ChartCall, frame: pd.DataFrame) -> None:
    path = chart(frame, tmp_path / "chart.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_long_labels_are_truncated() -> None:
    frame = samples_frame(2).assign(name=lambda f: f["name"] + "_" + LONG)
    labels = [
        t.get_text() for t in charts._distribution_figure(frame, "t").axes[0].get_xticklabels()
    ]
    assert labels and all(len(label) <= plotting.LABEL_LIMIT for label in labels)
    assert labels[0].endswith("…")


def test_unknown_change_point_is_skipped(tmp_path: Path) -> None:
    path = charts.trend_chart(
        trend_frame(), tmp_path / "t.png", change_points=[("no_such_query", 3), ("video_page", 99)]
    )
    assert_readable_png(path)


def test_traffic_timeline_chart(tmp_path: Path) -> None:
    requests = pd.DataFrame(
        [("read", t / 10, 3.0 if t % 7 else 1500.0, "ok") for t in range(-20, 30)]
        + [("write", t / 10, 0.2, "ok" if t % 9 else "error") for t in range(-20, 30)],
        columns=["kind", "start_s", "ms", "outcome"],
    )
    statements = pd.DataFrame(
        [(1, "LOCK TABLE quiz_attempts IN ACCESS EXCLUSIVE MODE", 0.0, 0.01),
         (2, "UPDATE $$ costly $$", 0.01, 2.5)],
        columns=["line", "text", "started_s", "seconds"],
    )  # fmt: skip
    path = charts.traffic_timeline_chart(requests, statements, tmp_path / "t.png", budget_ms=1000)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def style_pairs(figure: Figure) -> list[tuple[str, str]]:
    """(colour, marker) of every series a reader tells apart: labelled data lines with a
    marker, error bars, and the patches of a legend (marker "patch")."""
    pairs = []
    for ax in figure.axes:
        for line in ax.get_lines():
            marker = str(line.get_marker())
            if marker not in ("None", "", " ") and not str(line.get_label()).startswith("_"):
                pairs.append((to_hex(line.get_color()), marker))
        for container in ax.containers:
            if isinstance(container, ErrorbarContainer) and container.lines[0] is not None:
                data = container.lines[0]
                pairs.append((to_hex(data.get_color()), str(data.get_marker())))
        legend = ax.get_legend()
        for handle in legend.legend_handles if legend else []:
            if isinstance(handle, Patch):
                pairs.append((to_hex(handle.get_facecolor()), "patch"))
    return pairs


def all_figures() -> list[Figure]:
    frames = [steps_frame() for _ in range(7)]
    many_series = pd.concat(
        [frame.assign(series=frame["series"] + f" {i}") for i, frame in enumerate(frames)]
    )
    return [
        charts._steps_figure(many_series, "t"),
        charts._trend_figure(twelve_query_trend(), [("q05", 9)], "t"),
        charts._before_after_figure(comparison_frame(), "t"),
        charts._distribution_figure(samples_frame(), "t"),
        charts._run_figure(run_frame(), "t"),
    ]


def twelve_query_trend() -> pd.DataFrame:
    rows = [
        (f"nightly-{n:02d}", f"q{q:02d}", 1.0 + q + 0.1 * n, 100.0 if q == 0 else 20.0)
        for n in range(10)
        for q in range(12)
    ]
    return pd.DataFrame(rows, columns=["run", "name", "p95_ms", "target_ms"])


def run_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "name": ["video_page", "video_header", "long_memos", "no_target"],
            "p50_ms": [3.0, 0.2, 300.0, 1.0],
            "p95_ms": [4.0, 0.3, 600.0, 2.0],
            "target_ms": [100.0, 20.0, 20.0, np.nan],
        }
    )


def test_no_chart_reuses_a_colour_marker_pair() -> None:
    """21 series in the steps chart, 12 queries in the trend: each its own colour and
    marker (latest_memo_per_video and video_header were both orange squares)."""
    for figure in all_figures():
        pairs = style_pairs(figure)
        assert pairs and len(pairs) == len(set(pairs)), figure.get_suptitle()
    assert len({plotting.series_style(i) for i in range(64)}) == 64


def test_twin_a_reused_colour_marker_pair_is_found() -> None:
    figure = Figure()
    ax = figure.add_subplot()
    ax.plot([1, 2], [1, 2], color="#D55E00", marker="s", label="latest_memo_per_video")
    ax.plot([1, 2], [2, 3], color="#D55E00", marker="s", label="video_header")
    pairs = style_pairs(figure)
    assert len(pairs) == 2 and len(set(pairs)) == 1


def test_the_trend_is_small_multiples_with_each_querys_own_target() -> None:
    figure = charts._trend_figure(twelve_query_trend(), [("q05", 9)], "t")
    panels = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title(loc="left") for ax in panels] == [f"q{q:02d}" for q in range(12)]
    for ax, target in zip(panels, [100.0] + [20.0] * 11, strict=True):
        dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert [line.get_ydata()[0] for line in dashed] == [target]  # type: ignore[index]
        assert len([line for line in ax.get_lines() if line.get_label() == "p95"]) == 1
    assert any(text.get_text().startswith("change:") for text in panels[5].texts)


def test_run_chart_marks_each_entry_against_its_target() -> None:
    labels = legend_texts(charts._run_figure(run_frame(), "t"))
    assert {"p95, meets its target", "p95, misses its target", "p95, no target"} <= set(labels)
    assert "target" in labels
