"""Checkpoint folders of the generative kinds: `model.safetensors` (weights, never a pickle) and `config.json`
(`{"format": ..., "model": <the network's config>, "data": ..., "training": ..., "metrics": ...}`), each written
atomically. The GAN and the autoencoder use these; the VAE's own reader (`backends/vae.py`) has the same layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedsvc.durable import write_atomic

if TYPE_CHECKING:
    import torch

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class CheckpointError(ValueError):
    """A checkpoint folder cannot be read; the message names the file and the problem."""


def save_checkpoint(
    directory: Path, format: str, model: dict[str, Any], state: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Write the weights (`state`, contiguous CPU copies) and the config document, each atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    document = {"format": format, "model": model, **meta}
    write_atomic(directory / WEIGHTS, save(tensors, metadata={"format": format}))
    write_atomic(directory / CONFIG, (json.dumps(document, indent=2) + "\n").encode())


def read_checkpoint(directory: Path, format: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(the config document, the weights) of a checkpoint folder of the given format."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path, weights_path = directory / CONFIG, directory / WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (a checkpoint is a folder with {CONFIG} and {WEIGHTS})")
    try:
        document = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != format:
        found = document.get("format") if isinstance(document, dict) else None
        raise CheckpointError(f"{config_path}: format is {found!r}, not {format!r}")
    if not isinstance(document.get("model"), dict):
        raise CheckpointError(f"{config_path}: no `model` section")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights_path}: {exc}") from None
    return document, state


def split_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of one sub-network (keys `prefix.` + name), without the prefix."""
    start = prefix + "."
    return {k[len(start) :]: v for k, v in state.items() if k.startswith(start)}
