"""Durability under SIGKILL: kill the server N times during concurrent upserts and count what was lost.

    python benchmarks/crash.py --kills 50 [--smoke]

Prints last: `crash: kills N, acknowledged A, lost L` (A acknowledged items; L must be 0; torn batches are reported
too and must be 0). --smoke: 2 kills, 2 clients.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import crash_harness
from benchmarks._serve import add_smoke


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    add_smoke(parser)
    args = parser.parse_args()
    if args.smoke:
        args.kills, args.clients = 2, 2
    with tempfile.TemporaryDirectory(prefix="embedsvc-crash-") as tmp:
        outcome = crash_harness.run(Path(tmp), args.kills, clients=args.clients, seed=args.seed)
    print(f"torn (half-visible) batches: {len(outcome.torn)}")
    print(f"crash: kills {outcome.kills}, acknowledged {outcome.acknowledged_items}, lost {len(outcome.lost)}")
    if outcome.lost or outcome.torn:
        raise SystemExit("acknowledged writes were lost or torn")


if __name__ == "__main__":
    main()
