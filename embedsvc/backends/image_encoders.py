"""The image-encoder kind: images in, one feature vector each, for similarity search.

Image models honour one small interface (`embedsvc.backends.capabilities.ImageEncoder`): a VAE's latent mean
(`embedsvc.backends.vae`), and this kind's two formats: a torchvision classification architecture whose weights come
from a local file (the penultimate layer's features: the classifier head replaced by identity), and a TorchScript
module. Inputs are float32 (N, C, H, W) in [0, 1] at the encoder's `shape`; each encoder applies its own
normalisation.

torchvision is imported behind `embedsvc.backends.torchvision_compat`, so that PyPI's torchvision works beside the CPU
build of torch (its compiled detection operators do not load there; classification architectures never call them).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

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
    int_value,
    path_value,
)
from embedsvc.backends.devices import file_digest, resolve_device, torch_bytes
from embedsvc.errors import ConfigError

CHUNK = 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageEncoderFormat(StrEnum):
    # A torchvision classification architecture (`architecture`, e.g. "resnet18") with weights from a local
    # .safetensors file (or a state dict .pt/.pth read with weights_only=True); features of the penultimate layer.
    TORCHVISION = "torchvision"
    # A TorchScript module (torch.jit.save) that maps (N, C, H, W) float images to (N, D) features.
    TORCHSCRIPT = "torchscript"


@dataclass(frozen=True)
class ImageEncoderOptions(Options):
    kind: ClassVar[str] = "image-encoder"

    format: ImageEncoderFormat
    # The weights (torchvision) or the module (TorchScript).
    path: Path
    # "" for the server's device, else "auto" | "cpu" | "cuda:N".
    device: str = ""
    # torchvision: the architecture's name.
    architecture: str = ""
    # Images are resized to this square side and converted to this many channels, then normalised per channel after
    # scaling pixels to [0, 1] (ImageNet's statistics by default).
    image_size: int = 224
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


class TorchImageEncoder:
    """A torch module (torchvision trunk or TorchScript) with per-channel normalisation, run in inference mode."""

    def __init__(self, spec: ModelSpec, module: Any, method: str, version: str, device: str) -> None:
        import torch

        options: ImageEncoderOptions = spec.options
        self.name = spec.name
        self.method = method
        self.version = version
        self.space = f"model:{spec.name}@{version}"
        self.device = device
        self.shape = ImageShape(options.channels, options.image_size)
        self._module = module.eval().to(device)
        self._mean = torch.tensor(options.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._std = torch.tensor(options.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        # Found by embedding one blank image at load (also the warm-up).
        self._dimension = 0
        self._dimension = int(
            self.embed(np.zeros((1, options.channels, options.image_size, options.image_size), np.float32)).shape[1]
        )

    def memory_bytes(self) -> int:
        return torch_bytes(self._module)

    def warm_up(self) -> None:
        """Two blank images (one more forward pass than the one that found the dimension at load)."""
        self.embed(np.zeros((2, self.shape.channels, self.shape.size, self.shape.size), np.float32))

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, images: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(images), CHUNK):
                x = torch.from_numpy(np.ascontiguousarray(images[start : start + CHUNK])).to(self.device)
                features = self._module((x - self._mean) / self._std)
                if isinstance(features, tuple | list):
                    features = features[0]
                if features.dim() != 2:
                    features = features.flatten(1)
                out.append(features.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self._dimension), np.float32)


def import_torchvision() -> types.ModuleType:
    """torchvision (importable beside a mismatched torch thanks to embedsvc.backends.torchvision_compat)."""
    import torchvision

    return torchvision


def read_state_dict(path: Path) -> dict[str, Any]:
    """Weights from .safetensors, or from a torch state dict read with weights_only=True (no arbitrary pickles)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict")
    return state


def _torchvision_trunk(options: ImageEncoderOptions) -> Any:
    from torch import nn

    torchvision = import_torchvision()
    models = torchvision.models
    if options.architecture not in models.list_models(module=models):
        known = ", ".join(models.list_models(module=models)[:12])
        raise ValueError(f"{options.architecture!r} is not a torchvision classification model (e.g. {known}, ...)")
    net = models.get_model(options.architecture, weights=None)
    net.load_state_dict(read_state_dict(options.path))
    # The penultimate layer: drop the classification head, whatever the family calls it.
    for head in ("fc", "classifier", "head", "heads"):
        if hasattr(net, head):
            layer = getattr(net, head)
            if isinstance(layer, nn.Sequential) and head == "classifier" and len(layer) > 1:
                layer[-1] = nn.Identity()  # keep dropout/hidden layers (vgg, alexnet, mobilenet): drop the last Linear
            else:
                setattr(net, head, nn.Identity())
            return net
    raise ValueError(f"{options.architecture}: no classification head (fc, classifier, head or heads) to remove")


def load_image_encoder(spec: ModelSpec, device: str) -> TorchImageEncoder:
    options: ImageEncoderOptions = spec.options
    if not options.path.is_file():
        raise FileNotFoundError(f"{options.path}: no such file")
    version = file_digest([options.path])
    if options.format is ImageEncoderFormat.TORCHVISION:
        return TorchImageEncoder(spec, _torchvision_trunk(options), "torchvision", version, device)
    import torch

    module = torch.jit.load(str(options.path), map_location=device)
    return TorchImageEncoder(spec, module, "torchscript", version, device)


class ImageEncoderKind(Kind):
    name = ImageEncoderOptions.kind
    keys = frozenset({"path", "format", "device", "architecture", "image_size", "channels", "mean", "std"})

    def runs_file_code(self, spec: ModelSpec) -> bool:
        return getattr(spec.options, "format", None) is ImageEncoderFormat.TORCHSCRIPT

    def parse(self, where: str, entry: Mapping[str, Any]) -> ImageEncoderOptions:
        path = path_value(where, entry, "a checkpoint folder (vae) or weight file (image-encoder)")
        device = device_value(where, entry)
        fmt = enum_value(f"{where}.format", ImageEncoderFormat, entry.get("format"))
        architecture = entry.get("architecture", "")
        if fmt is ImageEncoderFormat.TORCHVISION and (not isinstance(architecture, str) or not architecture):
            raise ConfigError(f"{where}.architecture: a torchvision model name (for example resnet18) is required")
        if fmt is ImageEncoderFormat.TORCHSCRIPT and architecture:
            raise ConfigError(f"{where}.architecture: applies only to format = torchvision")
        image_size = int_value(where, entry, "image_size", 224, 8, 4096)
        channels = entry.get("channels", 3)
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ConfigError(f"{where}.channels: must be 1 or 3, got {channels!r}")
        norm: dict[str, tuple[float, ...]] = {}
        for key, default in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
            value = entry.get(key, list(default) if channels == 3 else [sum(default) / 3])
            ok = isinstance(value, list) and len(value) == channels
            if not ok or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
                raise ConfigError(f"{where}.{key}: must be a list of {channels} numbers, got {value!r}")
            if key == "std" and any(v <= 0 for v in value):
                raise ConfigError(f"{where}.std: must be positive")
            norm[key] = tuple(float(v) for v in value)
        return ImageEncoderOptions(
            fmt, path, device, architecture, image_size, channels, mean=norm["mean"], std=norm["std"]
        )

    def offers(self, spec: ModelSpec) -> frozenset[Capability]:
        return frozenset({Capability.IMAGES})

    def load(self, spec: ModelSpec, context: LoadContext) -> Loaded:
        options: ImageEncoderOptions = spec.options
        encoder = load_image_encoder(spec, resolve_device(options.device or context.device))  # warms up
        return Loaded(
            engine="torch",
            dimension=encoder.dimension,
            version=encoder.version,
            source=str(options.path),
            device=encoder.device,
            image_shape=encoder.shape,
            parts={Capability.IMAGES: encoder},
        )


KIND = ImageEncoderKind()
