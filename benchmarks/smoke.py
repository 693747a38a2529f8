"""Run every benchmark's `--smoke` mode (two at a time), so that a benchmark that no longer starts fails CI.

    python benchmarks/smoke.py [--require-all] [--only NAME ...] [--cache DIR] [--jobs 2]

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
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Not benchmarks: this runner, the crash tests' harness, and ireval (the retrieval benchmarks' and tests' shared
# evaluation library: metrics, BEIR readers, the bm25s reference).
NOT_BENCHMARKS = {"smoke", "crash_harness", "ireval"}


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


def run_one(name: str, env: dict[str, str], timeout: float) -> tuple[bool, str]:
    """Run one benchmark's smoke mode; (passed, what to print)."""
    started = time.perf_counter()
    try:
        run = subprocess.run(
            [sys.executable, str(HERE / f"{name}.py"), "--smoke"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        stdout, output, code = run.stdout, run.stdout + run.stderr, run.returncode
    except subprocess.TimeoutExpired as exc:
        stdout, output, code = "", f"{exc.stdout or ''}{exc.stderr or ''}\ntimed out after {timeout:g} s", -1
    seconds = time.perf_counter() - started
    lines = stdout.strip().splitlines()
    if code == 0 and lines:
        return True, f"{name}: ok in {seconds:.0f} s: {lines[-1]}"
    tail = "\n    ".join(str(output).strip().splitlines()[-30:])
    return False, f"{name}: FAILED (exit {code}) in {seconds:.0f} s:\n    {tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require-all", action="store_true", help="a benchmark that cannot run is a failure")
    parser.add_argument("--only", nargs="+", default=None, help="these benchmarks only")
    parser.add_argument("--cache", type=Path, default=None, help="data directory caching the models (kept)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds one benchmark may take")
    parser.add_argument("--jobs", type=int, default=2, help="benchmarks run at once (default 2: one per CI core)")
    args = parser.parse_args()
    names = args.only or benchmarks()
    cache = args.cache or Path(tempfile.mkdtemp(prefix="embedsvc-smoke-"))
    began = time.perf_counter()
    distil(cache)
    print(f"minilm-static ready in {cache} ({time.perf_counter() - began:.0f} s)", flush=True)
    env = {**os.environ, "EMBEDSVC_BENCH_CACHE": str(cache)}
    failed, skipped, runnable = [], [], []
    for name in names:
        reason = missing(name)
        if reason is None:
            runnable.append(name)
        else:
            print(f"{name}: {'FAILED' if args.require_all else 'skipped'}: {reason}", flush=True)
            (failed if args.require_all else skipped).append(name)
    # Benchmarks are independent (their own data directories, ports and temporary files; the model caches are
    # written atomically), so they may share the machine: nothing here measures anything.
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = {pool.submit(run_one, name, env, args.timeout): name for name in runnable}
        for future in as_completed(futures):
            passed, report = future.result()
            print(report, flush=True)
            if not passed:
                failed.append(futures[future])
    total = time.perf_counter() - began
    passed = len(runnable) - len(set(failed) & set(runnable))
    print(
        f"smoke: {passed} passed, {len(skipped)} skipped, {len(failed)} failed in {total:.0f} s "
        f"({args.jobs} at a time; {children_cpu_s():.0f} CPU s in benchmarks and their servers)"
    )
    if failed:
        raise SystemExit(f"benchmarks failing their smoke run: {', '.join(sorted(failed))}")


if __name__ == "__main__":
    main()
