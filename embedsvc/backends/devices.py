"""Where torch models run, and the version tag of a model read from weight files or vectors; shared by the backends."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def is_device(device: str) -> bool:
    """auto, cpu or cuda:N (checked at configuration time; whether the GPU exists is checked at load)."""
    return device in ("auto", "cpu") or (device.startswith("cuda:") and device[5:].isdigit())


def resolve_device(device: str) -> str:
    """ "auto" -> "cuda:0" when torch sees a GPU, else "cpu"; explicit devices are checked."""
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} was asked for, but torch sees no CUDA device")
    return device


def torch_bytes(module: Any) -> int:
    """Bytes of a torch module's parameters and buffers (shared storage counted once)."""
    seen: set[int] = set()
    total = 0
    tensors = [*module.parameters(), *module.buffers()] if hasattr(module, "parameters") else []
    for tensor in tensors:
        pointer = tensor.data_ptr()
        if pointer not in seen:
            seen.add(pointer)
            total += tensor.numel() * tensor.element_size()
    return total


def file_digest(paths: list[Path]) -> str:
    """ "sha256:" and 16 hex digits over the files' bytes, in name order: the version of a model read from them."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


def vectors_checksum(vectors: np.ndarray, words: Sequence[str]) -> str:
    """sha256 of the float32 vectors and the newline-joined vocabulary: a word model's identity."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    digest.update("\n".join(words).encode("utf-8"))
    return digest.hexdigest()
