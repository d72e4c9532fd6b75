"""Machine-readable results of the benchmarks, and the report ``make bench`` writes from them.

A benchmark module prints its readable table as before, plus one line per key figure::

    RESULT {"bench": "redis", "figure": "adapter set", "value": 41234.5, "unit": "ops/s",
            "anchor": "redis-benchmark set", "anchor_value": 80120.0, "target_ratio": 0.5}

made by :func:`result`. ``anchor``/``anchor_value`` name the figure it is measured against in
the same run (its ratio is ``value / anchor_value``); ``target_ratio`` is the least ratio DESIGN
section 8 asks for, ``target_max`` the most a figure may be (e.g. seconds, megabytes), when
there is one. :mod:`bench.run_all` collects the lines (:func:`parse`) and writes
``bench/results/latest.md`` (:func:`markdown`) and ``latest.png`` (:func:`plot`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["PREFIX", "Result", "markdown", "parse", "plot", "result"]

PREFIX = "RESULT "


@dataclass(frozen=True)
class Result:
    bench: str
    figure: str
    value: float
    unit: str
    anchor: str | None = None
    anchor_value: float | None = None
    target_ratio: float | None = None
    target_max: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.anchor_value is None or not self.anchor_value or not math.isfinite(self.value):
            return None
        return self.value / self.anchor_value

    @property
    def met(self) -> bool | None:
        """Whether the figure meets its target (None: it has none)."""
        if self.target_ratio is not None:
            return self.ratio is not None and self.ratio >= self.target_ratio
        if self.target_max is not None:
            return math.isfinite(self.value) and self.value <= self.target_max
        return None


def result(
    bench: str,
    figure: str,
    value: float,
    unit: str,
    *,
    anchor: str | None = None,
    anchor_value: float | None = None,
    target_ratio: float | None = None,
    target_max: float | None = None,
) -> None:
    """Print one ``RESULT`` line (see the module docstring)."""
    r = Result(bench, figure, float(value), unit, anchor, anchor_value, target_ratio, target_max)
    fields = {k: v for k, v in asdict(r).items() if v is not None}
    print(PREFIX + json.dumps(fields, allow_nan=True), flush=True)


def parse(lines: Iterable[str]) -> tuple[list[Result], list[str]]:
    """Split a benchmark's output into its results and the rest (the readable report)."""
    results, rest = [], []
    for line in lines:
        if line.startswith(PREFIX):
            fields = json.loads(line[len(PREFIX) :])
            results.append(Result(**fields))
        else:
            rest.append(line)
    return results, rest


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    if not math.isfinite(value):
        return "n/a"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def markdown(results: Sequence[Result], *, title: str, machine: str, image: str | None) -> str:
    """The report: one table of every figure with its anchor, ratio and target."""
    lines = [f"# {title}", "", f"Machine: {machine}", ""]
    if image:
        lines += [f"![key figures and ratios]({image})", ""]
    lines += [
        "| bench | figure | value | anchor | anchor value | ratio | target | met |",
        "|---|---|---:|---|---:|---:|---|:---:|",
    ]
    for r in results:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        if r.target_ratio is not None:
            target = f">= {r.target_ratio:.2f}x"
        elif r.target_max is not None:
            target = f"<= {_number(r.target_max, r.unit)}"
        else:
            target = ""
        met = {True: "yes", False: "**no**", None: ""}[r.met]
        lines.append(
            f"| {r.bench} | {r.figure} | {_number(r.value, r.unit)} | {r.anchor or ''} | "
            f"{_number(r.anchor_value, r.unit)} | {ratio} | {target} | {met} |"
        )
    if not results:
        lines.append("| | (no results) | | | | | | |")
    return "\n".join(lines) + "\n"


def plot(results: Sequence[Result], path: Path, *, title: str) -> bool:
    """Bar charts of the throughput figures (ours next to each anchor) and of every ratio with
    its target. False when matplotlib is not installed (the report is written without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rates = [r for r in results if r.unit == "ops/s" and math.isfinite(r.value)]
    ratios = [r for r in results if r.ratio is not None]
    fig, axes = plt.subplots(1, 2, figsize=(14, max(4.0, 0.32 * max(len(rates), len(ratios), 1) + 1.5)))
    ax = axes[0]
    labels = [f"{r.bench}: {r.figure}" for r in rates]
    ax.barh(range(len(rates)), [r.value for r in rates], color="#3274d9", label="measured")
    anchored = [(i, r.anchor_value) for i, r in enumerate(rates) if r.anchor_value]
    if anchored:
        ax.scatter(
            [v for _, v in anchored], [i for i, _ in anchored], color="#e0752d", marker="|", s=300,
            linewidths=3, label="anchor (same run)", zorder=3,
        )  # fmt: skip
    ax.set_yticks(range(len(rates)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    values = [v for r in rates for v in (r.value, r.anchor_value) if v and v > 0]
    if values:  # bars start at a round decade below the smallest figure, not at an arbitrary edge
        ax.set_xlim(10 ** math.floor(math.log10(min(values))), 10 ** math.ceil(math.log10(max(values))))
    ax.set_xlabel("operations per second (log)")
    ax.set_title("Throughput")
    ax.legend(loc="lower right", fontsize=8)

    ax = axes[1]
    ax.barh(
        range(len(ratios)),
        [r.ratio or 0.0 for r in ratios],
        color=["#56a64b" if r.met is not False else "#e02f44" for r in ratios],
    )
    for i, r in enumerate(ratios):
        if r.target_ratio is not None:
            ax.plot([r.target_ratio] * 2, [i - 0.4, i + 0.4], color="black", linewidth=2)
    ax.axvline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_yticks(range(len(ratios)), [f"{r.bench}: {r.figure}" for r in ratios], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ratio to anchor (black tick: target)")
    ax.set_title("Ratios")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
