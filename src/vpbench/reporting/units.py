"""Human units for tables, reports and charts: bytes as kB/MB/GB, times as ms, ratios with
their interval."""

from __future__ import annotations

import math

from vpbench.analysis.verdicts import Judgement

BYTE_UNITS = ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"))


def byte_unit(largest: float) -> tuple[float, str]:
    """The scale and unit to show ``largest`` bytes in (decimal: 1 kB = 1000 bytes)."""
    for scale, unit in BYTE_UNITS:
        if largest >= scale:
            return scale, unit
    return 1.0, "B"


def human_bytes(value: float | None, *, signed: bool = False) -> str:
    """``1.5 MB``, ``740 B`` (``+1.5 MB`` when signed); an empty string for None or NaN."""
    if value is None or math.isnan(value):
        return ""
    if value == 0:
        return "0 B"
    scale, unit = byte_unit(abs(value))
    sign = "+" if signed else ""
    return f"{value / scale:{sign}.1f} {unit}" if scale > 1 else f"{value:{sign}.0f} B"


def milliseconds(value: float | None, *, unit: bool = True) -> str:
    """``0.091 ms`` below 1 ms, ``12.3 ms`` above (without `` ms`` for a column that says
    it); empty for None or NaN."""
    if value is None or math.isnan(value):
        return ""
    number = f"{value:.3f}" if value < 1 else f"{value:.1f}"
    return f"{number} ms" if unit else number


def short_ms(value: float | None) -> str:
    """``3.42`` below 10 ms, ``812`` above, ``-`` for None or NaN: report cells whose
    column or text says ms."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def duration(ms: float | None) -> str:
    """``12.3 ms`` below a second, ``1.88 s`` from one on; empty for None or NaN."""
    if ms is None or math.isnan(ms):
        return ""
    return milliseconds(ms) if ms < 1000 else f"{ms / 1000:.2f} s"


def elapsed(seconds: float) -> str:
    """``12 ms``, ``4.2 s``, ``9.1 min``, ``2.3 h``: a time as long as a migration can take."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def elapsed_interval(value: float, low: float, high: float) -> str:
    """``~9.1 min [7.0, 12.0]``: the interval's ends in the value's unit."""
    shown = elapsed(value)
    unit = shown.split()[1]
    scale = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}[unit]
    return f"~{shown} [{_short(low / scale)}, {_short(high / scale)}]"


def bytes_interval(value: float, low: float, high: float) -> str:
    """``~1.2 GB [1.1, 1.3]``: the interval's ends in the value's unit."""
    scale, unit = byte_unit(abs(value))
    if scale == 1:
        return f"~{value:.0f} B [{low:.0f}, {high:.0f}]"
    return f"~{value / scale:.1f} {unit} [{_short(low / scale)}, {_short(high / scale)}]"


def _short(number: float) -> str:
    return f"{number:.0f}" if number >= 100 else f"{number:.1f}" if number >= 1 else f"{number:.2g}"


def percent(fraction: float | None, *, signed: bool = True) -> str:
    """``+12%`` for 0.12; empty for None or NaN."""
    if fraction is None or math.isnan(fraction):
        return ""
    return f"{fraction:+.0%}" if signed else f"{fraction:.0%}"


def ratio_interval(judgement: Judgement) -> str:
    """``1.02x [0.98, 1.05]``: the ratio with its confidence interval; empty when unknown."""
    estimate = judgement.estimate
    if math.isnan(estimate.ratio):
        return ""
    return f"{ratio(estimate.ratio)}x [{ratio(estimate.low)}, {ratio(estimate.high)}]"


def ratio(value: float) -> str:
    """Two decimals, or two significant digits below 0.1 (a 250x gain is not 0.00x)."""
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


def detectable(judgement: Judgement) -> str:
    """``±9%``: the smallest change the measurement could see (its MDE)."""
    return "" if math.isnan(judgement.mde) else f"±{judgement.mde:.0%}"
