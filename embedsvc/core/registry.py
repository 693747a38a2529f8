"""The registry of hosted models: what is configured, what is loaded, and the parts it hands out by capability.

Models are loaded through their kind (`embedsvc.backends.kinds`), checked (each part honours its capability's protocol,
`embedsvc.backends.capabilities`, and the model offers what its kind said it would), then warmed up: `warm_up()` on
each distinct part (a part offered under several capabilities, a VAE's, once). Callers ask for a part by capability,
`model(name, Capability.X)`, never for a kind, and get it typed by that capability's protocol. A text encoder comes
with its dynamic batcher (`core.texts.batching.TextModel`), and a cross-encoder with its own (`PairModel`, which is
itself a `CrossEncoder` whose `score` goes through the batcher), started here, so that their calls are queued for one
worker thread rather than run on gRPC threads.
"""

from __future__ import annotations

import logging
import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, overload

from embedsvc.backends.base import LoadContext, Loaded, ModelSpec
from embedsvc.backends.capabilities import (
    DESCRIBED,
    AnomalyScorer,
    Capability,
    CrossEncoder,
    ImageEncoder,
    LatentDecoder,
    LatentEncoder,
    LatentInpainter,
    Part,
    TextEncoder,
    WordSpace,
)
from embedsvc.backends.kinds import kind_of, load_order, parse_model
from embedsvc.core.texts.batching import Batcher, PairModel, TextModel
from embedsvc.errors import ConfigError, EmbedsvcError, Hint, Reason, operation_not_supported

log = logging.getLogger(__name__)


class ModelState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADED = "unloaded"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: str
    format: str
    state: ModelState
    description: str
    source: str
    dimension: int = 0
    vocabulary_size: int = 0
    device: str = "cpu"
    version: str = ""
    space: str = ""
    has_subwords: bool = False
    error: str = ""
    embeds_texts: bool = False
    max_seq_length: int = 0
    image_size: int = 0
    image_channels: int = 0
    memory_bytes: int = 0
    requires: tuple[str, ...] = ()
    engine: str = ""
    precision: str = ""
    quality: Any = None  # onnx_text.Quality of an int8 model
    reranks: bool = False
    # A text encoder's named prompts and the one applied when a request names none ("" for none).
    prompts: Mapping[str, str] = field(default_factory=dict)
    default_prompt_name: str = ""
    matryoshka_dims: tuple[int, ...] = ()
    any_dimensions: bool = False
    # Generative latent models: the LatentService operations offered (LATENT_OPERATIONS' values), in that order.
    latent_operations: tuple[str, ...] = ()


# What each latent capability lets a model do, in the order ModelInfo lists them ("sample" also needs a prior).
LATENT_OPERATIONS: tuple[tuple[str, Capability], ...] = (
    ("decode", Capability.LATENT_DECODER),
    ("encode", Capability.LATENT_ENCODER),
    ("sample", Capability.LATENT_DECODER),
    ("anomaly-score", Capability.ANOMALY_SCORES),
    ("inpaint", Capability.INPAINTING),
)


def a_kind(kind: str) -> str:
    """A kind's name with its article, for messages: "a vae", "an autoencoder"."""
    return ("an " if kind[:1] in ("a", "e", "i", "o", "u") else "a ") + kind


def latent_operations(loaded: Loaded) -> tuple[str, ...]:
    """The latent operations a loaded model's parts allow: Sample needs its decoder to have a prior."""
    decoder = loaded.parts.get(Capability.LATENT_DECODER)
    has_prior = isinstance(decoder, LatentDecoder) and decoder.has_prior
    return tuple(
        name for name, capability in LATENT_OPERATIONS if capability in loaded.parts and (name != "sample" or has_prior)
    )


@dataclass(frozen=True)
class Hosted:
    """A loaded, warmed-up model: what its kind loaded, and what the registry hands out per capability (the parts,
    the text encoder or cross-encoder with its batcher)."""

    loaded: Loaded
    served: Mapping[Capability, object]

    @property
    def text(self) -> TextModel | None:
        text = self.served.get(Capability.TEXTS)
        return text if isinstance(text, TextModel) else None

    @property
    def pairs(self) -> PairModel | None:
        pairs = self.served.get(Capability.PAIRS)
        return pairs if isinstance(pairs, PairModel) else None

    @property
    def batcher(self) -> Batcher[Any] | None:
        """The model's batch worker, if its calls are queued (one per model)."""
        if self.text is not None:
            return self.text.batcher
        return self.pairs.batcher if self.pairs is not None else None


class ModelRegistry:
    """Holds every configured model; loads them once, warms them up, then hands them out read-only."""

    def __init__(
        self, specs: tuple[ModelSpec, ...], data_dir: Path, *, device: str = "auto", max_queued_texts: int = 16_384
    ) -> None:
        self._specs = {s.name: s for s in specs}
        self._offers = {s.name: kind_of(s).offers(s) for s in specs}
        self._data_dir = data_dir
        self._device = device
        self._max_queued_texts = max_queued_texts
        self._lock = threading.Lock()
        self._infos: dict[str, ModelInfo] = {s.name: _loading_info(s) for s in specs}
        self._hosted: dict[str, Hosted] = {}
        self._busy: set[str] = set()  # models being loaded or reloaded at run time

    def load_all(self) -> None:
        """Load and warm up every model, each after the models it builds on, otherwise in configuration order. A model
        that fails is FAILED, with its error (logged), and the others load; models that build on it fail too."""
        for spec in load_order(self._specs.values()):
            try:
                self._load_and_host(spec)
            except EmbedsvcError:
                continue  # recorded and logged

    def failures(self) -> list[ModelInfo]:
        with self._lock:
            return [i for i in self._infos.values() if i.state is ModelState.FAILED]

    def _load_and_host(self, spec: ModelSpec) -> ModelInfo:
        """Load a model and serve it; on failure record FAILED and raise MODEL_NOT_READY with the error."""
        started = time.monotonic()
        try:
            self._check_requirements(spec)
            hosted = self._load(spec)
        except Exception as exc:
            error = exc.message if isinstance(exc, EmbedsvcError) else str(exc)
            log.error("model %s failed to load: %s", spec.name, error)
            with self._lock:
                self._infos[spec.name] = replace(_loading_info(spec), state=ModelState.FAILED, error=error)
                info = self._infos[spec.name]
            raise EmbedsvcError(
                Reason.MODEL_NOT_READY,
                f"model '{spec.name}' failed to load: {error}",
                field="name",
                metadata={"model": spec.name, "state": "failed"},
            ) from None
        with self._lock:
            self._hosted[spec.name] = hosted
            info = self._infos[spec.name] = _ready_info(_loading_info(spec), hosted)
        log.info(
            "model %s ready: %s, dimension %d, %s on %s, %.1f s",
            spec.name,
            spec.kind,
            info.dimension,
            info.version,
            info.device,
            time.monotonic() - started,
        )
        return info

    def _check_requirements(self, spec: ModelSpec) -> None:
        with self._lock:
            for requirement in kind_of(spec).requires(spec):
                if requirement.model not in self._hosted:
                    info = self._infos.get(requirement.model)
                    state = info.state.value if info else "not configured"
                    raise EmbedsvcError(
                        Reason.MODEL_NOT_READY,
                        f"it builds on model '{requirement.model}', which is {state}",
                        metadata={"model": requirement.model},
                    )

    # ---- at run time (ModelService.LoadModel, UnloadModel, ReloadModel) ------------------------------------------

    def load(self, name: str, spec: ModelSpec | None = None) -> ModelInfo:
        """Load an unloaded or failed model (or a new one, from `spec`), and serve it. MODEL_EXISTS if it is loaded,
        MODEL_NOT_READY (with the error) if it fails; the entry is then FAILED."""
        with self._lock:
            info = self._infos.get(name)
            if spec is None:
                if info is None:
                    raise self._not_found(name)
                spec = self._specs[name]
            if name in self._busy or (info is not None and info.state in (ModelState.READY, ModelState.LOADING)):
                state = "being loaded" if name in self._busy or info is None else info.state.value
                raise EmbedsvcError(
                    Reason.MODEL_EXISTS,
                    f"model '{name}' is {state}; ReloadModel loads a loaded model again",
                    field="name",
                    metadata={"model": name},
                )
            self._busy.add(name)
            self._specs[name] = spec
            self._offers[name] = kind_of(spec).offers(spec)
            self._infos[name] = _loading_info(spec)
        try:
            return self._load_and_host(spec)
        finally:
            with self._lock:
                self._busy.discard(name)

    def unload(self, name: str) -> ModelInfo:
        """Stop serving a model: new calls get MODEL_UNLOADED; calls running on it finish (they hold it); text calls
        queued for it get MODEL_NOT_READY. MODEL_IN_USE while a loaded model builds on it."""
        with self._lock:
            info = self._infos.get(name)
            if info is None:
                raise self._not_found(name)
            if info.state is ModelState.UNLOADED:
                return info
            if name in self._busy or info.state is not ModelState.READY:
                raise EmbedsvcError(
                    Reason.MODEL_NOT_READY,
                    f"model '{name}' is {'being loaded' if name in self._busy else info.state.value}; only a ready "
                    "model can be unloaded",
                    field="name",
                    metadata={"model": name, "state": info.state.value},
                )
            dependents = sorted(
                other
                for other, spec in self._specs.items()
                if other in self._hosted and any(r.model == name for r in kind_of(spec).requires(spec))
            )
            if dependents:
                raise EmbedsvcError(
                    Reason.MODEL_IN_USE,
                    f"model '{name}' is used by {', '.join(dependents)}; unload those first",
                    field="name",
                    metadata={"model": name, "dependents": ",".join(dependents)},
                )
            hosted = self._hosted.pop(name)
            info = self._infos[name] = replace(_loading_info(self._specs[name]), state=ModelState.UNLOADED)
        if hosted.batcher is not None:
            hosted.batcher.close()
        log.info("model %s unloaded", name)
        return info

    def reload(self, name: str, spec: ModelSpec | None = None) -> ModelInfo:
        """Load a ready model again (its files, or a new `spec`) while the loaded one serves, then switch to it. If the
        new one fails, the old one stays and MODEL_NOT_READY says why. Models that build on it keep the version they
        were loaded with until they are reloaded themselves."""
        with self._lock:
            info = self._infos.get(name)
            if info is None:
                raise self._not_found(name)
            if name in self._busy or info.state is not ModelState.READY:
                raise EmbedsvcError(
                    Reason.MODEL_NOT_READY,
                    f"model '{name}' is {'being loaded' if name in self._busy else info.state.value}; LoadModel "
                    "loads a model that is not ready",
                    field="name",
                    metadata={"model": name, "state": info.state.value},
                )
            spec = spec or self._specs[name]
            self._busy.add(name)
        started = time.monotonic()
        try:
            self._check_requirements(spec)
            hosted = self._load(spec)
        except Exception as exc:
            error = exc.message if isinstance(exc, EmbedsvcError) else str(exc)
            log.error("model %s: reloading failed, the loaded one stays: %s", name, error)
            raise EmbedsvcError(
                Reason.MODEL_NOT_READY,
                f"model '{name}' failed to reload (the loaded one still serves): {error}",
                field="name",
                metadata={"model": name, "state": "ready"},
            ) from None
        finally:
            with self._lock:
                self._busy.discard(name)
        with self._lock:
            old = self._hosted[name]
            self._hosted[name] = hosted
            self._specs[name] = spec
            self._offers[name] = kind_of(spec).offers(spec)
            info = self._infos[name] = _ready_info(_loading_info(spec), hosted)
        if old.batcher is not None:
            old.batcher.drain()  # its queued calls are answered by the old model, then it stops
        log.info("model %s reloaded: %s, %.1f s", name, info.version, time.monotonic() - started)
        return info

    def _load(self, spec: ModelSpec) -> Hosted:
        with self._lock:
            loaded_so_far = {name: h.loaded for name, h in self._hosted.items()}
        loaded = kind_of(spec).load(spec, LoadContext(self._data_dir, self._device, loaded_so_far))
        unfit = loaded.unfit_parts()
        if unfit:
            raise RuntimeError(f"the {spec.kind} kind loaded parts that break their protocol: {', '.join(unfit)}")
        promised = kind_of(spec).offers(spec)
        if loaded.capabilities != promised:
            raise RuntimeError(
                f"the {spec.kind} kind offers {_names(promised)} but loaded {_names(loaded.capabilities)}"
            )
        for part in _distinct(loaded):
            part.warm_up()
        served: dict[Capability, object] = dict(loaded.parts)
        options = loaded.batching
        encoder = loaded.parts.get(Capability.TEXTS)
        if isinstance(encoder, TextEncoder):  # its calls are queued: it is served with its batcher
            texts: Batcher[str] = Batcher(
                spec.name,
                encoder.encode,
                max_batch_size=options.max_batch_size,
                max_wait_s=options.max_wait_ms / 1e3,
                enabled=options.enabled,
                max_queued=self._max_queued_texts,
            )
            served[Capability.TEXTS] = TextModel(encoder, texts)
        scorer = loaded.parts.get(Capability.PAIRS)
        if isinstance(scorer, CrossEncoder):  # so are a cross-encoder's pairs
            pairs: Batcher[tuple[str, str]] = Batcher(
                spec.name,
                scorer.score,
                max_batch_size=options.max_batch_size,
                max_wait_s=options.max_wait_ms / 1e3,
                enabled=options.enabled,
                max_queued=self._max_queued_texts,
                unit="pairs",
            )
            served[Capability.PAIRS] = PairModel(scorer, pairs)
        return Hosted(loaded, served)

    def close(self) -> None:
        """Stop the batch workers (queued calls fail with MODEL_NOT_READY)."""
        with self._lock:
            batchers = [h.batcher for h in self._hosted.values() if h.batcher is not None]
        for batcher in batchers:
            batcher.close()

    def batchers(self) -> dict[str, Batcher[Any]]:
        """The batcher of every loaded text encoder and cross-encoder, by model name."""
        with self._lock:
            return {name: h.batcher for name, h in self._hosted.items() if h.batcher is not None}

    def infos(self) -> list[ModelInfo]:
        with self._lock:
            return list(self._infos.values())

    def info(self, name: str) -> ModelInfo:
        with self._lock:
            info = self._infos.get(name)
        if info is None:
            raise self._not_found(name)
        return info

    def offers(self, name: str) -> frozenset[Capability]:
        """What the model offers (known before it has loaded); MODEL_NOT_FOUND for an unknown name."""
        self._named_info(name)
        return self._offers[name]

    @overload
    def model(self, name: str, capability: Literal[Capability.WORDS]) -> WordSpace: ...
    @overload
    def model(self, name: str, capability: Literal[Capability.TEXTS]) -> TextModel: ...
    @overload
    def model(self, name: str, capability: Literal[Capability.PAIRS]) -> PairModel: ...
    @overload
    def model(self, name: str, capability: Literal[Capability.IMAGES]) -> ImageEncoder: ...
    @overload
    def model(self, name: str, capability: Literal[Capability.LATENT_DECODER]) -> LatentDecoder: ...
    @overload
    def model(self, name: str, capability: Literal[Capability.LATENT_ENCODER]) -> LatentEncoder: ...
    @overload
    def model(self, name: str, capability: Literal[Capability.ANOMALY_SCORES]) -> AnomalyScorer: ...
    @overload
    def model(self, name: str, capability: Literal[Capability.INPAINTING]) -> LatentInpainter: ...

    def model(self, name: str, capability: Capability) -> object:
        """The ready model of that name, as the part offering `capability` (a text encoder or a cross-encoder with its
        batcher).

        MISSING_FIELD without a name, MODEL_NOT_FOUND for an unknown one; MODEL_KIND_MISMATCH when the model does not
        offer the capability, or OPERATION_NOT_SUPPORTED when it is of the capability's family but lacks this part
        (an autoencoder asked for anomaly scores); then MODEL_UNLOADED or MODEL_NOT_READY when it is not loaded.
        """
        return self._hosted_with(name, capability).served[capability]

    def _hosted_with(self, name: str, capability: Capability) -> Hosted:
        info = self._named_info(name)
        offers = self._offers[name]
        if capability not in offers:
            raise _not_offered(info, capability, offers)
        with self._lock:
            hosted = self._hosted.get(name)
            info = self._infos[name]
        if hosted is None:
            raise _not_ready(info)
        if capability not in hosted.served:  # reloaded from a new configuration since `offers` was read
            raise _not_offered(info, capability, hosted.loaded.capabilities)
        return hosted

    def _named_info(self, name: str) -> ModelInfo:
        if not name:
            raise EmbedsvcError(Reason.MISSING_FIELD, "the model name is required", field="model")
        return self.info(name)

    def _not_found(self, name: str) -> EmbedsvcError:
        known = ", ".join(self._specs) or "none"
        return EmbedsvcError(
            Reason.MODEL_NOT_FOUND,
            f"no model named '{name}' (models: {known})",
            field="model",
            metadata={"model": name},
        )


def _loading_info(spec: ModelSpec) -> ModelInfo:
    return ModelInfo(
        name=spec.name,
        kind=spec.kind,
        format=spec.format.value,
        state=ModelState.LOADING,
        description=spec.description,
        source=spec.source,
        requires=tuple(r.model for r in kind_of(spec).requires(spec)),
    )


def _distinct(loaded: Loaded) -> list[Part]:
    """The model's parts, each once (a part offered under several capabilities, a VAE's, is one object)."""
    parts: dict[int, Part] = {}
    for part in loaded.parts.values():
        assert isinstance(part, Part)  # checked by _load (unfit_parts)
        parts.setdefault(id(part), part)
    return list(parts.values())


def _names(capabilities: frozenset[Capability]) -> str:
    return ", ".join(sorted(c.value for c in capabilities)) or "nothing"


def _max_seq_length(hosted: Hosted) -> int:
    if hosted.text is not None:
        return hosted.text.encoder.max_seq_length
    return hosted.pairs.max_seq_length if hosted.pairs is not None else 0


def _memory(hosted: Hosted) -> int:
    """Bytes the model's own parts hold (a part offered twice, a VAE's image encoder, counted once)."""
    return sum(int(p.memory_bytes()) for p in _distinct(hosted.loaded))


def _ready_info(info: ModelInfo, hosted: Hosted) -> ModelInfo:
    loaded = hosted.loaded
    shape = loaded.image_shape
    return replace(
        info,
        state=ModelState.READY,
        dimension=loaded.dimension,
        vocabulary_size=loaded.vocabulary_size,
        device=loaded.device,
        version=loaded.version,
        space=f"model:{info.name}@{loaded.version}",
        has_subwords=loaded.has_subwords,
        source=loaded.source,
        embeds_texts=Capability.TEXTS in loaded.capabilities,
        reranks=Capability.PAIRS in loaded.capabilities,
        prompts=dict(hosted.text.encoder.prompts) if hosted.text else {},
        default_prompt_name=hosted.text.encoder.default_prompt_name if hosted.text else "",
        max_seq_length=_max_seq_length(hosted),
        matryoshka_dims=hosted.text.encoder.matryoshka_dims if hosted.text else (),
        any_dimensions=hosted.text.encoder.any_dimensions if hosted.text else False,
        image_size=shape.size if shape else 0,
        image_channels=shape.channels if shape else 0,
        memory_bytes=_memory(hosted),
        engine=loaded.engine,
        precision=loaded.precision,
        quality=loaded.quality,
        latent_operations=latent_operations(loaded),
    )


def _not_offered(info: ModelInfo, wanted: Capability, offers: frozenset[Capability]) -> EmbedsvcError:
    """A model asked for a capability it does not offer: OPERATION_NOT_SUPPORTED when it is of the capability's family
    (capabilities.DESCRIBED), MODEL_KIND_MISMATCH otherwise, with the hint for what it offers instead, if any."""
    described = DESCRIBED[wanted]
    if described.part_of is not None and described.part_of in offers:
        return operation_not_supported(
            info.name,
            info.kind,
            f"model '{info.name}' is {a_kind(info.kind)} model, which cannot {described.lacking}",
            wanted,
        )
    hints = [template for other, template in described.instead.items() if other in offers]
    message = hints[0] if hints else "model '{name}' is {a_kind} model, not " + described.what
    return EmbedsvcError(
        Reason.MODEL_KIND_MISMATCH,
        message.format(name=info.name, kind=info.kind, a_kind=a_kind(info.kind)),
        field="model",
        metadata={"model": info.name, "kind": info.kind},
        hint=Hint.EMBED_TEXTS if wanted is Capability.WORDS and Capability.TEXTS in offers else None,
    )


def _not_ready(info: ModelInfo) -> EmbedsvcError:
    if info.state is ModelState.UNLOADED:
        return EmbedsvcError(
            Reason.MODEL_UNLOADED,
            f"model '{info.name}' was unloaded by an administrator (LoadModel brings it back)",
            field="model",
            metadata={"model": info.name, "state": info.state.value},
        )
    return EmbedsvcError(
        Reason.MODEL_NOT_READY,
        f"model '{info.name}' is {info.state.value}" + (f": {info.error}" if info.error else "; retry shortly"),
        field="model",
        metadata={"model": info.name, "state": info.state.value},
    )


# Bytes of a model configuration sent with LoadModel or ReloadModel.
MAX_CONFIG_BYTES = 64 * 1024


def spec_from_config(name: str, config: str) -> ModelSpec:
    """A model entry sent in a request (the keys of one [[models]] table, in TOML, without the name). INVALID_VALUE
    naming the key for a bad entry; entries that run code from their files are refused: they belong in the operator's
    configuration file, not in a request."""
    if len(config.encode("utf-8")) > MAX_CONFIG_BYTES:
        raise EmbedsvcError(
            Reason.LIMIT_EXCEEDED,
            f"the model configuration is over {MAX_CONFIG_BYTES} bytes",
            field="config",
            metadata={"limit": str(MAX_CONFIG_BYTES)},
        )
    try:
        entry = tomllib.loads(config)
    except tomllib.TOMLDecodeError as exc:
        raise EmbedsvcError(Reason.INVALID_VALUE, f"config is not valid TOML: {exc}", field="config") from None
    if "name" in entry:
        raise EmbedsvcError(
            Reason.INVALID_VALUE, "config must not set name (the request's name is used)", field="config"
        )
    try:
        spec = parse_model(0, {"name": name, **entry})
    except ConfigError as exc:
        raise EmbedsvcError(Reason.INVALID_VALUE, f"config: {exc}", field="config") from None
    if kind_of(spec).runs_file_code(spec):
        raise EmbedsvcError(
            Reason.INVALID_VALUE,
            "this entry runs code stored in the model's files (a pickle or a TorchScript archive); such models can "
            "only be configured in the server's configuration file",
            field="config",
        )
    return spec
