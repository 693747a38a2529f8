"""minilm-static: its quality, its cache (atomic, checksummed, healed, older recipes kept), and an identity that is
the same on every machine (the digest of its inputs, guarded by the reference rows)."""

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from embedsvc.backends import minilm_static
from embedsvc.backends.devices import vectors_checksum as checksum

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def distilled(minilm, data_dir):
    """The session's distillation as the sentence mode cached it: every token and its float16 row."""
    from model2vec import StaticModel

    static = StaticModel.from_pretrained(str(minilm_static.sentence_model_dir(data_dir)), force_download=False)
    return list(static.tokens), np.asarray(static.embedding)


def test_minilm_static_quality_and_cache(minilm, data_dir):
    assert minilm.size > 20_000 and minilm.dimension == 256
    assert not any(w.startswith("##") or (w.startswith("[") and w.endswith("]")) for w in minilm.words)
    assert minilm.kv.most_similar(positive=["king", "woman"], negative=["man"], topn=1)[0][0] == "queen"
    cache = data_dir / minilm_static.CACHE_SUBDIR
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["count"] == minilm.size and meta["recipe"] == minilm_static.RECIPE
    cached = minilm_static.read_cache(cache)
    assert isinstance(cached.vectors, np.memmap)  # later starts memory-map the cache
    assert cached.words == minilm.words and cached.version == minilm.version


def test_this_machine_distils_the_reference_model(minilm, data_dir):
    """The session's distillation, made here on however many threads, has the version the reference was made under
    on another machine, and matches its rows: the version names the inputs, checked."""
    reference = json.loads(minilm_static.REFERENCE.read_text())
    meta = json.loads((data_dir / minilm_static.CACHE_SUBDIR / "meta.json").read_text())
    assert meta["basis"] == "inputs" and meta["check"].startswith("matches the reference"), meta["check"]
    assert minilm.version == reference["version"] == meta["version"]
    assert meta["inputs"] == reference["inputs"] == minilm_static.recipe_inputs()
    # Its bytes are not what names it: the digest of the vectors is another string.
    assert minilm.version != "sha256:" + checksum(minilm.vectors, minilm.words)[:16]


def test_rounding_noise_keeps_the_identity_a_different_model_does_not(distilled, minilm):
    tokens, embedding = distilled
    words, vectors = minilm_static.whole_words(tokens, embedding)
    inputs = minilm_static.recipe_inputs()
    same = minilm_static.identify(inputs, tokens, embedding, words, vectors)
    assert same.basis == "inputs" and same.version == minilm.version

    # One float16 ulp up or down on a third of the values (what another CPU's kernels do) is the same model.
    rng = np.random.default_rng(0)
    up = np.nextafter(embedding, np.float16(np.inf))
    down = np.nextafter(embedding, np.float16(-np.inf))
    choice = rng.integers(0, 3, size=embedding.shape)
    noisy = np.where(choice == 0, up, np.where(choice == 1, down, embedding))
    assert (noisy != embedding).mean() > 0.5
    noisy_words, noisy_vectors = minilm_static.whole_words(tokens, noisy)
    noisy_identity = minilm_static.identify(inputs, tokens, noisy, noisy_words, noisy_vectors)
    assert noisy_identity.basis == "inputs" and noisy_identity.version == same.version

    # A component with its sign flipped (another PCA convention) is another space: it is named by its own bytes.
    flipped = embedding.copy()
    flipped[:, 3] *= -1
    flipped_words, flipped_vectors = minilm_static.whole_words(tokens, flipped)
    other = minilm_static.identify(inputs, tokens, flipped, flipped_words, flipped_vectors)
    assert other.basis == "bytes" and other.version == "sha256:" + checksum(flipped_vectors, flipped_words)[:16]
    assert other.version != same.version and "misses the reference" in other.check


def test_inputs_the_reference_was_not_made_from_are_not_checked(distilled, tmp_path):
    tokens, embedding = distilled
    words, vectors = minilm_static.whole_words(tokens, embedding)
    inputs = minilm_static.recipe_inputs()
    inputs["parameters"] = {**inputs["parameters"], "pca_dims": 128}
    found = minilm_static.identify(inputs, tokens, embedding, words, vectors)
    assert found.basis == "inputs" and found.check.startswith("not checked")
    assert found.version == minilm_static.version_of(inputs, minilm_static.tokens_digest(tokens))
    assert (
        found.version
        != minilm_static.identify(minilm_static.recipe_inputs(), tokens, embedding, words, vectors).version
    )
    missing = minilm_static.identify(
        minilm_static.recipe_inputs(), tokens, embedding, words, vectors, reference_file=tmp_path / "none.json"
    )
    assert missing.basis == "inputs" and missing.check.startswith("not checked: no reference")


def _copy_cache(data_dir: Path, into: Path) -> Path:
    from shutil import copytree

    cache = into / "cache"
    copytree(data_dir / minilm_static.CACHE_SUBDIR, cache)
    return cache


def test_a_cache_of_the_previous_recipe_keeps_its_version(minilm, data_dir, tmp_path, caplog):
    """Caches written before the identity by inputs keep working, and keep the version their collections are bound
    to (the digest of their bytes); a recipe neither this one nor the previous is rebuilt."""
    cache = _copy_cache(data_dir, tmp_path)
    meta = json.loads((cache / "meta.json").read_text())
    legacy = {
        **minilm_static.LEGACY_RECIPE,
        "sources": minilm_static._source_versions(),
        "count": meta["count"],
        "sha256": meta["sha256"],
    }
    (cache / "meta.json").write_text(json.dumps(legacy))
    with caplog.at_level(logging.INFO, logger=minilm_static.__name__):
        cached = minilm_static.read_cache(cache)
    assert cached is not None and cached.words == minilm.words
    assert cached.version == "sha256:" + checksum(minilm.vectors, minilm.words)[:16] != minilm.version
    assert "built by an older release" in caplog.text
    (cache / "meta.json").write_text(json.dumps({**legacy, "recipe": 1}))
    assert minilm_static.read_cache(cache) is None
    (cache / "meta.json").write_text(json.dumps({**meta, "inputs": {**meta["inputs"], "recipe": 99}}))
    assert minilm_static.read_cache(cache) is None  # built from other inputs


def test_corrupt_cache_is_detected(tmp_path, minilm, data_dir):
    cache = _copy_cache(data_dir, tmp_path)
    assert minilm_static.read_cache(cache) is not None
    (cache / minilm_static.STATIC_SUBDIR / "model.safetensors").rename(tmp_path / "moved")
    assert minilm_static.read_cache(cache) is None  # no sentence mode: rebuilt
    (tmp_path / "moved").rename(cache / minilm_static.STATIC_SUBDIR / "model.safetensors")
    assert minilm_static.read_cache(cache) is not None
    raw = bytearray((cache / "vectors.npy").read_bytes())
    raw[-1] ^= 0xFF
    (cache / "vectors.npy").write_bytes(bytes(raw))
    assert minilm_static.read_cache(cache) is None


def test_write_cache_is_atomic(tmp_path, minilm, data_dir):
    from model2vec import StaticModel

    cache = tmp_path / "cache"
    static = StaticModel.from_pretrained(str(minilm_static.sentence_model_dir(data_dir)), force_download=False)
    meta = json.loads((data_dir / minilm_static.CACHE_SUBDIR / "meta.json").read_text())
    identity = minilm_static.Identity(
        meta["inputs"], meta["tokens_sha256"], meta["version"], meta["basis"], meta["check"]
    )
    minilm_static.write_cache(cache, list(minilm.words), np.asarray(minilm.vectors), identity, static)
    assert minilm_static.read_cache(cache).version == minilm.version
    assert not list(tmp_path.glob(".minilm-static-*"))  # no temporary directory left behind


_DISTIL = """
import logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
from embedsvc.backends.word_vectors import KIND, load_word_vectors
space = load_word_vectors(KIND.embedded()[0], Path(sys.argv[1]))
print(space.version)
"""


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_two_data_directories_on_1_and_2_threads_report_one_version(tmp_path, minilm):
    """Two fresh data directories distilled at once, by processes on 1 and on 2 threads, report the same version,
    the reference's (and the session's), and print our progress lines, not the libraries' bars and load report."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    runs = []
    started = time.monotonic()
    for threads in (1, 2):
        folder = tmp_path / f"threads-{threads}"
        runs.append(
            subprocess.Popen(
                [sys.executable, "-c", _DISTIL, str(folder)],
                env={**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outcomes = [run.communicate(timeout=1700) for run in runs]
    print(f"two distillations in {time.monotonic() - started:.0f} s")
    for run, (out, err) in zip(runs, outcomes, strict=True):
        assert run.returncode == 0, err
        assert "LOAD REPORT" not in err and "Encoding tokens" not in err and "Loading weights" not in err, err
        assert "encoded 29,525 of 29,525 tokens (100%)" in err and "matches the reference" in err, err
    versions = {out.strip() for out, _ in outcomes}
    assert versions == {minilm.version}
