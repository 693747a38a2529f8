"""Freed heap memory given back to the OS (glibc's malloc_trim and a fixed mmap threshold): what the collection store
relies on to keep a quantised collection's resident memory near what it holds."""

from __future__ import annotations

import platform

import numpy as np
import pytest

from embedsvc.index.faiss import heap

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def rss_anon_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.skipif(not GLIBC, reason="glibc only; elsewhere both calls do nothing and say so")
def test_a_freed_large_buffer_leaves_the_process() -> None:
    assert heap.map_large_allocations() is True
    before = rss_anon_bytes()
    # 64 MB in 8 MB buffers, each over the fixed threshold: their own pages, returned when freed.
    buffers = [np.ones(1 << 21, np.float32) for _ in range(8)]
    held = rss_anon_bytes()
    assert held - before > 48 << 20
    del buffers
    assert heap.release_freed_memory() is True
    assert rss_anon_bytes() - before < 16 << 20


def test_without_glibc_the_calls_say_they_did_nothing(monkeypatch) -> None:
    monkeypatch.setattr(heap, "_TRIM", None)
    monkeypatch.setattr(heap, "_MALLOPT", None)
    assert heap.release_freed_memory() is False and heap.map_large_allocations() is False
