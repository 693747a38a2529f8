"""A plain autoencoder ready to serve: a checkpoint on disk (safetensors + JSON, never a pickle), numpy in and out.

A checkpoint is a folder written by `embedsvc train-ae`: `model.safetensors` and `config.json`
(`{"format": "embedsvc-ae", "model": <AEConfig>, "data": ..., "training": ..., "metrics": ...}`). It encodes and
decodes deterministically; having no prior, it cannot sample, and has no likelihood to score anomalies with.
torch is imported when an autoencoder is loaded or saved, not with this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedsvc.backends.checkpoints import CONFIG, WEIGHTS, CheckpointError, read_checkpoint, save_checkpoint
from embedsvc.backends.devices import file_digest, torch_bytes

if TYPE_CHECKING:
    import torch

    from embedsvc.nets.autoencoder import ConvAutoencoder

EMBEDDED_AE = "mnist-ae"
# The committed checkpoint of the embedded autoencoder (see models/mnist-ae.md).
EMBEDDED_AE_DIR = Path(__file__).resolve().parent.parent.parent / "models" / EMBEDDED_AE

FORMAT = "embedsvc-ae"
# Images per forward pass: bounds the memory one call can take.
CHUNK = 1024


def save_autoencoder(directory: Path, net: ConvAutoencoder, meta: dict[str, Any]) -> None:
    save_checkpoint(directory, FORMAT, net.config.to_json(), net.state_dict(), meta)


class AEModel:
    """An autoencoder in eval mode with frozen weights; inference under `torch.inference_mode()`. Thread-safe."""

    def __init__(
        self,
        name: str,
        net: ConvAutoencoder,
        *,
        version: str,
        device: str = "cpu",
        meta: dict[str, Any] | None = None,
        source: str = "",
    ) -> None:
        net.eval().requires_grad_(False).to(device)
        self.name = name
        self.net = net
        self.config = net.config
        self.meta = dict(meta or {})
        self.device = device
        self.source = source
        self.version = version
        self.space = f"model:{name}@{version}"

    @classmethod
    def load(cls, name: str, directory: Path, device: str = "cpu") -> AEModel:
        """Read a checkpoint folder; its version is the digest of both files."""
        from embedsvc.nets.autoencoder import AEConfig, ConvAutoencoder

        document, state = read_checkpoint(directory, FORMAT)
        try:
            config = AEConfig.from_json(document["model"])
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{directory / CONFIG}: {exc}") from None
        net = ConvAutoencoder(config)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"{directory / WEIGHTS}: weights do not fit the config ({exc})") from None
        meta = {k: v for k, v in document.items() if k not in ("format", "model")}
        version = file_digest([directory / WEIGHTS, directory / CONFIG])
        return cls(name, net, version=version, device=device, meta=meta, source=str(directory))

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def memory_bytes(self) -> int:
        return torch_bytes(self.net)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

    def encode(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) in [0, 1] -> latents (N, latent_dim) float32."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(images), CHUNK):
                out.append(self.net.encode(self._tensor(images[start : start + CHUNK])).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.latent_dim), np.float32)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """(N, latent_dim) -> images (N, C, H, W) float32 in [0, 1]."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(latents), CHUNK):
                out.append(self.net.decode(self._tensor(latents[start : start + CHUNK])).cpu().numpy())
        if not out:
            size = self.config.image_size
            return np.zeros((0, self.config.channels, size, size), dtype=np.float32)
        return np.concatenate(out)

    def reconstruction_errors(self, images: np.ndarray) -> np.ndarray:
        """Mean squared pixel error of each image's reconstruction (N,): a residual, not a likelihood."""
        decoded = self.decode(self.encode(images))
        return ((decoded - images) ** 2).reshape(len(images), -1).mean(axis=1).astype(np.float32)
