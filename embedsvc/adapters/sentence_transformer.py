"""`RemoteSentenceTransformer`: sentence-transformers' `encode` over a text encoder hosted by embedsvc.

    from embedsvc.adapters.sentence_transformer import RemoteSentenceTransformer

    model = RemoteSentenceTransformer("localhost:50051", "minilm")
    embeddings = model.encode(["A man is eating food.", "A man rides a horse."], normalize_embeddings=True)
    model.similarity(embeddings, embeddings)

`encode` takes the parameters code commonly passes (`batch_size`, `show_progress_bar`, `convert_to_numpy`,
`convert_to_tensor`, `normalize_embeddings`, `truncate_dim`, `prompt_name`, `prompt`, `device`) and returns what
`SentenceTransformer.encode` returns: a 1-D array for one string, a 2-D float32 array for a list, a torch tensor with
`convert_to_tensor`, a list of tensors with `convert_to_numpy=False`. Texts go to the server in batches of up to
2,048 per call (the server's own batcher sizes the forward passes; `batch_size` only sets the progress bar's steps).
Tensors need torch installed; nothing else here does. The hosted model's named prompts (`prompts`,
`default_prompt_name`) are the server's: `prompt_name` is applied by the server (the vectors are in the prompt's space),
and `encode_query` / `encode_document` pick the "query" and "document" (else "passage", else "corpus") prompts as
sentence-transformers does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from embedsvc.adapters._connect import Connection, client, embed_texts
from embedsvc.client import Client


class RemoteSentenceTransformer:
    """The encode side of `sentence_transformers.SentenceTransformer`, answered by an embedsvc text encoder."""

    similarity_fn_name = "cosine"

    def __init__(
        self,
        target: str | Client = "localhost:50051",
        model: str = "",
        *,
        truncate_dim: int | None = None,
        **connection: Any,
    ) -> None:
        """`target` is "host:port" (with `api_key`, `tls`, `ca_file`, `cert_file`, `key_file`, `timeout` as for
        `embedsvc.client.Client`) or a Client; `model` a text encoder the server hosts."""
        if not model:
            raise ValueError("model: the name of a text encoder hosted by the server is required")
        self._client, self._owns_client = client(target, Connection(**connection))  # type: ignore[typeddict-item]
        self.model = model
        info = self._client.get_model(model)
        if not info.embeds_texts:
            raise ValueError(f"model '{model}' does not embed texts")
        self._dimension = int(info.dimension)
        self._max_seq_length = int(info.max_seq_length)
        self.truncate_dim = truncate_dim
        self.space = info.space
        self.prompts: dict[str, str] = dict(info.prompts)
        self.default_prompt_name: str | None = info.default_prompt_name or None

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> RemoteSentenceTransformer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteSentenceTransformer(model={self.model!r}, dimension={self.get_sentence_embedding_dimension()})"

    @property
    def max_seq_length(self) -> int:
        """Tokens the model reads of each text (0 when it has no such limit); longer texts are truncated."""
        return self._max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        raise AttributeError("max_seq_length is the hosted model's; set it in the server's model configuration")

    def get_max_seq_length(self) -> int:
        return self._max_seq_length

    def get_sentence_embedding_dimension(self) -> int:
        return self._dimension if self.truncate_dim is None else min(self.truncate_dim, self._dimension)

    get_embedding_dimension = get_sentence_embedding_dimension

    def encode(
        self,
        sentences: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: str | None = "sentence_embedding",
        precision: str = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: Any = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """SentenceTransformer.encode's answer, computed by the service (`device` is the server's to choose)."""
        name = ""
        if prompt is None and prompt_name is not None:
            if prompt_name not in self.prompts:
                choices = ", ".join(sorted(self.prompts)) or "none"
                raise ValueError(f"prompt_name {prompt_name!r} is not one of the hosted model's prompts ({choices})")
            name = prompt_name
        elif prompt and self.default_prompt_name:
            raise ValueError(
                f"prompt=: the hosted model puts its default prompt {self.default_prompt_name!r} before every text; "
                "pass prompt_name= (one of its prompts) instead"
            )
        if output_value != "sentence_embedding":
            raise ValueError(f"output_value={output_value!r}: only sentence embeddings are served")
        if precision != "float32":
            raise ValueError(f"precision={precision!r}: only float32 is served (host an int8 engine for speed)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        single = isinstance(sentences, str)
        texts: list[str] = [sentences] if isinstance(sentences, str) else list(sentences)
        if prompt:
            texts = [prompt + t for t in texts]
        rows = self._embed(texts, show_progress_bar, normalize_embeddings, name)
        dim = truncate_dim or self.truncate_dim
        if dim:
            rows = rows[:, :dim]
            if normalize_embeddings:  # sentence-transformers normalises after truncating
                rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if convert_to_tensor:
            import torch

            tensor = torch.from_numpy(rows)
            return tensor[0] if single else tensor
        if not convert_to_numpy:
            import torch

            tensors = list(torch.from_numpy(rows))
            return tensors[0] if single else tensors
        return rows[0] if single else rows

    def encode_query(self, sentences: str | Sequence[str], **kwargs: Any) -> Any:
        """encode() for queries: with the hosted model's "query" prompt when it has one and no prompt is given."""
        if kwargs.get("prompt_name") is None and kwargs.get("prompt") is None and "query" in self.prompts:
            kwargs["prompt_name"] = "query"
        return self.encode(sentences, **kwargs)

    def encode_document(self, sentences: str | Sequence[str], **kwargs: Any) -> Any:
        """encode() for documents: with the hosted model's "document", else "passage", else "corpus" prompt when it
        has one and no prompt is given."""
        if kwargs.get("prompt_name") is None and kwargs.get("prompt") is None:
            name = next((n for n in ("document", "passage", "corpus") if n in self.prompts), None)
            if name is not None:
                kwargs["prompt_name"] = name
        return self.encode(sentences, **kwargs)

    def _embed(self, texts: list[str], show_progress_bar: bool | None, normalize: bool, prompt_name: str) -> np.ndarray:
        with tqdm(total=len(texts), desc="Batches", disable=not show_progress_bar, unit="text") as bar:
            return embed_texts(
                self._client,
                self.model,
                texts,
                normalize=normalize,
                dimension=self._dimension,
                progress=bar.update,
                prompt_name=prompt_name,
            )

    def similarity(self, embeddings1: Any, embeddings2: Any) -> Any:
        """Cosine similarity of every pair (rows of the first against rows of the second): a torch tensor when torch
        is installed, as sentence-transformers returns, else a numpy array."""
        return _as_result(_cosine(_matrix(embeddings1), _matrix(embeddings2)))

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> Any:
        """Cosine similarity of row i of the first with row i of the second."""
        a, b = _unit(_matrix(embeddings1)), _unit(_matrix(embeddings2))
        return _as_result(np.einsum("ij,ij->i", a, b))


def _matrix(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    elif isinstance(value, list) and value and hasattr(value[0], "detach"):
        value = np.stack([v.detach().cpu().numpy() for v in value])
    array = np.asarray(value, dtype=np.float32)
    return array[np.newaxis, :] if array.ndim == 1 else array


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _unit(a) @ _unit(b).T


def _as_result(values: np.ndarray) -> Any:
    try:
        import torch
    except ImportError:
        return values
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
