"""The CLI against a real server: in-process for the commands, as a subprocess for `serve` itself."""

import json
import queue
import re
import signal
import subprocess
import sys

import grpc
import numpy as np
import pytest

from embedsvc.cli import main
from embedsvc.client import Client, EmbedsvcClientError
from embedsvc.v1 import text_pb2, text_pb2_grpc
from tests import serve_process
from tests.conftest import GENSIM_DATA, QUESTIONS_WORDS
from tests.helpers import wait_for


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_arith_json_lists_queen_first(capsys, target):
    code, out, _ = run(capsys, "--target", target, "arith", "--model", "minilm-static", "king - man + woman", "--json")
    assert code == 0
    payload = json.loads(out)
    assert payload["hits"][0] == {"word": "queen", "score": pytest.approx(0.4973, abs=1e-3), "is_input": False}
    assert payload["provenance"]["model"] == "minilm-static"


def test_arith_text_cosmul_and_keep_inputs(capsys, target):
    code, out, _ = run(
        capsys,
        "--target",
        target,
        "arith",
        "--model",
        "planted",
        "king - man + woman",
        "--top-n",
        "2",
        "--method",
        "cosmul",
        "--keep-inputs",
    )
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 and any(line.startswith("queen") for line in lines)


def test_models_nearest_embed_similarity_doesnt_match(capsys, target):
    code, out, _ = run(capsys, "--target", target, "--json", "models")
    assert code == 0 and "minilm-static" in [m["name"] for m in json.loads(out)["models"]]
    code, out, _ = run(capsys, "--target", target, "models")
    assert re.search(r"^minilm-static\s+ready\s+dim 256", out, re.M)
    code, out, err = run(capsys, "--target", target, "nearest", "--model", "planted", "king", "--topn", "3")
    assert code == 0 and len(out.splitlines()) == 3  # the spelling of 0.2, still accepted for one release
    assert "--topn is deprecated" in err and "use --top-n" in err
    code, out, _ = run(
        capsys, "--target", target, "embed", "--model", "planted", "--word", "king", "--word", "queen", "--json"
    )
    payload = json.loads(out)
    assert len(payload["vectors"]) == 2 and len(payload["vectors"][0]) == 32
    assert payload["space"].startswith("model:planted@")
    code, out, _ = run(capsys, "--target", target, "similarity", "--model", "planted", "king", "queen")
    assert -1 <= float(out) <= 1
    code, out, _ = run(
        capsys, "--target", target, "doesnt-match", "--model", "minilm-static", "breakfast", "cereal", "dinner", "lunch"
    )
    assert out.strip() == "cereal"


def test_evaluate_analogies_json(capsys, target, minilm):
    code, out, _ = run(
        capsys, "--target", target, "evaluate-analogies", "--model", "minilm-static", str(QUESTIONS_WORDS), "--json"
    )
    assert code == 0
    payload = json.loads(out)
    score, _ = minilm.kv.evaluate_word_analogies(str(QUESTIONS_WORDS))
    assert payload["total"]["accuracy"] == pytest.approx(score)
    assert set(payload["total"]) == {"correct", "incorrect", "accuracy"}
    assert len(payload["sections"]) == 14


def test_errors_print_one_line_and_exit_non_zero(capsys, target, tmp_path):
    code, out, err = run(capsys, "--target", target, "arith", "--model", "minilm-static", "king - zzqxv")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "OUT_OF_VOCABULARY" in err and "zzqxv" in err
    code, _, err = run(capsys, "--target", target, "evaluate-analogies", "--model", "planted", str(tmp_path / "no.txt"))
    assert code == 1 and err.startswith("error: cannot read") and err.count("\n") == 1
    code, _, err = run(capsys, "--target", "127.0.0.1:1", "models")
    assert code == 1 and err.startswith("error: cannot reach embedsvc at 127.0.0.1:1")


@pytest.mark.parametrize(
    ("argv", "usage", "suggestion"),
    [
        (["arith", "--model", "m", "x", "--topm", "3"], "usage: embedsvc arith ", "--topm (did you mean --top-n?)"),
        (["collections", "create", "c", "--metrc", "l2"], "usage: embedsvc collections create ", "--metric?"),
        (["search", "c", "--word", "w", "--fliter", "a = 1"], "usage: embedsvc search ", "did you mean --filter?"),
        (["arth", "--model", "m", "x"], "usage: embedsvc [-h]", "invalid choice: 'arth' (did you mean 'arith'?)"),
        (["collections", "lst"], "usage: embedsvc collections ", "(did you mean 'list'?)"),
        (["arith", "--model", "m", "x", "--method", "cosmull"], "usage: embedsvc arith ", "did you mean 'cosmul'?"),
    ],
)
def test_a_mistyped_flag_shows_the_commands_usage_and_the_closest_flag(capsys, argv, usage, suggestion):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.startswith(usage) and suggestion in err, err


def test_one_vocabulary_and_its_old_spellings(capsys, target, tmp_path):
    """A flag is the API field it sets: --top-n is top_n (hits), so the map's first-N-words source is --first-words;
    the old spellings work for one release with a note on stderr, and are not in the help."""
    code, out, err = run(
        capsys, "arith", "--model", "planted", "king - man + woman", "--top-n", "2", "--target", target
    )
    assert code == 0 and len(out.splitlines()) == 2 and err == ""  # connection options after the command, too
    code, out, err = run(capsys, "--target", target, "cluster", "--model", "planted", "--top-n", "40", "-k", "2")
    assert code == 0 and out.startswith("k = 2") and "--top-n is deprecated" in err and "use --first-words" in err
    png = tmp_path / "map.png"
    code, _, err = run(
        capsys,
        "--target",
        target,
        "map",
        "--model",
        "planted",
        "--first-words",
        "40",
        "--color-by",
        "cluster",
        "--clusters",
        "3",
        "--out",
        str(png),
    )
    assert code == 0 and png.stat().st_size > 0 and "--clusters is deprecated" in err and "use -k" in err
    for command in ("arith", "nearest", "map", "cluster"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        shown = capsys.readouterr().out
        assert "--topn" not in shown and ("--top-n" in shown) == (command in ("arith", "nearest")), command


def test_errors_say_what_to_do_next_in_cli_words(capsys, target, client):
    """The server sends a hint's id (ErrorInfo metadata "hint"); the CLI words it for a CLI user."""
    code, _, err = run(capsys, "--target", target, "embed", "--model", "minilm", "--word", "cat")
    assert code == 1 and err.startswith("error: INVALID_ARGUMENT MODEL_KIND_MISMATCH:") and "use --text" in err
    code, _, err = run(capsys, "--target", target, "embed", "--model", "minilm-static", "--word", "Cat")
    assert code == 1 and "OUT_OF_VOCABULARY" in err and "lower-case" in err and "'cat'" in err
    client.create_collection("cli-hints", dimension=2)
    try:
        client.upsert("cli-hints", ["a", "b"], np.ones((2, 2), np.float32), [{"genre": "rock"}] * 2)
        code, _, err = run(capsys, "--target", target, "search", "cli-hints", "--item", "a", "--filter", "genre = rock")
        assert code == 1 and "INVALID_FILTER" in err and """--filter 'genre = "rock"'""" in err, err
        code, out, _ = run(
            capsys, "--target", target, "search", "cli-hints", "--item", "a", "--filter", 'genre == "rock"'
        )
        assert code == 0 and out.split()[0] == "b"  # == is =
    finally:
        client.delete_collection("cli-hints")


def shutting_down(target: str) -> bool:
    """Whether the server at `target` has begun its graceful shutdown: health says NOT_SERVING, or new calls are
    refused."""
    with Client(target, timeout=5) as probe:
        try:
            return probe.health() != "SERVING"
        except EmbedsvcClientError:
            return True


def test_serve_with_config_then_sigterm_lets_calls_finish(data_dir, tmp_path, minilm):
    """SIGTERM lets a call in flight finish: an EmbedTextsStream whose first batch was answered goes on being served
    after the server began shutting down, ends OK, and then the server exits 0. (The call stays open until the test
    closes it, so nothing here depends on how long any call takes; the grace period only bounds a hang.)"""
    config = tmp_path / "embedsvc.toml"
    config.write_text(
        f'[server]\ngrace_period_s = 120\n\n[[models]]\nname = "glove"\nkind = "word-vectors"\n'
        f'path = "{GENSIM_DATA / "test_glove.txt"}"\nformat = "glove"\n'
    )
    proc, target = serve_process.start("--config", str(config), "--data-dir", str(data_dir))
    try:
        with Client(target) as c:
            c.wait_until_serving(120)
            assert [m.name for m in c.list_models()] == [
                "minilm-static",
                "minilm",
                "mnist-vae",
                "mnist-gan",
                "mnist-ae",
                "glove",
            ]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "embedsvc",
                "--target",
                target,
                "arith",
                "--model",
                "minilm-static",
                "king - man + woman",
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert json.loads(out)["hits"][0]["word"] == "queen"
        batches: queue.Queue[list[str] | None] = queue.Queue()

        def requests():
            while (texts := batches.get(timeout=120)) is not None:
                yield text_pb2.EmbedTextsStreamRequest(batch=text_pb2.EmbedTextsRequest(model="minilm", texts=texts))

        with grpc.insecure_channel(target) as channel:
            responses = text_pb2_grpc.TextServiceStub(channel).EmbedTextsStream(requests(), timeout=120)
            batches.put(["a call in flight"])
            assert len(next(responses).batch.vectors) == 1  # the server is serving the call
            proc.send_signal(signal.SIGTERM)
            wait_for(lambda: shutting_down(target), what="the server to begin its shutdown after SIGTERM")
            batches.put(["goes on after SIGTERM", "and finishes"])
            assert len(next(responses).batch.vectors) == 2
            batches.put(None)
            assert list(responses) == []  # the call ended OK (a failed one raises here)
            assert responses.code() == grpc.StatusCode.OK
        assert proc.wait(60) == 0
    finally:
        proc.kill()


def test_serve_fails_fast_with_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.vec"
    bad.write_text("2 3\nking 1 2 3\nqueen 1 2\n")
    config = tmp_path / "c.toml"
    config.write_text(
        "[server]\nembedded_models = false\nexit_on_model_error = true\n\n"
        f'[[models]]\nname = "w"\npath = "{bad}"\nformat = "word2vec-text"\n'
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedsvc",
            "serve",
            "--port",
            "0",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: model 'w': cannot read {bad} as word2vec-text: ")


def test_serve_rejects_a_bad_config(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[[models]]\nname = "g"\npath = "/x"\nformat = "gensim"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "embedsvc", "serve", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1 and "allow_pickle" in proc.stderr and proc.stderr.count("\n") == 1


def test_collections_commands(capsys, target, tmp_path):
    import numpy as np

    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "q.npy", x[5])
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"even": i % 2 == 0}) + "\n" for i in range(300)))
    code, out, _ = run(
        capsys,
        "--target",
        target,
        "collections",
        "create",
        "cli",
        "--dim",
        "8",
        "--metric",
        "l2",
        "--index",
        "ivf-flat",
        "--nlist",
        "4",
    )
    assert code == 0 and out.startswith("cli ")
    code, out, err = run(
        capsys,
        "--target",
        target,
        "upsert",
        "cli",
        "--vectors",
        str(tmp_path / "x.npy"),
        "--metadata",
        str(tmp_path / "m.jsonl"),
        "--batch-size",
        "100",
    )
    assert code == 0 and "upserted 300 items in 3 batches" in out
    code, out, _ = run(
        capsys,
        "--target",
        target,
        "search",
        "cli",
        "--vector-file",
        str(tmp_path / "q.npy"),
        "-k",
        "3",
        "--filter",
        "even = false",
        "--json",
    )
    hits = json.loads(out)["hits"]
    assert hits[0] == {"id": "5", "score": 0.0, "metadata": {"even": False}, "input": ""} and len(hits) == 3

    def info() -> dict:
        code, out, _ = run(capsys, "--target", target, "--json", "collections", "info", "cli")
        assert code == 0
        return json.loads(out)

    # 300 vectors are enough to train nlist 4 (39 x 4): training runs in the background, so wait for it.
    assert wait_for(lambda: (i := info())["trained"] and i, what="the IVF index trained")["count"] == "300"
    code, out, _ = run(capsys, "--target", target, "collections", "create", "w", "--model", "planted")
    words = ["king", "queen", "man", "woman"]
    Client(target).upsert("w", words, inputs=words)
    code, out, _ = run(capsys, "--target", target, "--json", "search", "w", "--expr", "king - man + woman", "-k", "1")
    assert json.loads(out)["hits"][0]["id"] == "queen"
    code, out, _ = run(capsys, "--target", target, "--json", "search", "w", "--word", "king", "-k", "1")
    assert json.loads(out)["hits"][0]["id"] != "king"
    code, _, err = run(capsys, "--target", target, "search", "cli", "--item", "nope")
    assert code == 1 and "ITEM_NOT_FOUND" in err
    for name in ("cli", "w"):
        assert run(capsys, "--target", target, "collections", "delete", name)[0] == 0


def test_semantic_search_walkthrough(capsys, target, tmp_path):
    """The README's walkthrough: index gensim's Lee corpus (one document a line), search it by text."""
    corpus = GENSIM_DATA / "lee_background.cor"
    code, out, _ = run(capsys, "--target", target, "collections", "create", "lee-docs", "--model", "minilm")
    assert code == 0 and "dim 384" in out and "model minilm" in out
    try:
        # One stream is one call: the default --timeout (120 s) bounds the whole upload, which a busy 2-core machine
        # can take longer than to embed 300 documents (seen at load 26: DEADLINE_EXCEEDED after 2 of 10 batches).
        code, out, err = run(
            capsys, "--target", target, "--timeout", "600", "index-texts", "lee-docs", str(corpus), "--json"
        )
        documents = [line for line in corpus.read_text(encoding="latin-1").splitlines() if line.strip()]
        assert code == 0, err
        assert json.loads(out)["count"] == len(documents) == 300
        code, out, _ = run(
            capsys, "--target", target, "search", "lee-docs", "--text", "bushfires near Sydney", "-k", "5", "--json"
        )
        hits = json.loads(out)["hits"]
        assert code == 0 and len(hits) == 5
        assert all("fire" in h["input"].lower() for h in hits[:3])
        assert hits[0]["score"] >= hits[-1]["score"]
        args = ("--target", target, "search", "lee-docs", "--text", "bushfires near Sydney", "-k", "3")
        code, out, _ = run(capsys, *args, "--mode", "hybrid", "--explain")
        lines = out.splitlines()
        assert code == 0 and len(lines) == 4 and "dense #" in out and "keyword #" in out
        assert lines[-1] == "# hybrid (weighted, dense weight 0.5, 200 candidates a side), keywords in english"
        code, out, _ = run(capsys, *args, "--mode", "keyword", "--json")
        answer = json.loads(out)
        assert answer["retrieval"]["mode"] == "keyword" and answer["hits"][0]["explanation"]["keyword_rank"] == 1
        code, out, _ = run(capsys, *args, "--mode", "keyword", "--keyword-text", "the of")
        assert code == 0 and out.strip() == "# keyword, keywords in english; notice: keyword query empty"
        code, out, _ = run(capsys, *args, "--group-by", "nothing", "--group-size", "2", "--json")
        assert [len(g["hits"]) for g in json.loads(out)["groups"]] == [1, 1, 1]  # no item has the field
    finally:
        run(capsys, "--target", target, "collections", "delete", "lee-docs")


def test_index_texts_jsonl_and_embed_text(capsys, target, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        json.dumps({"id": "a", "text": "The cat sat on the mat.", "metadata": {"animal": True}})
        + "\n"
        + json.dumps({"id": "b", "text": "Stock markets fell sharply today.", "metadata": {"animal": False}})
        + "\n"
    )
    run(capsys, "--target", target, "collections", "create", "jl", "--model", "minilm")
    try:
        code, out, _ = run(capsys, "--target", target, "index-texts", "jl", str(docs))
        assert code == 0 and "indexed 2 documents" in out
        code, out, _ = run(
            capsys, "--target", target, "search", "jl", "--text", "a kitten", "-k", "1", "--filter", "animal = true"
        )
        assert out.startswith("a ")
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"id": 1}\n')
        code, _, err = run(capsys, "--target", target, "index-texts", "jl", str(bad))
        assert code == 1 and 'expected an object with a "text"' in err
    finally:
        run(capsys, "--target", target, "collections", "delete", "jl")
    code, out, _ = run(
        capsys, "--target", target, "embed", "--model", "minilm", "--text", "hello world", "--text", "hi", "--json"
    )
    payload = json.loads(out)
    assert code == 0 and len(payload["vectors"]) == 2 and len(payload["vectors"][0]) == 384
    assert payload["truncated"] == [] and payload["provenance"]["model"] == "minilm"


def test_embed_shapes_and_tokenize(capsys, target):
    """embed's --dtype, --dimensions and --long-texts refuse reach EmbedTexts (the same vectors as the client's), and
    tokenize prints the model's tokens with their offsets."""
    texts = ["hello world", "a longer sentence about cats"]
    flags = [arg for t in texts for arg in ("--text", t)]
    code, out, _ = run(capsys, "--target", target, "embed", "--model", "minilm", *flags, "--dtype", "ubinary", "--json")
    payload = json.loads(out)
    with Client(target) as client:
        want = client.embed_texts("minilm", texts, dtype="ubinary")
    assert code == 0 and payload["dtype"] == "ubinary" and payload["dimension"] == 384
    assert payload["vectors"] == want.vectors.tolist() and payload["space"].endswith("/ubinary")
    code, _, err = run(capsys, "--target", target, "embed", "--model", "minilm", *flags, "--dimensions", "128")
    assert code == 1 and "DIMENSIONS_NOT_SUPPORTED" in err
    long_text = " ".join(["word"] * 400)
    code, _, err = run(
        capsys, "--target", target, "embed", "--model", "minilm", "--text", long_text, "--long-texts", "refuse"
    )
    assert code == 1 and "LIMIT_EXCEEDED" in err
    code, out, _ = run(capsys, "--target", target, "tokenize", "--model", "minilm", "Hello, world!", "--json")
    (tokens,) = json.loads(out)["tokens"]
    assert code == 0 and [t["token"] for t in tokens] == ["[CLS]", "hello", ",", "world", "!", "[SEP]"]
    assert [(t["start"], t["end"]) for t in tokens[1:-1]] == [(0, 5), (5, 6), (7, 12), (12, 13)]
    code, out, _ = run(capsys, "--target", target, "tokenize", "--model", "minilm", "Hello", "--no-special")
    assert code == 0 and "1 tokens: hello(" in out
