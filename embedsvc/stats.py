"""Counters that layers below the transport keep for the metrics endpoint, without depending on a metrics library:
a fixed-bucket histogram (durations, batch sizes). The transport turns them into Prometheus series."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

# Seconds: from a fast fsync to a slow checkpoint.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    """Thread-safe counts of observations per bucket (upper bounds), with their sum."""

    def __init__(self, bounds: Sequence[float] = DURATION_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.bounds, value)] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[tuple[str, int]], float]:
        """Cumulative (upper bound as text, count) pairs ending with "+Inf", and the sum: Prometheus's form."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return cumulative, total
