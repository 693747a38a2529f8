"""The one frozen Settings object: server options and the models to host; and `Settings.load`, the one reader of the
server's configuration (a TOML file, the environment, flags).

Nothing else reads the server's configuration or its environment: `embedsvc serve` passes its flags to
`Settings.load`, tests build Settings directly (or with `Settings.from_config`). Every option is documented here and in
the README's configuration section; request limits live in `embedsvc.limits` (the `[limits]` table).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from embedsvc.backends import kinds
from embedsvc.backends.base import ModelSpec
from embedsvc.backends.devices import is_device
from embedsvc.errors import ConfigError
from embedsvc.index.milvus.client import MilvusOptions
from embedsvc.index.stores import StorageOptions
from embedsvc.index.types import Backend
from embedsvc.limits import Limits

__all__ = [
    "ApiKey",
    "AuthSettings",
    "ConfigError",
    "MilvusSettings",
    "ModelSpec",
    "Role",
    "Settings",
    "StorageSettings",
    "TlsSettings",
    "default_data_dir",
    "key_hash",
]


class Role(StrEnum):
    """What an API key may do: read < write < admin (each includes the ones before it)."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


def key_hash(key: str) -> str:
    """How a key is configured and kept: the hex sha256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """One API key, configured as the hex sha256 of the key (the key itself is never configured or stored)."""

    name: str
    role: Role
    sha256: str
    # Globs of the collections (and aliases) the key may touch; empty: all.
    collections: tuple[str, ...] = ()
    # Requests per second this key may make (a token bucket holding `burst` requests; 0: no limit), and calls it
    # may have running at once (0: no limit). Over either: RESOURCE_EXHAUSTED / RATE_LIMITED.
    rate: float = 0.0
    burst: int = 0
    max_concurrent: int = 0


@dataclass(frozen=True)
class MilvusSettings:
    """[storage.milvus]: where Milvus is."""

    # A local file path: Milvus Lite (relative paths are relative to the data directory); http(s)://host:19530: a
    # Milvus server or cluster.
    uri: str
    # "user:password" or an API key (EMBEDSVC_MILVUS_TOKEN in the environment wins); empty: none.
    token: str = ""
    db_name: str = ""
    # Strong: a write is visible to the next search (as with the FAISS backend). Bounded, Session, Eventually trade
    # that for speed.
    consistency: str = "Strong"
    # Seconds a Milvus call may take (less when the caller's deadline is nearer), and retries of idempotent calls
    # when Milvus is unreachable.
    timeout_s: float = 30.0
    retries: int = 3

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri


@dataclass(frozen=True)
class StorageSettings:
    """[storage]: the default collection backend and the backends' settings."""

    backend: str = "faiss"  # faiss | milvus: where CreateCollection puts a collection that names no backend
    milvus: MilvusSettings | None = None
    # Where snapshots' files are kept (a relative path is relative to the data directory); empty:
    # <data_dir>/snapshot-files. Replicas sharing collections on Milvus share this directory (a network file system).
    snapshot_dir: str = ""


@dataclass(frozen=True)
class AuthSettings:
    """[auth]: API keys with roles, and the audit log."""

    enabled: bool = False
    keys: tuple[ApiKey, ...] = ()
    # A TOML file of more [[keys]] (mounted secrets), read at start.
    keys_file: Path | None = None
    # Also audit reads (every write and admin action is audited).
    audit_reads: bool = False
    # The audit log is rotated past this size; this many rotated files are kept.
    audit_max_bytes: int = 64 * 1024 * 1024
    audit_files: int = 5


@dataclass(frozen=True)
class TlsSettings:
    """[server.tls]: the server's certificate chain and key (PEM), and for mutual TLS the CA whose certificates
    clients must present. The files are read again when they change (or on SIGHUP), without dropping the server."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


# Addresses that only this machine can reach: serving them without keys is allowed.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
# The key EMBEDSVC_ADMIN_KEY adds (its name shows in logs, metrics and the audit log).
BOOTSTRAP_KEY_NAME = "admin (EMBEDSVC_ADMIN_KEY)"


def default_data_dir(env: Mapping[str, str] = os.environ) -> Path:
    """$XDG_DATA_HOME/embedsvc, or ~/.local/share/embedsvc: the server's data directory when nothing names one."""
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return Path(env.get("XDG_DATA_HOME") or str(home / ".local" / "share")) / "embedsvc"


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to start. Frozen: a running server never changes its settings."""

    host: str = "127.0.0.1"
    # 0 picks a free port (tests do this).
    port: int = 50051
    # Caches and durable state. The CLI defaults it to $XDG_DATA_HOME/embedsvc (~/.local/share/embedsvc).
    data_dir: Path = Path("embedsvc-data")
    # Also serve the embedded default models (minilm-static) next to the configured ones.
    embedded_models: bool = True
    models: tuple[ModelSpec, ...] = ()
    limits: Limits = field(default_factory=Limits)
    # gRPC server reflection, for grpcurl and friends.
    reflection: bool = True
    # Worker threads answering calls. Calls waiting for a text encoder's batch hold a thread, so this bounds how many
    # can be merged into one batch.
    max_workers: int = 64
    # A collection checkpoints (and empties its log) once its log is larger than this many bytes.
    checkpoint_bytes: int = 256 * 1024 * 1024
    # Seconds in-flight calls get to finish after SIGTERM.
    grace_period_s: float = 10.0
    # A model that fails to load is FAILED and the server serves the others; true: the server stops instead, with the
    # model's one-line error (for deployments that must not run without every model).
    exit_on_model_error: bool = False
    # The deadline of a unary-response call whose caller set none (0: none). Long work stops when it passes.
    default_deadline_s: float = 300.0
    # Admission: calls worked on at once (health checks aside; at most max_workers, so that each admitted call has a
    # thread at once); of those, streams and heavy calls (maps, EvaluateAnalogies, Inpaint, CreateDirection). More are
    # refused at once: RESOURCE_EXHAUSTED / OVERLOADED with a retry delay. Health checks have threads of their own, and
    # refusals take none (transport/admission.py).
    max_concurrent_rpcs: int = 48
    max_concurrent_streams: int = 16
    max_heavy_rpcs: int = 2
    # Calls gRPC has accepted that wait for the server to take them up (before admission sees them). Beyond this many,
    # gRPC itself refuses some of the arriving calls (all of them beyond twice as many): RESOURCE_EXHAUSTED, "Too many
    # pending requests for this server", with no reason attached, at almost no cost. A long queue here is time every
    # admitted call waits under overload.
    max_pending_rpcs: int = 128
    # Health/Watch streams open at once (they hold no thread, only memory; anyone may open them, keys or not). More
    # are refused with RESOURCE_EXHAUSTED / OVERLOADED.
    max_health_watches: int = 1024
    # A streaming call that sends nothing for this long is ended (DEADLINE_EXCEEDED / STREAM_IDLE; 0: never).
    stream_idle_timeout_s: float = 60.0
    # Connections: the server pings a connection idle this long (0: never) and drops it if no answer comes within
    # keepalive_timeout_s; closes connections idle for max_connection_idle_s, and older than max_connection_age_s
    # (after a grace of max_connection_age_grace_s for their calls), so that clients reconnect and load balancers
    # rebalance (0: never).
    keepalive_time_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    max_connection_idle_s: float = 0.0
    max_connection_age_s: float = 0.0
    max_connection_age_grace_s: float = 30.0
    # Calls one HTTP/2 connection may have open at once (0: no limit). With a limit, calls beyond it wait in the
    # client instead of reaching the server, and a client multiplexing many calls on one connection is held to this
    # many. Without one the server still serves 0.75-0.9 of its capacity under 4x overload (benchmarks/overload.py).
    max_streams_per_connection: int = 0
    # Python's GIL switch interval (sys.setswitchinterval), in milliseconds, set by `embedsvc serve` for its process.
    # A thread that wants the GIL waits this long before it makes the holder give it up; gRPC's poll thread, which
    # takes every call in and sees every answer out, is such a thread whenever the workers hold the lock. Python's
    # default, 5 ms, left it waiting behind the workers under overload (4x overload of Similarity on 2 cores, served
    # over capacity: median 0.73 of 10 runs at 5 ms, 0.85 of 8 at 0.5 ms; benchmarks/overload.py, README "Overload").
    gil_switch_interval_ms: float = 0.5
    # "auto" | "cpu" | "cuda:N": where text encoders run (auto: cuda:0 when torch sees a GPU). Word vectors always run
    # on the CPU (numpy/FAISS).
    device: str = "auto"
    log_level: str = "INFO"
    # "text" or "json" (one object per line: time, level, logger, message, and for calls the request id, method,
    # code, reason, duration and key name).
    log_format: str = "text"
    # Prometheus metrics on their own HTTP port (None: off; 0 picks a free one), at metrics_host (default: host).
    metrics_port: int | None = None
    metrics_host: str = ""
    # The same API over HTTP/1.1 and JSON (the Connect protocol) and the explorer at /explorer/, on their own port
    # (None: off; 0 picks a free one), at http_host (default: host). Same keys, TLS and limits as gRPC.
    http_port: int | None = None
    http_host: str = ""
    # Origins allowed to call the HTTP API from a browser page served elsewhere (CORS); none by default. "*" allows
    # any origin.
    http_cors_origins: tuple[str, ...] = ()
    # OpenAI's /v1/embeddings: other names for hosted text models, as (alias, model) pairs (in TOML a table,
    # [server.openai_model_aliases] "text-embedding-3-small" = "minilm"), for tools that only send OpenAI's names.
    openai_model_aliases: tuple[tuple[str, str], ...] = ()
    # The text model text-embeddings-inference's routes (/embed, /tokenize, /info) serve: TEI serves one model.
    tei_model: str = "minilm"
    # The cross-encoder TEI's /rerank serves (a TEI server is either an embedder or a reranker; this one can be both).
    # Empty: tei_model, which, not being a cross-encoder, answers /rerank with TEI's 424 "not a re-ranker model".
    tei_rerank_model: str = ""
    # Serve a non-loopback address without API keys. Refused unless asked for on purpose.
    insecure: bool = False
    auth: AuthSettings = field(default_factory=AuthSettings)
    tls: TlsSettings | None = None
    storage: StorageSettings = field(default_factory=StorageSettings)
    # The secret that signs page tokens (at least 16 characters; EMBEDSVC_PAGE_TOKEN_KEY in the environment wins).
    # Empty: a random one kept in the data directory. Replicas behind one load balancer need the same secret, or a
    # page token issued by one is refused by the next.
    page_token_secret: str = ""

    def all_models(self) -> tuple[ModelSpec, ...]:
        """The configured models, preceded by the embedded defaults unless disabled or overridden by name."""
        configured = {m.name for m in self.models}
        embedded = kinds.embedded_models() if self.embedded_models else ()
        return tuple(m for m in embedded if m.name not in configured) + self.models

    @classmethod
    def load(cls, path: str | Path | None = None, env: Mapping[str, str] = os.environ, **flags: Any) -> Settings:
        """The server's Settings from its configuration. Each source overrides the ones before it:

        1. the defaults (the fields above);
        2. the TOML file: `path` (`--config`), else $EMBEDSVC_CONFIG, else none;
        3. the environment (`env`): EMBEDSVC_DATA_DIR (data_dir), EMBEDSVC_PAGE_TOKEN_KEY (server.page_token_secret)
           and EMBEDSVC_MILVUS_TOKEN (storage.milvus.token, when [storage.milvus] is configured); EMBEDSVC_ADMIN_KEY
           adds an admin key to the configured ones (only its sha256 is kept) and turns auth on;
        4. flags: Settings fields by name (host, port, data_dir, log_level, log_format, metrics_port, http_port,
           insecure); None means the flag was not given.
        With no data directory from any of them it is `default_data_dir(env)`. An empty variable counts as unset.
        ConfigError names what is wrong: the file, the key in it, the variable or the flag.
        """
        if path is None:
            path = env.get("EMBEDSVC_CONFIG") or None
        document = _read_toml(Path(path)) if path is not None else {}
        overrides = {key: value for key, value in flags.items() if value is not None}
        if "data_dir" not in overrides:
            if env.get("EMBEDSVC_DATA_DIR"):
                overrides["data_dir"] = env["EMBEDSVC_DATA_DIR"]
            elif "data_dir" not in _table(document, "server"):
                overrides["data_dir"] = default_data_dir(env)
        # Secrets shared by replicas come best from the environment (a secret store), not from a file in the image.
        if env.get("EMBEDSVC_PAGE_TOKEN_KEY"):
            overrides.setdefault("page_token_secret", env["EMBEDSVC_PAGE_TOKEN_KEY"])
        extra_keys: tuple[ApiKey, ...] = ()
        if env.get("EMBEDSVC_ADMIN_KEY"):  # for containers: an admin key from the environment
            extra_keys = (ApiKey(BOOTSTRAP_KEY_NAME, Role.ADMIN, key_hash(env["EMBEDSVC_ADMIN_KEY"])),)
        settings = cls.from_config(document, extra_keys=extra_keys, **overrides)
        milvus = settings.storage.milvus
        if milvus is not None and env.get("EMBEDSVC_MILVUS_TOKEN"):
            storage = dataclasses.replace(
                settings.storage, milvus=dataclasses.replace(milvus, token=env["EMBEDSVC_MILVUS_TOKEN"])
            )
            settings = dataclasses.replace(settings, storage=storage)
        return settings

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, extra_keys: tuple[ApiKey, ...] = (), **overrides: Any
    ) -> Settings:
        """Build Settings from a parsed TOML document; `overrides` (from flags) win over the file, `extra_keys` (the
        bootstrap admin key from the environment) join the configured keys and turn auth on.

        Layout: a `[server]` table with the scalar fields above, a `[limits]` table, and `[[models]]` entries.
        """
        unknown = set(config) - {"server", "limits", "models", "auth", "storage"}
        if unknown:
            raise ConfigError(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
        server = dict(_table(config, "server"))
        tls = _tls(server.pop("tls")) if "tls" in server else None
        scalar_fields = {f.name for f in dataclasses.fields(cls)} - {"models", "limits", "auth", "tls", "storage"}
        auth = _auth(_table(config, "auth"))
        if extra_keys:
            auth = dataclasses.replace(auth, enabled=True, keys=auth.keys + extra_keys)
        values: dict[str, Any] = {"tls": tls, "auth": auth, "storage": _storage(_table(config, "storage"))}
        for key, value in server.items():
            if key not in scalar_fields:
                raise ConfigError(f"server.{key}: unknown key")
            if key in ("metrics_port", "http_port"):
                values[key] = _port(f"server.{key}", value)
                continue
            if key == "http_cors_origins":
                if not isinstance(value, list) or not all(isinstance(o, str) and o for o in value):
                    raise ConfigError(f"server.{key}: must be a list of origins, got {value!r}")
                values[key] = tuple(value)
                continue
            if key == "openai_model_aliases":
                if not isinstance(value, dict) or not all(
                    isinstance(a, str) and a and isinstance(m, str) and m for a, m in value.items()
                ):
                    raise ConfigError(f"server.{key}: must be a table of alias = model name, got {value!r}")
                values[key] = tuple(value.items())
                continue
            values[key] = _coerce(f"server.{key}", value, cls.__dataclass_fields__[key].default)
        limits_table = _table(config, "limits")
        limit_values: dict[str, int] = {}
        for key, value in limits_table.items():
            if key not in Limits.__dataclass_fields__:
                raise ConfigError(f"limits.{key}: unknown key")
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"limits.{key}: must be a positive integer, got {value!r}")
            limit_values[key] = value
        models_list = config.get("models", [])
        if not isinstance(models_list, list):
            raise ConfigError("models: must be an array of tables ([[models]])")
        models = tuple(kinds.parse_model(i, entry) for i, entry in enumerate(models_list))
        names = [m.name for m in models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"models: duplicate name(s): {', '.join(duplicates)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        for flag in ("metrics_port", "http_port"):
            if overrides.get(flag) is not None:
                values[flag] = _port("--" + flag.replace("_", "-"), overrides[flag])
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"]).expanduser()
        settings = cls(**values, limits=Limits(**limit_values), models=models)
        settings.validate()
        return settings

    def storage_options(self) -> StorageOptions:
        """The collection storage these settings ask for (`embedsvc.index.stores.open_stores` opens it)."""
        milvus = None
        if self.storage.milvus is not None:
            m = self.storage.milvus
            uri = str(self.data_dir / m.uri) if m.is_local else m.uri
            milvus = MilvusOptions(uri, m.token, m.db_name, m.consistency, m.timeout_s, m.retries)
        snapshots = Path(self.storage.snapshot_dir).expanduser() if self.storage.snapshot_dir else None
        return StorageOptions(
            self.data_dir,
            self.checkpoint_bytes,
            Backend(self.storage.backend),
            milvus,
            max_id_bytes=self.limits.max_id_bytes,
            snapshot_dir=self.data_dir / snapshots if snapshots is not None else None,
        )

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"server.port: {self.port} is not a TCP port")
        if self.page_token_secret and len(self.page_token_secret.encode("utf-8")) < 16:
            raise ConfigError("server.page_token_secret (or EMBEDSVC_PAGE_TOKEN_KEY): at least 16 characters")
        if not 1 <= self.max_concurrent_rpcs <= self.max_workers:
            raise ConfigError(
                f"server.max_concurrent_rpcs: 1..max_workers ({self.max_workers}; each admitted call needs a thread), "
                f"got {self.max_concurrent_rpcs}"
            )
        if not 1 <= self.max_pending_rpcs <= 1_000_000:
            raise ConfigError(f"server.max_pending_rpcs: 1..1000000, got {self.max_pending_rpcs}")
        if not 1 <= self.max_health_watches <= 1_000_000:
            raise ConfigError(f"server.max_health_watches: 1..1000000, got {self.max_health_watches}")
        for name in ("max_concurrent_streams", "max_heavy_rpcs"):
            if not 1 <= getattr(self, name) <= self.max_concurrent_rpcs:
                raise ConfigError(f"server.{name}: 1..max_concurrent_rpcs, got {getattr(self, name)}")
        for name in (
            "default_deadline_s",
            "stream_idle_timeout_s",
            "keepalive_time_s",
            "keepalive_timeout_s",
            "max_connection_idle_s",
            "max_connection_age_s",
            "max_connection_age_grace_s",
        ):
            if not 0 <= getattr(self, name) < 1e7:
                raise ConfigError(f"server.{name}: seconds, 0 or positive, got {getattr(self, name)}")
        if not 0.01 <= self.gil_switch_interval_ms <= 1000:
            raise ConfigError(f"server.gil_switch_interval_ms: 0.01..1000, got {self.gil_switch_interval_ms}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"server.log_format: must be text or json, got {self.log_format!r}")
        if self.auth.enabled and not self.auth.keys:
            raise ConfigError("auth.enabled: true, but no keys ([[auth.keys]], auth.keys_file or EMBEDSVC_ADMIN_KEY)")
        names = [k.name for k in self.auth.keys]
        if len(set(names)) != len(names):
            raise ConfigError(
                f"auth.keys: duplicate name(s): {', '.join(sorted({n for n in names if names.count(n) > 1}))}"
            )
        if self.host not in LOOPBACK_HOSTS and not self.auth.enabled and not self.insecure:
            raise ConfigError(
                f"server.host: {self.host} can be reached from other machines, and auth is off: anyone who reaches the "
                "port could read and delete everything. Create keys (embedsvc auth new-key) and set [auth] enabled "
                "= true, or set EMBEDSVC_ADMIN_KEY; or pass --insecure to serve without keys on purpose"
            )
        if self.max_workers < 1:
            raise ConfigError("server.max_workers: must be at least 1")
        if self.grace_period_s < 0:
            raise ConfigError("server.grace_period_s: must not be negative")
        if not is_device(self.device):
            raise ConfigError(f"server.device: {self.device!r} is not auto, cpu or cuda:N")
        shadowing = sorted({a for a, _ in self.openai_model_aliases} & {m.name for m in self.all_models()})
        if shadowing:
            raise ConfigError(
                f"server.openai_model_aliases: {', '.join(shadowing)} would hide the model(s) of that name"
            )
        kinds.check_requirements(self.all_models(), self.models)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def _port(key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise ConfigError(f"{key}: must be a TCP port (0 picks a free one), got {value!r}")
    return value


def _path(key: str, value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: must be a file path, got {value!r}")
    return Path(value).expanduser()


def _storage(table: Mapping[str, Any]) -> StorageSettings:
    unknown = set(table) - {"backend", "milvus", "snapshot_dir"}
    if unknown:
        raise ConfigError(f"storage.{sorted(unknown)[0]}: unknown key")
    backend = table.get("backend", "faiss")
    if backend not in ("faiss", "milvus"):
        raise ConfigError(f"storage.backend: faiss or milvus, got {backend!r}")
    milvus = None
    if "milvus" in table:
        entry = table["milvus"]
        if not isinstance(entry, Mapping):
            raise ConfigError("storage.milvus: must be a table")
        unknown = set(entry) - {"uri", "token", "db_name", "consistency", "timeout_s", "retries"}
        if unknown:
            raise ConfigError(f"storage.milvus.{sorted(unknown)[0]}: unknown key")
        uri = entry.get("uri")
        if not isinstance(uri, str) or not uri:
            raise ConfigError("storage.milvus.uri: required (a Milvus Lite file path, or http://host:19530)")
        consistency = entry.get("consistency", "Strong")
        if consistency not in ("Strong", "Bounded", "Session", "Eventually"):
            raise ConfigError(
                f"storage.milvus.consistency: Strong, Bounded, Session or Eventually, got {consistency!r}"
            )
        for key in ("token", "db_name"):
            if not isinstance(entry.get(key, ""), str):
                raise ConfigError(f"storage.milvus.{key}: must be a string")
        timeout = entry.get("timeout_s", 30.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < 1e6:
            raise ConfigError(f"storage.milvus.timeout_s: positive seconds, got {timeout!r}")
        retries = entry.get("retries", 3)
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 20:
            raise ConfigError(f"storage.milvus.retries: 0..20, got {retries!r}")
        token, db_name = entry.get("token", ""), entry.get("db_name", "")
        milvus = MilvusSettings(uri, token, db_name, consistency, float(timeout), retries)
    if backend == "milvus" and milvus is None:
        raise ConfigError("storage.backend: milvus needs [storage.milvus] with its uri")
    snapshot_dir = table.get("snapshot_dir", "")
    if not isinstance(snapshot_dir, str):
        raise ConfigError(f"storage.snapshot_dir: must be a directory path, got {snapshot_dir!r}")
    return StorageSettings(backend, milvus, snapshot_dir)


def _tls(table: Any) -> TlsSettings:
    if not isinstance(table, Mapping):
        raise ConfigError("server.tls: must be a table")
    unknown = set(table) - {"cert_file", "key_file", "client_ca_file"}
    if unknown:
        raise ConfigError(f"server.tls.{sorted(unknown)[0]}: unknown key")
    for key in ("cert_file", "key_file"):
        if key not in table:
            raise ConfigError(f"server.tls.{key}: required (PEM file)")
    files = {key: _path(f"server.tls.{key}", value) for key, value in table.items()}
    for key, path in files.items():
        if not path.is_file():
            raise ConfigError(f"server.tls.{key}: {path}: no such file")
    return TlsSettings(**files)


def _auth(table: Mapping[str, Any]) -> AuthSettings:
    unknown = set(table) - {"enabled", "keys", "keys_file", "audit_reads", "audit_max_bytes", "audit_files"}
    if unknown:
        raise ConfigError(f"auth.{sorted(unknown)[0]}: unknown key")
    values: dict[str, Any] = {}
    for key in ("enabled", "audit_reads"):
        if key in table:
            values[key] = _coerce(f"auth.{key}", table[key], False)
    for key in ("audit_max_bytes", "audit_files"):
        if key in table:
            value = table[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"auth.{key}: must be a positive integer, got {value!r}")
            values[key] = value
    keys = _keys("auth.keys", table.get("keys", []))
    if "keys_file" in table:
        path = _path("auth.keys_file", table["keys_file"])
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"auth.keys_file: cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"auth.keys_file: {path} is not valid TOML: {exc}") from None
        if set(document) - {"keys"}:
            raise ConfigError(f"auth.keys_file: {path} may hold only [[keys]] tables")
        keys += _keys(f"auth.keys_file ({path}) keys", document.get("keys", []))
        values["keys_file"] = path
    return AuthSettings(keys=keys, **values)


def _keys(where: str, entries: Any) -> tuple[ApiKey, ...]:
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: must be an array of tables")
    keys = []
    for i, entry in enumerate(entries):
        at = f"{where}[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{at}: must be a table")
        unknown = set(entry) - {"name", "role", "sha256", "collections", "rate", "burst", "max_concurrent"}
        if unknown:
            raise ConfigError(f"{at}.{sorted(unknown)[0]}: unknown key")
        name = entry.get("name")
        if not isinstance(name, str) or not name or len(name) > 128 or not name.isprintable():
            raise ConfigError(f"{at}.name: 1 to 128 printable characters, got {name!r}")
        try:
            role = Role(str(entry.get("role")))
        except ValueError:
            raise ConfigError(f"{at}.role: must be read, write or admin, got {entry.get('role')!r}") from None
        digest = entry.get("sha256")
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise ConfigError(f"{at}.sha256: must be 64 hex digits (the sha256 of the key), got {digest!r}")
        collections = entry.get("collections", [])
        if not isinstance(collections, list) or not all(isinstance(c, str) and c for c in collections):
            raise ConfigError(f"{at}.collections: must be a list of collection names or globs")
        rate = entry.get("rate", 0)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1e9:
            raise ConfigError(f"{at}.rate: requests per second, 0 (no limit) or positive, got {rate!r}")
        counts = {}
        for key in ("burst", "max_concurrent"):
            value = entry.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{at}.{key}: 0 (none) or a positive integer, got {value!r}")
            counts[key] = value
        keys.append(ApiKey(name, role, digest.lower(), tuple(collections), float(rate), **counts))
    return tuple(keys)


def _table(config: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = config.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: must be a table")
    return value


def _coerce(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    if isinstance(default, Path):
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a path string, got {value!r}")
        return Path(value).expanduser()
    if isinstance(default, float):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{key}: must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, type(default)) or isinstance(value, bool):
        raise ConfigError(f"{key}: must be of type {type(default).__name__}, got {value!r}")
    return value
