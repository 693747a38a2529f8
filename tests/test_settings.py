import hashlib
import tomllib
from pathlib import Path

import pytest

from embedsvc.backends.text_encoders import TextEncoderFormat, Weighting
from embedsvc.backends.word_vectors import WordVectorFormat
from embedsvc.settings import ConfigError, Role, Settings, key_hash


def test_defaults_serve_the_embedded_model():
    settings = Settings.from_config({})
    assert [m.name for m in settings.all_models()] == ["minilm-static", "minilm", "mnist-vae", "mnist-gan", "mnist-ae"]
    assert Settings(embedded_models=False).all_models() == ()


def test_toml_example_from_the_readme():
    config = tomllib.loads(
        """
        [server]
        port = 6000
        reflection = false

        [limits]
        max_top_n = 50

        [[models]]
        name = "glove"
        kind = "word-vectors"
        path = "/data/glove.6B.300d.txt"
        format = "glove"
        """
    )
    settings = Settings.from_config(config, data_dir="/tmp/x")
    assert settings.port == 6000 and settings.reflection is False
    assert settings.limits.max_top_n == 50
    assert settings.data_dir == Path("/tmp/x")
    (glove,) = settings.models
    assert glove.format is WordVectorFormat.GLOVE and glove.path == Path("/data/glove.6B.300d.txt")
    assert [m.name for m in settings.all_models()] == [
        "minilm-static",
        "minilm",
        "mnist-vae",
        "mnist-gan",
        "mnist-ae",
        "glove",
    ]


def test_flags_override_the_file():
    settings = Settings.from_config({"server": {"port": 1}}, port=2, host=None)
    assert settings.port == 2 and settings.host == "127.0.0.1"


def test_http_settings_from_the_file_and_flags():
    config = {"server": {"http_port": 8080, "http_host": "0.0.0.0", "http_cors_origins": ["https://a.example"]}}
    settings = Settings.from_config(config)
    assert (settings.http_port, settings.http_host) == (8080, "0.0.0.0")
    assert settings.http_cors_origins == ("https://a.example",)
    assert Settings.from_config(config, http_port=0).http_port == 0
    assert Settings.from_config({}).http_port is None  # off by default


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sever": {}}, "unknown top-level"),
        ({"server": {"prot": 1}}, "server.prot: unknown key"),
        ({"server": {"port": "80"}}, "server.port: must be of type int"),
        ({"server": {"port": 70000}}, "not a TCP port"),
        ({"server": {"http_port": -1}}, "server.http_port: must be a TCP port"),
        ({"server": {"http_cors_origins": "https://a.example"}}, "server.http_cors_origins: must be a list"),
        ({"server": {"device": "tpu"}}, "server.device"),
        ({"limits": {"max_top_n": 0}}, "limits.max_top_n: must be a positive integer"),
        ({"models": [{"name": "a", "path": "/x"}]}, "format: must be one of"),
        ({"models": [{"name": "a b", "format": "glove", "path": "/x"}]}, "models[0].name"),
        ({"models": [{"name": "a", "format": "glove"}]}, "path: a file path is required"),
        ({"models": [{"name": "a", "format": "gensim", "path": "/x"}]}, "allow_pickle = true"),
        ({"models": [{"name": "a", "format": "model2vec", "path": "/x"}]}, "reserved"),
        ({"models": [{"name": "a", "kind": "sound", "format": "glove", "path": "/x"}]}, "kind: must be one of"),
        ({"models": [{"name": "a", "kind": "vae", "format": "glove", "path": "/x"}]}, "format: must be one of"),
        ({"models": [{"name": "a", "kind": "vae"}]}, "path: a checkpoint folder"),
        (
            {"models": [{"name": "a", "kind": "image-encoder", "format": "torchvision", "path": "/w.safetensors"}]},
            "architecture: a torchvision model name",
        ),
        (
            {
                "models": [
                    {"name": "a", "kind": "image-encoder", "format": "torchscript", "path": "/m.pt", "channels": 2}
                ]
            },
            "channels: must be 1 or 3",
        ),
        (
            {
                "models": [
                    {"name": "a", "kind": "image-encoder", "format": "torchscript", "path": "/m.pt", "std": [1, 0, 1]}
                ]
            },
            "std: must be positive",
        ),
        (
            {"models": [{"name": "a", "kind": "vae", "path": "/m", "architecture": "resnet18"}]},
            "unknown key(s) for a vae model: architecture",
        ),
        ({"models": [{"name": "a", "format": "glove", "path": "/x", "colour": 1}]}, "unknown key(s) for a word"),
        ({"models": [{"name": "t", "kind": "text-encoder", "format": "bert"}]}, "format: must be one of"),
        ({"models": [{"name": "t", "kind": "text-encoder", "format": "sentence-transformers"}]}, "model directory"),
        ({"models": [{"name": "t", "kind": "text-encoder", "format": "averaged-words"}]}, "t).words"),
        (
            {"models": [{"name": "t", "kind": "text-encoder", "format": "averaged-words", "words": "nope"}]},
            "not a word-vectors model",
        ),
        (
            {"models": [{"name": "t", "kind": "text-encoder", "format": "averaged-words", "words": "minilm"}]},
            "not a word-vectors model",
        ),
        (
            {"models": [{"name": "t", "kind": "text-encoder", "format": "model2vec-static", "path": "/m", "fp16": 1}]},
            "fp16: must be true or false",
        ),
        (
            {
                "models": [
                    {
                        "name": "t",
                        "kind": "text-encoder",
                        "format": "model2vec-static",
                        "path": "/m",
                        "max_batch_size": 0,
                    }
                ]
            },
            "max_batch_size",
        ),
        (
            {
                "models": [
                    {"name": "t", "kind": "text-encoder", "format": "model2vec-static", "path": "/m", "device": "gpu"}
                ]
            },
            "device",
        ),
        (
            {
                "models": [
                    {
                        "name": "t",
                        "kind": "text-encoder",
                        "format": "model2vec-static",
                        "path": "/m",
                        "allow_pickle": True,
                    }
                ]
            },
            "unknown key(s) for a text-encoder model: allow_pickle",
        ),
        ({"models": [{"name": "a", "format": "glove", "path": "/x"}] * 2}, "duplicate name(s): a"),
    ],
)
def test_bad_config_names_the_key(config, message):
    with pytest.raises(ConfigError) as info:
        Settings.from_config(config)
    assert message in str(info.value)


def test_a_configured_model_can_replace_the_embedded_one():
    config = {"models": [{"name": "minilm-static", "format": "glove", "path": "/x"}]}
    embedded_text, embedded_vae, embedded_gan, embedded_ae, replaced = Settings.from_config(config).all_models()
    assert embedded_text.name == "minilm" and embedded_vae.name == "mnist-vae"
    assert (embedded_gan.name, embedded_ae.name) == ("mnist-gan", "mnist-ae")
    assert replaced.format is WordVectorFormat.GLOVE


def test_text_encoders_from_toml():
    config = tomllib.loads(
        """
        [server]
        device = "cpu"

        [[models]]
        name = "glove"
        path = "/data/glove.txt"
        format = "glove"

        [[models]]
        name = "glove-sif"
        kind = "text-encoder"
        format = "averaged-words"
        words = "glove"
        weighting = "sif"

        [[models]]
        name = "mpnet"
        kind = "text-encoder"
        format = "sentence-transformers"
        path = "/models/all-mpnet-base-v2"
        device = "auto"
        fp16 = true
        max_batch_size = 32
        max_wait_ms = 2
        """
    )
    settings = Settings.from_config(config)
    _glove, sif, mpnet = settings.models
    sif_options, mpnet_options = sif.options, mpnet.options
    assert (sif.format, sif_options.words, sif_options.weighting) == (
        TextEncoderFormat.AVERAGED_WORDS,
        "glove",
        Weighting.SIF,
    )
    assert (mpnet.kind, mpnet_options.fp16, mpnet_options.max_batch_size, mpnet_options.max_wait_ms) == (
        "text-encoder",
        True,
        32,
        2.0,
    )
    assert mpnet_options.batching and mpnet.path == Path("/models/all-mpnet-base-v2")


def test_image_models_from_toml():
    config = tomllib.loads(
        """
        [[models]]
        name = "faces"
        kind = "vae"
        path = "/models/faces-vae"
        device = "cpu"

        [[models]]
        name = "resnet"
        kind = "image-encoder"
        format = "torchvision"
        architecture = "resnet18"
        path = "/models/resnet18.safetensors"

        [[models]]
        name = "grey"
        kind = "image-encoder"
        format = "torchscript"
        path = "/models/grey.pt"
        image_size = 64
        channels = 1
        mean = [0.5]
        std = [0.25]
        """
    )
    faces, resnet, grey = (m.options for m in Settings.from_config(config).models)
    assert faces.kind == "vae" and faces.path == Path("/models/faces-vae") and faces.device == "cpu"
    assert resnet.architecture == "resnet18" and resnet.image_size == 224 and resnet.mean == (0.485, 0.456, 0.406)
    assert (grey.channels, grey.image_size, grey.mean, grey.std) == (1, 64, (0.5,), (0.25,))


def test_openai_aliases_tei_model_and_matryoshka_keys_from_toml():
    config = tomllib.loads(
        """
        [server]
        tei_model = "mpnet"
        openai_model_aliases = { "text-embedding-3-small" = "mpnet", "text-embedding-ada-002" = "minilm" }

        [[models]]
        name = "mpnet"
        kind = "text-encoder"
        format = "sentence-transformers"
        path = "/models/mpnet-matryoshka"
        matryoshka_dims = [128, 768, 256]
        allow_any_dimensions = true
        """
    )
    settings = Settings.from_config(config)
    assert settings.tei_model == "mpnet" and Settings().tei_model == "minilm"
    assert dict(settings.openai_model_aliases) == {
        "text-embedding-3-small": "mpnet",
        "text-embedding-ada-002": "minilm",
    }
    (mpnet,) = settings.models
    assert mpnet.options.matryoshka_dims == (768, 256, 128) and mpnet.options.allow_any_dimensions
    assert (
        Settings.from_config({"models": [{**config["models"][0], "matryoshka_dims": []}]})
        .models[0]
        .options.matryoshka_dims
        == ()
    )
    assert Settings().all_models()[1].options.matryoshka_dims is None  # read from the model's directory


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"server": {"openai_model_aliases": ["a"]}}, "server.openai_model_aliases: must be a table"),
        ({"server": {"openai_model_aliases": {"a": 1}}}, "server.openai_model_aliases: must be a table"),
        ({"server": {"openai_model_aliases": {"minilm": "minilm-static"}}}, "minilm would hide the model"),
        (
            {
                "models": [
                    {
                        "name": "t",
                        "kind": "text-encoder",
                        "format": "model2vec-static",
                        "path": "/m",
                        "matryoshka_dims": [0],
                    }
                ]
            },
            "matryoshka_dims: a list of positive integers",
        ),
        (
            {
                "models": [
                    {
                        "name": "t",
                        "kind": "text-encoder",
                        "format": "model2vec-static",
                        "path": "/m",
                        "allow_any_dimensions": "yes",
                    }
                ]
            },
            "allow_any_dimensions",
        ),
    ],
)
def test_bad_dialect_and_dimension_keys_name_the_key(config, message):
    with pytest.raises(ConfigError) as info:
        Settings.from_config(config)
    assert message in str(info.value)


# ---- Settings.load: the file, then the environment, then flags ---------------------------------------------------


def write_config(tmp_path: Path, text: str, name: str = "embedsvc.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_reads_the_file_then_the_environment_then_flags(tmp_path):
    server = '[server]\nport = 6000\nhost = "127.0.0.1"\ndata_dir = "/from/file"\n'
    config = write_config(tmp_path, server + 'page_token_secret = "file-secret-16chars"\n')
    env = {"EMBEDSVC_DATA_DIR": "/from/env", "EMBEDSVC_PAGE_TOKEN_KEY": "env-secret-16-chars"}
    from_file = Settings.load(config, {})
    assert (from_file.port, from_file.data_dir, from_file.page_token_secret) == (
        6000,
        Path("/from/file"),
        "file-secret-16chars",
    )
    from_env = Settings.load(config, env)
    assert (from_env.port, from_env.data_dir, from_env.page_token_secret) == (
        6000,
        Path("/from/env"),
        "env-secret-16-chars",
    )
    flagged = Settings.load(config, env, port=7000, data_dir=tmp_path / "flag", host=None, insecure=None)
    assert (flagged.port, flagged.data_dir, flagged.host) == (7000, tmp_path / "flag", "127.0.0.1")
    assert flagged.insecure is False  # None: the flag was not given


def test_load_without_a_file_uses_embedsvc_config_or_nothing(tmp_path):
    config = write_config(tmp_path, "[server]\nport = 6001\n")
    assert Settings.load(None, {"EMBEDSVC_CONFIG": str(config), "XDG_DATA_HOME": str(tmp_path)}).port == 6001
    other = write_config(tmp_path, "[server]\nport = 6002\n", "other.toml")
    assert Settings.load(other, {"EMBEDSVC_CONFIG": str(config)}).port == 6002  # --config wins
    assert Settings.load(None, {"XDG_DATA_HOME": str(tmp_path)}).port == 50051  # no file: the defaults


def test_load_reads_only_the_environment_it_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDSVC_DATA_DIR", "/from/the/process")
    monkeypatch.setenv("EMBEDSVC_ADMIN_KEY", "esk_from-the-process")
    settings = Settings.load(None, {"XDG_DATA_HOME": str(tmp_path)})
    assert settings.data_dir == tmp_path / "embedsvc" and not settings.auth.enabled
    assert Settings.load().data_dir == Path("/from/the/process")  # the default is os.environ


def test_the_data_directory_defaults_to_xdg_data_home_then_home(tmp_path):
    assert Settings.load(None, {"XDG_DATA_HOME": "/xdg", "HOME": "/home/u"}).data_dir == Path("/xdg/embedsvc")
    assert Settings.load(None, {"HOME": "/home/u"}).data_dir == Path("/home/u/.local/share/embedsvc")
    assert Settings.load(None, {"HOME": "/home/u", "EMBEDSVC_DATA_DIR": ""}).data_dir == Path(
        "/home/u/.local/share/embedsvc"
    )  # empty: unset
    in_file = write_config(tmp_path, '[server]\ndata_dir = "~/state"\n')
    assert Settings.load(in_file, {"XDG_DATA_HOME": "/xdg"}).data_dir == Path("~/state").expanduser()


def test_the_bootstrap_admin_key_joins_the_configured_keys_hashed(tmp_path):
    config = write_config(tmp_path, f'[[auth.keys]]\nname = "reader"\nrole = "read"\nsha256 = "{"c" * 64}"\n')
    env = {"EMBEDSVC_ADMIN_KEY": "esk_bootstrap", "HOME": str(tmp_path)}
    settings = Settings.load(config, env)
    assert settings.auth.enabled  # the file left auth off: the key turns it on
    reader, admin = settings.auth.keys
    assert reader.name == "reader" and admin.name == "admin (EMBEDSVC_ADMIN_KEY)" and admin.role is Role.ADMIN
    assert admin.sha256 == key_hash("esk_bootstrap") == hashlib.sha256(b"esk_bootstrap").hexdigest()
    assert "esk_bootstrap" not in repr(settings)  # only the hash is kept
    assert not Settings.load(config, {"EMBEDSVC_ADMIN_KEY": "", "HOME": str(tmp_path)}).auth.enabled
    # The key is what lets a server listen beyond loopback.
    with pytest.raises(ConfigError, match=r"server\.host: 0\.0\.0\.0"):
        Settings.load(None, {"HOME": str(tmp_path)}, host="0.0.0.0")
    assert Settings.load(None, env, host="0.0.0.0").auth.enabled


def test_the_milvus_token_from_the_environment_wins_over_the_file(tmp_path):
    config = write_config(tmp_path, '[storage.milvus]\nuri = "lite.db"\ntoken = "file:token"\n')
    env = {"HOME": str(tmp_path)}
    assert Settings.load(config, env).storage.milvus.token == "file:token"
    settings = Settings.load(config, {**env, "EMBEDSVC_MILVUS_TOKEN": "env:token"})
    assert settings.storage.milvus.token == "env:token" and settings.storage_options().milvus.token == "env:token"
    assert Settings.load(None, {**env, "EMBEDSVC_MILVUS_TOKEN": "env:token"}).storage.milvus is None  # no Milvus


@pytest.mark.parametrize(
    ("text", "env", "flags", "message"),
    [
        (None, {"EMBEDSVC_CONFIG": "/no/such/embedsvc.toml"}, {}, "cannot read /no/such/embedsvc.toml"),
        ("[server\n", {}, {}, "is not valid TOML"),
        ("[server]\nport = 70000\n", {}, {}, "server.port: 70000 is not a TCP port"),
        ("[limits]\nmax_k = -1\n", {}, {}, "limits.max_k: must be a positive integer"),
        (None, {"EMBEDSVC_PAGE_TOKEN_KEY": "short"}, {}, "EMBEDSVC_PAGE_TOKEN_KEY"),
        (None, {}, {"metrics_port": 70000}, "--metrics-port: must be a TCP port"),
        (None, {}, {"http_port": -1}, "--http-port: must be a TCP port"),
        (None, {}, {"log_format": "xml"}, "server.log_format: must be text or json"),
    ],
)
def test_load_errors_name_the_file_key_variable_or_flag(tmp_path, text, env, flags, message):
    path = write_config(tmp_path, text) if text is not None else None
    with pytest.raises(ConfigError) as info:
        Settings.load(path, {"HOME": str(tmp_path), **env}, **flags)
    assert message in str(info.value)


def test_the_gil_switch_interval_is_read_checked_and_set_by_serve():
    """`embedsvc serve` sets its process's switch interval from the setting (an in-process server leaves it alone)."""
    import sys

    from embedsvc.cli.serve import apply_to_process

    assert Settings().gil_switch_interval_ms == 0.5
    chosen = Settings.from_config({"server": {"gil_switch_interval_ms": 2}})
    assert chosen.gil_switch_interval_ms == 2
    for bad in (0, -1, 0.001, 1001, float("nan")):
        with pytest.raises(ConfigError, match=r"server\.gil_switch_interval_ms: 0\.01\.\.1000"):
            Settings.from_config({"server": {"gil_switch_interval_ms": bad}})
    before = sys.getswitchinterval()
    try:
        apply_to_process(chosen)
        assert sys.getswitchinterval() == pytest.approx(0.002)
        apply_to_process(Settings())
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    finally:
        sys.setswitchinterval(before)
