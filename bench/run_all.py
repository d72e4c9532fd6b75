"""Run every benchmark in one go and keep their reports: ``make bench``.

Each benchmark is a module of this package with a ``main()`` that prints a readable table and
one ``RESULT {json}`` line per key figure (:mod:`bench.summary`). This runner executes them one
after another in child processes (so one's memory does not skew the next one's RSS figures),
shows their output, and writes, with the machine it ran on:

- ``bench/results/latest.txt``: every readable report;
- ``bench/results/latest.md``: a table of the key figures, their anchors, ratios and targets;
- ``bench/results/latest.png``: the throughput figures and the ratios as bar charts.

    python -m bench.run_all                 # every benchmark with its defaults
    python -m bench.run_all kv redis        # a subset, by short name
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench.summary import Result, markdown, parse, plot

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in BENCH_DIR.glob("bench_*.py"))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    every = ", ".join(available())
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {every})")
    args = parser.parse_args(argv)
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    RESULTS.mkdir(exist_ok=True)
    title = f"iii-gateway benchmarks, {time.strftime('%Y-%m-%d %H:%M:%S')}"
    report = [f"# {title}", f"machine: {machine()}", ""]
    results: list[Result] = []
    failed = []
    for name in names:
        print(f"== bench_{name}", flush=True)
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", f"bench.bench_{name}"],
            cwd=BENCH_DIR.parent,
            capture_output=True,
            text=True,
            check=False,
        )
        took = time.perf_counter() - started
        found, text = parse(proc.stdout.splitlines())
        results += found
        readable = "\n".join(text).rstrip()
        sys.stdout.write(readable + "\n")
        sys.stderr.write(proc.stderr[-4000:] if proc.returncode else "")
        report += [f"## bench_{name} ({took:.0f} s, exit {proc.returncode})", "", readable, ""]
        if proc.returncode:
            failed.append(name)
    (RESULTS / "latest.txt").write_text("\n".join(report) + "\n")
    image = RESULTS / "latest.png"
    drawn = plot(results, image, title=title)
    (RESULTS / "latest.md").write_text(
        markdown(results, title=title, machine=machine(), image=image.name if drawn else None)
    )
    written = ["latest.txt", "latest.md"] + (["latest.png"] if drawn else [])
    note = "" if drawn else " (matplotlib is not installed: no plot)"
    print(f"report written to {RESULTS}: {', '.join(written)}{note}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
