"""Image encoders: images in, one feature vector each, for similarity search.

Three kinds share one small interface (`ImageEncoder`): a VAE's latent mean (`embedsvc.backends.vae.VAEModel`), a
torchvision classification architecture whose weights come from a local file (the penultimate layer's features: the
classifier head replaced by identity), and a TorchScript module. Inputs are float32 (N, C, H, W) in [0, 1] at the
encoder's `shape`; each encoder applies its own normalisation.

torchvision is imported behind `embedsvc.backends.torchvision_compat`, so that PyPI's torchvision works beside the CPU
build of torch (its compiled detection operators do not load there; classification architectures never call them).
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from embedsvc.backends.devices import file_digest
from embedsvc.core.images.codec import ImageShape
from embedsvc.settings import ImageEncoderFormat, ModelSpec

CHUNK = 256


class ImageEncoder(Protocol):
    name: str
    version: str
    space: str
    device: str
    shape: ImageShape
    # What provenance reports: "vae-mean", "torchvision", "torchscript".
    method: str

    @property
    def dimension(self) -> int: ...

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 in [0, 1] -> (N, dimension) float32."""
        ...


class TorchImageEncoder:
    """A torch module (torchvision trunk or TorchScript) with per-channel normalisation, run in inference mode."""

    def __init__(self, spec: ModelSpec, module: Any, method: str, version: str, device: str) -> None:
        import torch

        self.name = spec.name
        self.method = method
        self.version = version
        self.space = f"model:{spec.name}@{version}"
        self.device = device
        self.shape = ImageShape(spec.channels, spec.image_size)
        self._module = module.eval().to(device)
        self._mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        # Found by embedding one blank image at load (also the warm-up).
        self._dimension = 0
        self._dimension = int(
            self.embed(np.zeros((1, spec.channels, spec.image_size, spec.image_size), np.float32)).shape[1]
        )

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


def _torchvision_trunk(spec: ModelSpec) -> Any:
    from torch import nn

    torchvision = import_torchvision()
    models = torchvision.models
    if spec.architecture not in models.list_models(module=models):
        known = ", ".join(models.list_models(module=models)[:12])
        raise ValueError(f"{spec.architecture!r} is not a torchvision classification model (e.g. {known}, ...)")
    net = models.get_model(spec.architecture, weights=None)
    assert spec.path is not None
    net.load_state_dict(read_state_dict(spec.path))
    # The penultimate layer: drop the classification head, whatever the family calls it.
    for head in ("fc", "classifier", "head", "heads"):
        if hasattr(net, head):
            layer = getattr(net, head)
            if isinstance(layer, nn.Sequential) and head == "classifier" and len(layer) > 1:
                layer[-1] = nn.Identity()  # keep dropout/hidden layers (vgg, alexnet, mobilenet): drop the last Linear
            else:
                setattr(net, head, nn.Identity())
            return net
    raise ValueError(f"{spec.architecture}: no classification head (fc, classifier, head or heads) to remove")


def load_image_encoder(spec: ModelSpec, device: str) -> TorchImageEncoder:
    assert spec.path is not None
    if not spec.path.is_file():
        raise FileNotFoundError(f"{spec.path}: no such file")
    version = file_digest([spec.path])
    if spec.format is ImageEncoderFormat.TORCHVISION:
        return TorchImageEncoder(spec, _torchvision_trunk(spec), "torchvision", version, device)
    import torch

    module = torch.jit.load(str(spec.path), map_location=device)
    return TorchImageEncoder(spec, module, "torchscript", version, device)
