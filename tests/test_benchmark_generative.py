"""`python benchmarks/generative.py --smoke` runs end to end on the committed models and prints its last line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAST = re.compile(
    r"^generative: gan confident (?P<F>[\d.]+), class entropy (?P<E>[\d.]+), gan/vae feature distance "
    r"(?P<R>[\d.]+), inversion mse (?P<M>[\d.]+) \(vae recon (?P<V>[\d.]+)\), ae recon (?P<A>[\d.]+)$"
)


def test_smoke_mode_runs_and_prints_the_figures() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "generative.py"), "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    found = LAST.match(lines[-1])
    assert found, lines[-1]
    figures = {k: float(v) for k, v in found.groupdict().items()}
    assert 0.1 <= figures["F"] <= 1.0 and 0.0 <= figures["E"] <= 2.31
    assert figures["R"] > 0 and 0 < figures["V"] < 0.1 and 0 < figures["A"] < 0.1 and 0 < figures["M"] < 0.2
    assert any(line.startswith("targets: ") for line in lines)
