"""Models at run time through a real server: a model that fails to load does not stop the others; LoadModel,
UnloadModel and ReloadModel; calls running on an unloaded model finish; memory per model."""

import threading

import grpc
import numpy as np
import pytest

from embedsvc.backends.base import ModelSpec
from embedsvc.backends.text_encoders import TextEncoderFormat, TextEncoderOptions
from embedsvc.backends.word_vectors import WordVectorFormat, WordVectorsOptions
from embedsvc.client import Client
from embedsvc.v1 import models_pb2
from tests.conftest import GENSIM_DATA, planted_specs, planted_vectors, write_word2vec_text
from tests.helpers import assert_refused


@pytest.fixture
def served(tmp_path, planted_file, make_server):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 3\nking 1 2\n")
    models = (
        *planted_specs(planted_file),
        ModelSpec("bad", WordVectorsOptions(WordVectorFormat.WORD2VEC_TEXT, bad)),
        ModelSpec("bad-mean", TextEncoderOptions(TextEncoderFormat.AVERAGED_WORDS, words="bad")),
    )
    with make_server(models=models) as (srv, target):
        yield srv, target, bad


def states(client):
    return {m.name: models_pb2.ModelState.Name(m.state).removeprefix("MODEL_STATE_") for m in client.list_models()}


def test_a_model_that_fails_to_load_does_not_stop_the_others(served):
    _, target, bad = served
    with Client(target) as client:
        assert client.health() == "SERVING"
        assert states(client) == {"planted": "READY", "planted-mean": "READY", "bad": "FAILED", "bad-mean": "FAILED"}
        info = client.get_model("bad")
        assert f"cannot read {bad}" in info.error
        assert "builds on model 'bad', which is failed" in client.get_model("bad-mean").error
        assert_refused(
            lambda: client.similarity("bad", [("king", "king")]), grpc.StatusCode.UNAVAILABLE, "MODEL_NOT_READY"
        )
        assert client.similarity("planted", [("king", "queen")])[0] > 0.5
        # Fix the file, then load it (and what builds on it) without a restart.
        words, vectors = planted_vectors()
        write_word2vec_text(bad, words, vectors)
        assert client.load_model("bad").state == models_pb2.MODEL_STATE_READY
        assert client.load_model("bad-mean").state == models_pb2.MODEL_STATE_READY
        assert client.embed_texts("bad-mean", ["king queen"]).vectors.shape == (1, 32)


def test_unload_and_load_again(served):
    _, target, _ = served
    with Client(target) as client:
        info = client.get_model("planted")
        assert info.memory_bytes >= 2 * 52 * 32 * 4 and list(client.get_model("planted-mean").requires) == ["planted"]
        assert_refused(lambda: client.unload_model("planted"), grpc.StatusCode.FAILED_PRECONDITION, "MODEL_IN_USE")
        assert client.unload_model("planted-mean").state == models_pb2.MODEL_STATE_UNLOADED
        assert client.unload_model("planted-mean").state == models_pb2.MODEL_STATE_UNLOADED  # idempotent
        assert_refused(
            lambda: client.embed_texts("planted-mean", ["king"]), grpc.StatusCode.FAILED_PRECONDITION, "MODEL_UNLOADED"
        )
        client.unload_model("planted")
        assert client.get_model("planted").memory_bytes == 0
        assert_refused(lambda: client.load_model("planted-mean"), grpc.StatusCode.UNAVAILABLE, "MODEL_NOT_READY")
        assert client.load_model("planted").state == models_pb2.MODEL_STATE_READY
        assert_refused(lambda: client.load_model("planted"), grpc.StatusCode.ALREADY_EXISTS, "MODEL_EXISTS")
        assert client.load_model("planted-mean").state == models_pb2.MODEL_STATE_READY
        assert client.arithmetic("planted", ["king - man + woman"], top_n=1).results[0].hits[0].word == "queen"


def test_load_a_new_model_from_a_request_and_refuse_entries_that_run_file_code(served):
    _, target, _ = served
    with Client(target, timeout=120) as client:
        config = f'kind = "word-vectors"\nformat = "glove"\npath = "{GENSIM_DATA / "test_glove.txt"}"\n'
        info = client.load_model("glove", config)
        assert (info.state, info.format, info.memory_bytes > 0) == (models_pb2.MODEL_STATE_READY, "glove", True)
        assert "glove" in states(client)
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        pickled = f'kind = "word-vectors"\nformat = "gensim"\nallow_pickle = true\npath = "{GENSIM_DATA}/x.kv"\n'
        assert_refused(lambda: client.load_model("pickled", pickled), invalid, "INVALID_VALUE")
        assert_refused(lambda: client.load_model("broken", "kind = ["), invalid, "INVALID_VALUE")
        assert_refused(
            lambda: client.load_model("named", 'name = "x"\nkind = "word-vectors"'), invalid, "INVALID_VALUE"
        )
        assert_refused(lambda: client.load_model("nope"), grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND")
        torchscript = 'kind = "image-encoder"\nformat = "torchscript"\npath = "/x.pt"\n'
        error = assert_refused(
            lambda: client.load_model("torchscript", torchscript), invalid, "INVALID_VALUE", "config"
        )
        assert "configuration file" in error.message


def test_reload_switches_versions_and_a_failed_reload_keeps_the_old_one(served, tmp_path):
    _, target, _ = served
    with Client(target, timeout=120) as client:
        before = client.get_model("planted").version
        words, vectors = planted_vectors(seed=11)
        other = write_word2vec_text(tmp_path / "planted-2.txt", words, vectors)
        config = f'kind = "word-vectors"\nformat = "word2vec-text"\npath = "{other}"\n'
        after = client.reload_model("planted", config)
        assert after.state == models_pb2.MODEL_STATE_READY and after.version != before
        broken = f'kind = "word-vectors"\nformat = "word2vec-text"\npath = "{tmp_path / "missing.txt"}"\n'
        assert_refused(lambda: client.reload_model("planted", broken), grpc.StatusCode.UNAVAILABLE, "MODEL_NOT_READY")
        assert client.get_model("planted").version == after.version  # the loaded one still serves
        assert client.arithmetic("planted", ["king - man + woman"], top_n=1).results[0].hits[0].word == "queen"


def test_a_call_running_on_a_model_being_unloaded_finishes(served, monkeypatch):
    from embedsvc.core.words import lookups

    _, target, _ = served
    entered, release = threading.Event(), threading.Event()
    real = lookups.similarity

    def slow(*args, **kwargs):
        entered.set()
        release.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(lookups, "similarity", slow)
    with Client(target) as client, Client(target) as admin:
        admin.unload_model("planted-mean")
        result = {}
        running = threading.Thread(
            target=lambda: result.setdefault("s", client.similarity("planted", [("king", "king")]))
        )
        running.start()
        assert entered.wait(20)
        assert admin.unload_model("planted").state == models_pb2.MODEL_STATE_UNLOADED  # while the call runs on it
        release.set()
        running.join(20)
        assert np.isclose(result["s"][0], 1.0)  # finished on the model it started with
        assert_refused(
            lambda: client.similarity("planted", [("king", "king")]),
            grpc.StatusCode.FAILED_PRECONDITION,
            "MODEL_UNLOADED",
        )
