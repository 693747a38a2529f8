"""The cross-encoder kind: scores equal sentence-transformers' CrossEncoder.predict on the same weights (to 1e-5), on
both engines, for short pairs and pairs longer than the model reads (a long text and a long query); token counts;
the ONNX export cached by the weights' digest; the fallback to torch; models that are not rerankers; configuration."""

import itertools
import logging
import re
import shutil

import numpy as np
import pytest
import torch

from embedsvc.backends import cross_encoders
from embedsvc.backends.base import LoadContext, ModelSpec
from embedsvc.backends.capabilities import Capability, CrossEncoder
from embedsvc.backends.cross_encoders import CrossEncoderOptions, load_cross_encoder
from embedsvc.backends.kinds import parse_model
from embedsvc.errors import ConfigError
from tests.conftest import GENSIM_DATA, build_cross_encoder

pytest.importorskip("onnxruntime")


def lee_pairs(n: int = 40) -> list[tuple[str, str]]:
    """Real news text: each sentence of gensim's Lee corpus as a query against the next one, then whole documents
    (past the model's 128 tokens) against short queries, and long queries against short texts."""
    docs = (GENSIM_DATA / "lee_background.cor").read_text(encoding="utf-8").splitlines()
    sentences = [s.strip() for d in docs[:10] for s in re.split(r"(?<=[.!?])\s+", d) if len(s.split()) >= 4]
    long = [d for d in docs if len(d.split()) > 150]
    pairs = list(itertools.pairwise(sentences[: n + 1]))
    pairs += [(sentences[i], long[i]) for i in range(5)]
    pairs += [(long[i], sentences[i]) for i in range(5, 8)]
    return pairs


def spec(path, **options):
    return ModelSpec("reranker", CrossEncoderOptions(path, **options))


@pytest.fixture(scope="module")
def reference(cross_encoder_dir):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    return STCrossEncoder(str(cross_encoder_dir), device="cpu")


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_scores_equal_cross_encoder_predict_short_and_over_long_pairs(engine, cross_encoder_dir, reference, tmp_path):
    model = load_cross_encoder(spec(cross_encoder_dir, engine=engine), device="cpu", data_dir=tmp_path)
    assert model.engine == engine and isinstance(model, CrossEncoder) and model.max_seq_length == 128
    pairs = lee_pairs()
    counts = model.token_counts(pairs)
    tokenizer = reference.tokenizer
    assert counts == [len(tokenizer(q, t)["input_ids"]) for q, t in pairs]  # untruncated, special tokens included
    assert sum(c > 128 for c in counts) >= 8  # long texts and long queries: truncated as predict truncates them
    raw = model.score(pairs)
    np.testing.assert_allclose(raw, reference.predict(pairs, activation_fn=torch.nn.Identity()), atol=1e-5, rtol=0)
    from embedsvc.core.texts.reranking import sigmoid

    # predict's default activation for a one-label model is the sigmoid: what Rerank returns without raw_scores.
    assert str(reference.activation_fn) == "Sigmoid()"
    np.testing.assert_allclose(sigmoid(raw), reference.predict(pairs), atol=1e-5, rtol=0)
    assert raw.std() > 0.1  # the pairs score apart: the comparison means something


def test_a_configured_max_seq_length_truncates_as_predict_with_max_length(cross_encoder_dir, tmp_path):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    pairs = lee_pairs(10)
    want = STCrossEncoder(str(cross_encoder_dir), device="cpu", max_length=32).predict(
        pairs, activation_fn=torch.nn.Identity()
    )
    for engine in ("torch", "onnx"):
        model = load_cross_encoder(spec(cross_encoder_dir, engine=engine, max_seq_length=32), device="cpu",
                                   data_dir=tmp_path)  # fmt: skip
        assert model.max_seq_length == 32
        np.testing.assert_allclose(model.score(pairs), want, atol=1e-5, rtol=0)
    with pytest.raises(RuntimeError, match="positions"):
        load_cross_encoder(spec(cross_encoder_dir, engine="torch", max_seq_length=4096), device="cpu", data_dir=None)


def test_the_export_is_cached_by_the_weights_digest(cross_encoder_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(cross_encoder_dir, model)
    first = load_cross_encoder(spec(model, engine="onnx"), device="cpu", data_dir=tmp_path / "data")
    exported = first.onnx_path.stat().st_mtime_ns
    again = load_cross_encoder(spec(model, engine="onnx"), device="cpu", data_dir=tmp_path / "data")
    assert again.onnx_path == first.onnx_path and again.onnx_path.stat().st_mtime_ns == exported
    from safetensors.torch import load_file, save_file

    weights = load_file(str(model / "model.safetensors"))
    weights["classifier.weight"] = weights["classifier.weight"] * 2
    save_file(weights, str(model / "model.safetensors"))
    changed = load_cross_encoder(spec(model, engine="onnx"), device="cpu", data_dir=tmp_path / "data")
    assert changed.version != first.version and changed.onnx_path != first.onnx_path and changed.engine == "onnx"


def test_onnx_falls_back_to_torch_with_a_log_line_when_its_check_fails(cross_encoder_dir, tmp_path, monkeypatch,
                                                                       caplog):  # fmt: skip
    monkeypatch.setattr(cross_encoders, "MAX_DIFFERENCE", -1.0)
    with caplog.at_level(logging.WARNING):
        model = load_cross_encoder(spec(cross_encoder_dir, engine="onnx"), device="cpu", data_dir=tmp_path)
    assert model.engine == "torch" and "not on the ONNX engine" in caplog.text and "differ" in caplog.text


def test_a_classifier_with_several_labels_is_not_a_reranker(tmp_path):
    classifier = build_cross_encoder(tmp_path / "nli", labels=3)
    with pytest.raises(RuntimeError, match="3 labels"):
        load_cross_encoder(spec(classifier, engine="torch"), device="cpu", data_dir=tmp_path)


def test_the_kind_loads_one_part_offering_pairs(cross_encoder_dir, tmp_path):
    model_spec = parse_model(0, {"name": "reranker", "kind": "cross-encoder", "path": str(cross_encoder_dir)})
    kind = cross_encoders.KIND
    loaded = kind.load(model_spec, LoadContext(tmp_path, "cpu"))
    assert loaded.capabilities == kind.offers(model_spec) == {Capability.PAIRS} and loaded.unfit_parts() == []
    assert loaded.engine == "onnx" and loaded.version.startswith("sha256:") and loaded.dimension == 0
    part = loaded.parts[Capability.PAIRS]
    assert part.space == f"model:reranker@{loaded.version}" and part.method == "cross-encoder"


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({}, "path"),
        ({"path": "/m", "engine": "tensorrt"}, "engine"),
        ({"path": "/m", "engine": "onnx", "fp16": True}, "fp16"),
        ({"path": "/m", "max_seq_length": -1}, "max_seq_length"),
        ({"path": "/m", "max_batch_size": 0}, "max_batch_size"),
        ({"path": "/m", "format": "onnx"}, "format"),
        ({"path": "/m", "words": "glove"}, "unknown key"),
    ],
)
def test_configuration_errors_name_the_key(entry, key):
    with pytest.raises(ConfigError, match=key):
        parse_model(0, {"name": "r", "kind": "cross-encoder", **entry})
