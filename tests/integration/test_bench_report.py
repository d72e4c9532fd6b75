"""``make bench``'s report: RESULT lines from the benchmark modules, the markdown table and plot.

A real benchmark module (bench_kv, tiny sizes) is run as a subprocess and its RESULT lines are
read back; the table and the PNG are made from them and from hand-written results.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.summary import Result, markdown, parse, plot, result

ROOT = Path(__file__).resolve().parents[2]


def test_result_lines_round_trip(capsys: pytest.CaptureFixture[str]) -> None:
    result(
        "worker",
        "state::set, 1 client(s)",
        1200.0,
        "ops/s",
        anchor="echo",
        anchor_value=1600.0,
        target_ratio=2 / 3,
    )
    result("kv", "restart from log, 1000000 keys", 7.5, "s", target_max=10.0)
    print("a readable line")
    found, rest = parse(capsys.readouterr().out.splitlines())
    assert rest == ["a readable line"]
    worker, kv = found
    assert worker == Result("worker", "state::set, 1 client(s)", 1200.0, "ops/s", "echo", 1600.0, 2 / 3)
    assert worker.ratio == 0.75 and worker.met is True
    assert kv.ratio is None and kv.met is True
    assert Result("kv", "x", 12.0, "s", target_max=10.0).met is False
    assert Result("kv", "x", 1.0, "ops/s").met is None


def test_a_benchmark_module_prints_its_key_figures() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bench_kv", "--ops", "300", "--keys", "500", "--policies", "in_memory"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found, rest = parse(proc.stdout.splitlines())
    figures = {r.figure: r for r in found}
    assert {"set, fsync in_memory", "get, fsync in_memory", "update, fsync in_memory"} <= set(figures)
    assert all(r.bench == "kv" and r.value > 0 and math.isfinite(r.value) for r in found)
    assert figures["restart from log, 500 keys"].unit == "s"
    assert figures["RSS after replay, 500 keys"].target_max is None  # the targets are for 1M keys
    assert any("ops/s" in line for line in rest)  # the readable table is still there


def test_markdown_table_and_plot(tmp_path: Path) -> None:
    results = [
        Result("redis", "adapter set", 30_000.0, "ops/s", "redis-benchmark set", 75_000.0),
        Result("worker", "state::set, 8 client(s)", 9_000.0, "ops/s", "bare JSON echo", 12_000.0, 2 / 3),
        Result("link", "edge set via bridge", 20_000.0, "ops/s", "redis-benchmark set", 75_000.0, 0.5),
        Result("kv", "restart from log, 1000000 keys", 12.5, "s", target_max=10.0),
        Result("kv", "set, fsync always", float("nan"), "ops/s"),
    ]
    image = tmp_path / "latest.png"
    assert plot(results, image, title="test") is True
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 5000
    text = markdown(results, title="benchmarks", machine="test machine", image=image.name)
    lines = text.splitlines()
    assert lines[0] == "# benchmarks" and "![key figures and ratios](latest.png)" in lines
    rows = [ln for ln in lines if ln.startswith("| ") and not ln.startswith("| bench")]
    assert len(rows) == len(results)
    assert "| redis | adapter set | 30,000 ops/s | redis-benchmark set | 75,000 ops/s | 0.40x |  |  |" in rows
    assert "| 0.75x | >= 0.67x | yes |" in rows[1]
    assert "| 0.27x | >= 0.50x | **no** |" in rows[2]
    assert "| 12.5 s |" in rows[3] and "<= 10 s" in rows[3] and "**no**" in rows[3]
    assert "| n/a |" in rows[4]
