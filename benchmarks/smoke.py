"""Run every benchmark's `--smoke` mode, one after the other, so that a benchmark that no longer starts fails CI.

    python benchmarks/smoke.py [--require-all] [--only NAME ...] [--cache DIR]

Every `benchmarks/*.py` but this runner and the shared modules is run as a user runs it, `python benchmarks/NAME.py
--smoke` (a new benchmark without a --smoke mode fails here). minilm-static is distilled once, into --cache (default:
a temporary directory), and every benchmark uses that cache (EMBEDSVC_BENCH_CACHE). A benchmark that needs a tool
this machine lacks (h2load from nghttp2-client for overload.py, milvus-lite for milvus.py) is skipped with the
reason, unless --require-all (what .ci/run passes, after installing them), which makes it a failure. Prints each
benchmark's time and summary line, and the total.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"smoke", "crash_harness"}


def benchmarks() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_") and p.stem not in NOT_BENCHMARKS)


def missing(name: str) -> str | None:
    """Why this machine cannot run the benchmark, or None."""
    if name == "overload" and shutil.which("h2load") is None:
        return "h2load is missing (apt-get install nghttp2-client)"
    if name == "milvus" and importlib.util.find_spec("milvus_lite") is None:
        return "milvus-lite is missing (pip install -e '.[milvus]')"
    return None


def children_cpu_s() -> float:
    """CPU seconds used so far by finished child processes (a benchmark and the servers it started)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def distil(cache: Path) -> None:
    """minilm-static into the shared cache, once for every benchmark (15-30 s on 2 cores the first time)."""
    sys.path.insert(0, str(HERE.parent))
    from embedsvc.backends.word_vectors import load_word_vectors
    from embedsvc.settings import Settings

    load_word_vectors(Settings().all_models()[0], cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require-all", action="store_true", help="a benchmark that cannot run is a failure")
    parser.add_argument("--only", nargs="+", default=None, help="these benchmarks only")
    parser.add_argument("--cache", type=Path, default=None, help="data directory caching the models (kept)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds one benchmark may take")
    args = parser.parse_args()
    names = args.only or benchmarks()
    cache = args.cache or Path(tempfile.mkdtemp(prefix="embedsvc-smoke-"))
    began = time.perf_counter()
    distil(cache)
    print(f"minilm-static ready in {cache} ({time.perf_counter() - began:.0f} s)", flush=True)
    env = {**os.environ, "EMBEDSVC_BENCH_CACHE": str(cache)}
    failed, skipped = [], []
    for name in names:
        reason = missing(name)
        if reason is not None:
            print(f"{name}: {'FAILED' if args.require_all else 'skipped'}: {reason}", flush=True)
            (failed if args.require_all else skipped).append(name)
            continue
        started, cpu = time.perf_counter(), children_cpu_s()
        try:
            run = subprocess.run(
                [sys.executable, str(HERE / f"{name}.py"), "--smoke"],
                env=env,
                capture_output=True,
                text=True,
                timeout=args.timeout,
            )
            stdout, output, code = run.stdout, run.stdout + run.stderr, run.returncode
        except subprocess.TimeoutExpired as exc:
            stdout, output, code = "", f"{exc.stdout or ''}{exc.stderr or ''}\ntimed out after {args.timeout:g} s", -1
        seconds, cpu = time.perf_counter() - started, children_cpu_s() - cpu
        lines = stdout.strip().splitlines()
        if code == 0 and lines:
            print(f"{name}: ok in {seconds:.0f} s ({cpu:.0f} CPU s): {lines[-1]}", flush=True)
        else:
            failed.append(name)
            tail = "\n    ".join(str(output).strip().splitlines()[-30:])
            print(f"{name}: FAILED (exit {code}) in {seconds:.0f} s:\n    {tail}", flush=True)
    total = time.perf_counter() - began
    print(
        f"smoke: {len(names) - len(failed) - len(skipped)} ran, {len(skipped)} skipped, {len(failed)} failed "
        f"in {total:.0f} s ({children_cpu_s():.0f} CPU s in benchmarks and servers)"
    )
    if failed:
        raise SystemExit(f"benchmarks failing their smoke run: {', '.join(failed)}")


if __name__ == "__main__":
    main()
