"""Holding a running re-embed at each step a write may meet (tests of one replica and of several share it)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest

from embedsvc.core.collections import fence as fence_module
from embedsvc.core.collections import reembed as reembed_module


class Phases:
    """Holds a re-embed at each step a write may meet, until the test has written (through the alias) and released
    it: `filling` (after the fill's first batch), `catching-up` (its first round), `fenced` (every replica refuses
    writes to the source) and `switched` (the alias names the new collection)."""

    STEPS = ("filling", "catching-up", "fenced", "switched")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reached = {step: threading.Event() for step in self.STEPS}
        self.release = {step: threading.Event() for step in self.STEPS}
        agree, take, enter = reembed_module.Reembedder._agree, fence_module.Fence.take, fence_module.Fence.enter

        def held_agree(reembedder, *args, **kwargs):
            agree(reembedder, *args, **kwargs)
            self.hold("filling")

        def held_take(fence):
            self.hold("catching-up")
            return take(fence)

        def held_enter(fence, state, aliases=()):
            enter(fence, state, aliases)
            if state in (fence_module.State.FENCED, fence_module.State.SWITCHED):
                self.hold(state.value)

        monkeypatch.setattr(reembed_module.Reembedder, "_agree", held_agree)
        monkeypatch.setattr(fence_module.Fence, "take", held_take)
        monkeypatch.setattr(fence_module.Fence, "enter", held_enter)

    def hold(self, step: str) -> None:
        if not self.reached[step].is_set():  # each step once
            self.reached[step].set()
            assert self.release[step].wait(60)

    @contextlib.contextmanager
    def at(self, step: str) -> Iterator[None]:
        assert self.reached[step].wait(120), f"the re-embed never reached {step}"
        try:
            yield
        finally:
            self.release[step].set()
