"""The registry of hosted models: what is configured, what is loaded, and the provenance of each answer."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

import numpy as np

from embedsvc.backends.image_encoders import ImageEncoder
from embedsvc.backends.text_encoders import TextEncoder
from embedsvc.backends.vae import VAEModel
from embedsvc.backends.word_vectors import WordVectors, load_word_vectors
from embedsvc.core.expression import Expression, Term, TermKind
from embedsvc.core.texts.batching import Batcher
from embedsvc.core.words import arithmetic
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.settings import ModelKind, ModelSpec, WordVectorFormat

log = logging.getLogger(__name__)


class ModelState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: ModelKind
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


@dataclass(frozen=True)
class Provenance:
    model: str
    model_version: str
    method: str
    parameters: dict[str, str]


def provenance(
    space: WordVectors | TextEncoder | ImageEncoder, method: str, parameters: dict[str, str] | None = None
) -> Provenance:
    return Provenance(space.name, space.version, method, dict(parameters or {}))


@dataclass(frozen=True)
class TextModel:
    """A loaded text encoder and the batcher that feeds it."""

    encoder: TextEncoder
    batcher: Batcher


class ModelRegistry:
    """Holds every configured model; loads them once, warms them up, then hands them out read-only."""

    def __init__(
        self, specs: tuple[ModelSpec, ...], data_dir: Path, *, device: str = "auto", max_queued_texts: int = 16_384
    ) -> None:
        self._specs = {s.name: s for s in specs}
        self._data_dir = data_dir
        self._device = device
        self._max_queued_texts = max_queued_texts
        self._lock = threading.Lock()
        self._infos: dict[str, ModelInfo] = {
            s.name: ModelInfo(
                name=s.name,
                kind=s.kind,
                format=s.format.value,
                state=ModelState.LOADING,
                description=s.description,
                source=str(s.path) if s.path else "embedded",
            )
            for s in specs
        }
        self._word_models: dict[str, WordVectors] = {}
        self._text_models: dict[str, TextModel] = {}
        # Every image model (VAEs too, as encoders of their latent mean), and the VAEs.
        self._image_models: dict[str, ImageEncoder] = {}
        self._vaes: dict[str, VAEModel] = {}

    def load_all(self) -> None:
        """Load and warm up every model, word models first (averaged-words encoders need theirs), then text and image
        models, each kind in configuration order; the first failure is raised (one line)."""
        ordered = sorted(self._specs.values(), key=lambda s: s.kind is not ModelKind.WORD_VECTORS)
        for spec in ordered:
            started = time.monotonic()
            try:
                if spec.kind is ModelKind.WORD_VECTORS:
                    self._load_word_model(spec)
                elif spec.kind is ModelKind.TEXT_ENCODER:
                    self._load_text_model(spec)
                else:
                    self._load_image_model(spec)
            except Exception as exc:
                with self._lock:
                    self._infos[spec.name] = replace(self._infos[spec.name], state=ModelState.FAILED, error=str(exc))
                raise
            info = self.info(spec.name)
            log.info(
                "model %s ready: %s, dimension %d, %s on %s, %.1f s",
                spec.name,
                spec.kind.value,
                info.dimension,
                info.version,
                info.device,
                time.monotonic() - started,
            )

    def _load_word_model(self, spec: ModelSpec) -> None:
        space = load_word_vectors(spec, self._data_dir)
        _warm_up(space)
        sentence_mode = None
        if spec.format is WordVectorFormat.MODEL2VEC_DISTILLED:
            from embedsvc.backends.minilm_static import sentence_model_dir
            from embedsvc.backends.text_encoders import StaticEncoder

            sentence_mode = self._start_text_model(spec, StaticEncoder(spec.name, sentence_model_dir(self._data_dir)))
        with self._lock:
            self._word_models[spec.name] = space
            if sentence_mode is not None:
                self._text_models[spec.name] = sentence_mode
            self._infos[spec.name] = replace(
                self._infos[spec.name],
                state=ModelState.READY,
                dimension=space.dimension,
                vocabulary_size=space.size,
                version=space.version,
                space=space.space,
                has_subwords=space.has_subwords,
                source=space.source,
                embeds_texts=sentence_mode is not None,
                max_seq_length=sentence_mode.encoder.max_seq_length if sentence_mode else 0,
            )

    def _load_text_model(self, spec: ModelSpec) -> None:
        from embedsvc.backends.devices import resolve_device
        from embedsvc.backends.text_encoders import load_text_encoder

        device = resolve_device(spec.device or self._device)
        encoder = load_text_encoder(spec, device=device, word_models=self._word_models)
        model = self._start_text_model(spec, encoder)
        with self._lock:
            self._text_models[spec.name] = model
            self._infos[spec.name] = replace(
                self._infos[spec.name],
                state=ModelState.READY,
                dimension=encoder.dimension,
                version=encoder.version,
                space=encoder.space,
                device=encoder.device,
                embeds_texts=True,
                max_seq_length=encoder.max_seq_length,
                source=str(spec.path) if spec.path else ("words:" + spec.words if spec.words else "embedded"),
            )

    def _load_image_model(self, spec: ModelSpec) -> None:
        from embedsvc.backends.devices import resolve_device

        device = resolve_device(spec.device or self._device)
        assert spec.path is not None
        encoder: ImageEncoder
        if spec.kind is ModelKind.VAE:
            vae = VAEModel.load(spec.name, spec.path, device)
            vae.decode(vae.encode(np.zeros((2, *_image_dims(vae)), np.float32))[0])  # warm-up: both halves
            encoder = vae
        else:
            from embedsvc.backends.image_encoders import load_image_encoder

            encoder = load_image_encoder(spec, device)  # warms up (it embeds a blank image to learn its dimension)
        with self._lock:
            self._image_models[spec.name] = encoder
            if spec.kind is ModelKind.VAE:
                self._vaes[spec.name] = vae
            self._infos[spec.name] = replace(
                self._infos[spec.name],
                state=ModelState.READY,
                dimension=encoder.dimension,
                version=encoder.version,
                space=encoder.space,
                device=encoder.device,
                source=str(spec.path),
                image_size=encoder.shape.size,
                image_channels=encoder.shape.channels,
            )

    def _start_text_model(self, spec: ModelSpec, encoder: TextEncoder) -> TextModel:
        warm = ["warm up", "a longer sentence that warms up the thread pools and the allocator " * 4]
        encoder.encode(warm)  # the first batch pays for thread pools and allocations, not a caller
        batcher = Batcher(
            spec.name,
            encoder.encode,
            max_batch_size=spec.max_batch_size,
            max_wait_s=spec.max_wait_ms / 1e3,
            enabled=spec.batching,
            max_queued=self._max_queued_texts,
        )
        return TextModel(encoder, batcher)

    def close(self) -> None:
        """Stop the batch workers (queued calls fail with MODEL_NOT_READY)."""
        with self._lock:
            models = list(self._text_models.values())
        for model in models:
            model.batcher.close()

    def infos(self) -> list[ModelInfo]:
        with self._lock:
            return list(self._infos.values())

    def info(self, name: str) -> ModelInfo:
        with self._lock:
            info = self._infos.get(name)
        if info is None:
            raise self._not_found(name)
        return info

    def word_model(self, name: str) -> WordVectors:
        """The ready word model of that name; MODEL_NOT_FOUND, MODEL_NOT_READY or MODEL_KIND_MISMATCH."""
        info = self._named_info(name)
        if info.kind is not ModelKind.WORD_VECTORS:
            hint = (
                "; a sentence model has no vocabulary: for arithmetic, search a collection bound to it with an "
                "expression query"
                if info.kind is ModelKind.TEXT_ENCODER
                else ""
            )
            raise EmbedsvcError(
                Reason.MODEL_KIND_MISMATCH,
                f"model '{name}' is a {info.kind.value} model, not a word-vectors model{hint}",
                field="model",
                metadata={"model": name, "kind": info.kind.value},
            )
        space = self._word_models.get(name)
        if space is None:
            raise _not_ready(info)
        return space

    def text_model(self, name: str) -> TextModel:
        """The ready text model of that name; MODEL_NOT_FOUND, MODEL_NOT_READY or MODEL_KIND_MISMATCH."""
        info = self._named_info(name)
        if info.kind is ModelKind.WORD_VECTORS and info.state is ModelState.READY and not info.embeds_texts:
            raise EmbedsvcError(
                Reason.MODEL_KIND_MISMATCH,
                f"model '{name}' is a word-vectors model without a sentence mode; configure an averaged-words text "
                f'encoder over it (format = "averaged-words", words = "{name}")',
                field="model",
                metadata={"model": name, "kind": info.kind.value},
            )
        model = self._text_models.get(name)
        if model is None:
            raise _not_ready(info)
        return model

    def image_model(self, name: str) -> ImageEncoder:
        """The ready image model (a VAE or an image encoder) of that name."""
        info = self._named_info(name)
        if info.kind not in (ModelKind.VAE, ModelKind.IMAGE_ENCODER):
            raise _kind_mismatch(info, "an image model (vae or image-encoder)")
        model = self._image_models.get(name)
        if model is None:
            raise _not_ready(info)
        return model

    def vae(self, name: str) -> VAEModel:
        """The ready VAE of that name; MODEL_NOT_FOUND, MODEL_NOT_READY or MODEL_KIND_MISMATCH."""
        info = self._named_info(name)
        if info.kind is not ModelKind.VAE:
            raise _kind_mismatch(info, "a VAE")
        model = self._vaes.get(name)
        if model is None:
            raise _not_ready(info)
        return model

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


def _kind_mismatch(info: ModelInfo, wanted: str) -> EmbedsvcError:
    return EmbedsvcError(
        Reason.MODEL_KIND_MISMATCH,
        f"model '{info.name}' is a {info.kind.value} model, not {wanted}",
        field="model",
        metadata={"model": info.name, "kind": info.kind.value},
    )


def _image_dims(model: VAEModel) -> tuple[int, int, int]:
    return model.shape.channels, model.shape.size, model.shape.size


def _not_ready(info: ModelInfo) -> EmbedsvcError:
    return EmbedsvcError(
        Reason.MODEL_NOT_READY,
        f"model '{info.name}' is {info.state.value}" + (f": {info.error}" if info.error else "; retry shortly"),
        field="model",
        metadata={"model": info.name, "state": info.state.value},
    )


def _warm_up(space: WordVectors) -> None:
    """One search of each kind, so the first request does not pay for thread pools and page faults."""
    word = space.words[0]
    options = arithmetic.Options(top_n=1)
    arithmetic.evaluate(space, [Expression((Term(TermKind.WORD, 1.0, word),))], options)
    np.asarray(space.unit).sum()  # touch every page of the unit matrix
