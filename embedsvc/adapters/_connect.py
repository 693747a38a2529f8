"""The one way adapters get a client: a target string with connection options, or a client the caller made."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from embedsvc.client import AsyncClient, Client


class Connection(TypedDict, total=False):
    timeout: float | None
    api_key: str | None
    tls: bool
    ca_file: str | Path | None
    cert_file: str | Path | None
    key_file: str | Path | None


def client(target: str | Client, options: Connection) -> tuple[Client, bool]:
    """The client to use and whether the adapter owns it (and closes it)."""
    if isinstance(target, Client):
        if options:
            raise TypeError("connection options go to the Client you pass, not to the adapter")
        return target, False
    return Client(target, **options), True


def async_client(target: str | Client | AsyncClient, options: Connection) -> AsyncClient:
    """An asyncio client on the same target (adapters with async methods keep one of each)."""
    if isinstance(target, AsyncClient):
        return target
    if isinstance(target, Client):
        raise TypeError("pass a target string (or an AsyncClient as well) for the async methods")
    return AsyncClient(target, **options)


# Words or texts per call: under the server's default limits (max_words_per_request 10,000, max_texts_per_request
# 2,048), so that no adapter loops one RPC per input.
WORDS_PER_CALL = 10_000
TEXTS_PER_CALL = 2_048


def embed_texts(
    c: Client,
    model: str,
    texts: Sequence[str],
    *,
    normalize: bool,
    dimension: int = 0,
    progress: Callable[[int], object] | None = None,
    prompt_name: str = "",
) -> np.ndarray:
    """The texts' vectors, TEXTS_PER_CALL texts per EmbedTexts call, after the named prompt (""; the model's default);
    `progress` hears how many each call embedded."""
    parts = []
    for start in range(0, len(texts), TEXTS_PER_CALL):
        part = list(texts[start : start + TEXTS_PER_CALL])
        parts.append(c.embed_texts(model, part, normalize=normalize, prompt_name=prompt_name).vectors)
        if progress is not None:
            progress(len(part))
    return np.vstack(parts) if parts else np.zeros((0, dimension), dtype=np.float32)


def stored_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """A framework's metadata as embedsvc stores it: scalars and lists of scalars as they are; anything else (a nested
    dict, say) as its JSON text; None values left out."""
    stored: dict[str, Any] = {}
    for key, value in (metadata or {}).items():
        if value is None or isinstance(value, (str, bool, int, float)):
            stored[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, bool, int, float)) for v in value):
            stored[key] = list(value)
        else:
            stored[key] = json.dumps(value, sort_keys=True, default=str)
    return {k: v for k, v in stored.items() if v is not None}
