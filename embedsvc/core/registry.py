"""The registry of hosted models: what is configured, what is loaded, and the provenance of each answer."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

import numpy as np

from embedsvc.backends.word_vectors import WordVectors, load_word_vectors
from embedsvc.core import arithmetic
from embedsvc.core.expression import Expression, Term, TermKind
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.settings import ModelKind, ModelSpec

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


@dataclass(frozen=True)
class Provenance:
    model: str
    model_version: str
    method: str
    parameters: dict[str, str]


def provenance(space: WordVectors, method: str, parameters: dict[str, str] | None = None) -> Provenance:
    return Provenance(space.name, space.version, method, dict(parameters or {}))


class ModelRegistry:
    """Holds every configured model; loads them once, warms them up, then hands them out read-only."""

    def __init__(self, specs: tuple[ModelSpec, ...], data_dir: Path) -> None:
        self._specs = {s.name: s for s in specs}
        self._data_dir = data_dir
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

    def load_all(self) -> None:
        """Load and warm up every model in configuration order; the first failure is raised (one line)."""
        for name, spec in self._specs.items():
            started = time.monotonic()
            try:
                space = load_word_vectors(spec, self._data_dir)
                _warm_up(space)
            except Exception as exc:
                with self._lock:
                    self._infos[name] = replace(self._infos[name], state=ModelState.FAILED, error=str(exc))
                raise
            with self._lock:
                self._word_models[name] = space
                self._infos[name] = replace(
                    self._infos[name],
                    state=ModelState.READY,
                    dimension=space.dimension,
                    vocabulary_size=space.size,
                    version=space.version,
                    space=space.space,
                    has_subwords=space.has_subwords,
                    source=space.source,
                )
            log.info(
                "model %s ready: %d words x %d, %s, %.1f s",
                name,
                space.size,
                space.dimension,
                space.version,
                time.monotonic() - started,
            )

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
        if not name:
            raise EmbedsvcError(Reason.MISSING_FIELD, "the model name is required", field="model")
        info = self.info(name)
        if info.kind is not ModelKind.WORD_VECTORS:
            raise EmbedsvcError(
                Reason.MODEL_KIND_MISMATCH,
                f"model '{name}' is a {info.kind.value} model, not a word-vectors model",
                field="model",
                metadata={"model": name, "kind": info.kind.value},
            )
        space = self._word_models.get(name)
        if space is None:
            raise EmbedsvcError(
                Reason.MODEL_NOT_READY,
                f"model '{name}' is {info.state.value}" + (f": {info.error}" if info.error else "; retry shortly"),
                field="model",
                metadata={"model": name, "state": info.state.value},
            )
        return space

    def _not_found(self, name: str) -> EmbedsvcError:
        known = ", ".join(self._specs) or "none"
        return EmbedsvcError(
            Reason.MODEL_NOT_FOUND,
            f"no model named '{name}' (models: {known})",
            field="model",
            metadata={"model": name},
        )


def _warm_up(space: WordVectors) -> None:
    """One search of each kind, so the first request does not pay for thread pools and page faults."""
    word = space.words[0]
    options = arithmetic.Options(top_n=1)
    arithmetic.evaluate(space, [Expression((Term(TermKind.WORD, 1.0, word),))], options)
    np.asarray(space.unit).sum()  # touch every page of the unit matrix
