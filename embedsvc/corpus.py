"""Fixed real sentences the server measures itself on: gensim's Lee background news corpus (installed with the
server), split into sentences of 3 words or more, in file order. The int8 engine's quality figures
(`backends.onnx_text`) and the int8/uint8 calibration ranges (`core.texts.shapes`) both read them, so they live
below both layers."""

from __future__ import annotations

import re
from pathlib import Path


def lee_sentences(n: int) -> list[str]:
    """The first `n` sentences of gensim's Lee background corpus."""
    import gensim

    text = (Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor").read_text(encoding="utf-8")
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 3]
    return sentences[:n]
