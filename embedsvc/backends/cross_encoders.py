"""The cross-encoder kind: a sentence-transformers `CrossEncoder` read from a local directory, scoring (query, text)
pairs for reranking (Capability.PAIRS), on ONNX Runtime (the CPU default) or torch.

A cross-encoder reads a query and a text together ("[CLS] query [SEP] text [SEP]") and its classifier gives one logit:
how relevant the text is to the query. `score` returns those logits (raw scores); the Rerank RPC and the rerank stage
of searches apply the sigmoid on top unless raw scores are asked for, as text-embeddings-inference does. A pair longer
than `max_seq_length` tokens is truncated as `CrossEncoder.predict` truncates it (the tokenizer's longest_first: tokens
come off the end of the longer of query and text, one at a time), and `token_counts` says how long each pair is
untruncated so that callers can refuse or report truncation. Only models with one label are rerankers: a model with
several (a classifier, e.g. NLI) is refused at load, as TEI refuses it for /rerank.

The ONNX engine exports the model's forward pass (input ids, attention mask, token types -> logits) once, cached under
`<data_dir>/models/onnx/` by the weights' digest (`onnx_engine`, shared with the sentence encoders), tokenizes with the
model's own tokenizer exactly as `predict` does, runs sub-batches of similar length, and is checked against
`CrossEncoder.predict` on fixed pairs (short, long, a long query) at every load; past MAX_DIFFERENCE it is refused and
the model runs on torch, with a log line saying why. Calls reach `score` through the model's dynamic batcher (the
registry serves the part with it), never from gRPC threads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from embedsvc.backends import onnx_engine
from embedsvc.backends.base import (
    BatchingOptions,
    Capability,
    Kind,
    LoadContext,
    Loaded,
    ModelSpec,
    Options,
    bool_value,
    device_value,
    enum_value,
    int_value,
    number_value,
    path_value,
)
from embedsvc.backends.devices import file_digest, resolve_device, torch_bytes
from embedsvc.backends.onnx_engine import CACHE_SUBDIR, OPSET, OnnxRefused
from embedsvc.backends.text_models import counting_tokenizer
from embedsvc.errors import ConfigError

log = logging.getLogger(__name__)
# Largest difference between the ONNX engine's logits and CrossEncoder.predict's on SAMPLE_PAIRS, per unit of the
# logit's size (|a - b| <= MAX_DIFFERENCE x max(1, |b|)), above which the engine is refused.
MAX_DIFFERENCE = 1e-5
# A tokenizer that does not say how long an input may be reports a huge model_max_length (transformers' 1e30).
_UNSET_LENGTH = 1_000_000
SAMPLE_PAIRS = [
    ("What is the capital of France?", "Paris is the capital and largest city of France."),
    ("What is the capital of France?", "Berlin is known for its museums."),
    ("¿Dónde está la biblioteca?", "La biblioteca está cerca de la plaza."),
    ("ok", "I love pizza!!! 🍕"),
    ("quarks", " ".join(["a long text that runs past the window of the model"] * 80)),
    (" ".join(["a very long query"] * 120), "a short text"),
]


class CrossEncoderFormat(StrEnum):
    # A local sentence-transformers CrossEncoder directory (CrossEncoder.save_pretrained, or a Hugging Face model
    # directory of a *ForSequenceClassification model with one label and its tokenizer).
    SENTENCE_TRANSFORMERS = "sentence-transformers"


@dataclass(frozen=True)
class CrossEncoderOptions(Options):
    kind: ClassVar[str] = "cross-encoder"

    path: Path
    format: CrossEncoderFormat = CrossEncoderFormat.SENTENCE_TRANSFORMERS
    # "" for the server's device, else "auto" | "cpu" | "cuda:N".
    device: str = ""
    # On a GPU: run in float16 (torch).
    fp16: bool = False
    # "onnx" (ONNX Runtime, exported and checked at first load), "torch", or "auto" (ONNX on the CPU when onnxruntime
    # is installed, torch otherwise and on a GPU).
    engine: str = "auto"
    # Tokens read per pair, query and text together; 0: the model's own (its tokenizer's model_max_length, else its
    # max_position_embeddings). As CrossEncoder(max_length=...).
    max_seq_length: int = 0
    # Dynamic batching of pairs, as for text encoders.
    batching: bool = True
    max_batch_size: int = 64
    max_wait_ms: float = 5.0

    @property
    def batching_options(self) -> BatchingOptions:
        return BatchingOptions(self.batching, self.max_batch_size, self.max_wait_ms)


class TorchCrossEncoder:
    """A CrossEncoder on torch, under `torch.inference_mode()` (predict's); fp16 optional on a GPU. Honours
    `capabilities.CrossEncoder`; `score` runs on one thread at a time (the model's batch worker)."""

    engine = "torch"
    method = "cross-encoder"

    def __init__(
        self, name: str, path: Path, *, device: str, fp16: bool, inner_batch: int, max_seq_length: int = 0
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory; never reach for a hub
        import transformers
        from sentence_transformers import CrossEncoder

        transformers.logging.set_verbosity_error()  # load reports and progress bars are not server logs
        transformers.logging.disable_progress_bar()
        if not path.is_dir():
            raise RuntimeError(f"{path} is not a cross-encoder model directory")
        self.name = name
        self.device = device
        self.model = CrossEncoder(str(path), device=device, local_files_only=True, max_length=max_seq_length or None)
        self.model.eval()
        labels = self.model.num_labels
        if labels != 1:
            raise RuntimeError(
                f"{path} has {labels} labels: a classifier, not a reranker (a cross-encoder for reranking has one)"
            )
        if fp16:
            if not device.startswith("cuda"):
                raise RuntimeError("fp16 needs a CUDA device; this model runs on " + device)
            self.model.half()
        self.fp16 = fp16
        self.inner_batch = inner_batch
        self.tokenizer: Any = self.model.tokenizer
        if self.tokenizer is None or not getattr(self.tokenizer, "is_fast", False):
            raise RuntimeError(f"{path} has no fast (Rust) tokenizer (tokenizer.json), which counting tokens needs")
        self._counter = counting_tokenizer(self.tokenizer.backend_tokenizer)
        self.max_seq_length = self._window(max_seq_length)
        # The prompt CrossEncoder.predict puts before each query when its configuration names a default one.
        default = self.model.default_prompt_name
        self.prompt = str(self.model.prompts.get(default, "")) if default else ""
        weights = [p for p in path.rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file()]
        self.version = file_digest(weights) if weights else "sha256:unknown"

    def _window(self, configured: int) -> int:
        """Tokens per pair: the configured value, else the tokenizer's, else the position embeddings'; the model
        is told the same, so that predict truncates where the counts say."""
        positions = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        length = int(self.model.max_seq_length or 0)
        if configured:
            if positions and configured > positions:
                raise RuntimeError(f"max_seq_length {configured} is more than the model's {positions} positions")
            return configured
        if not length or length >= _UNSET_LENGTH:
            if not positions:
                raise RuntimeError("the model says neither its tokenizer's model_max_length nor its positions")
            length = positions
            self.model.max_seq_length = length
        return length

    @property
    def space(self) -> str:
        return f"model:{self.name}@{self.version}"

    def token_counts(self, pairs: list[tuple[str, str]]) -> list[int]:
        """Tokens of each pair as the model reads it (special tokens and the default prompt included), untruncated."""
        encoded = self._counter.encode_batch([(self.prompt + q, t) for q, t in pairs], add_special_tokens=True)
        return [len(e.ids) for e in encoded]

    def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """The raw scores (logits): CrossEncoder.predict(pairs, activation_fn=Identity())."""
        import torch

        scores = self.model.predict(
            [list(p) for p in pairs],
            batch_size=self.inner_batch,
            activation_fn=torch.nn.Identity(),
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return np.asarray(scores, dtype=np.float32).reshape(len(pairs))

    def warm_up(self) -> None:
        self.score([("warm up", "a longer text that warms up the thread pools and the allocator " * 4), ("a", "b")])

    def memory_bytes(self) -> int:
        return torch_bytes(self.model)


class OnnxCrossEncoder(TorchCrossEncoder):
    """A CrossEncoder run by ONNX Runtime on the CPU: the same tokenizer and truncation as predict, logits from the
    exported graph."""

    engine = "onnx"

    def __init__(
        self, name: str, path: Path, *, cache_dir: Path, inner_batch: int, max_seq_length: int = 0, threads: int = 0
    ) -> None:
        super().__init__(name, path, device="cpu", fp16=False, inner_batch=inner_batch, max_seq_length=max_seq_length)
        modules = [type(m).__name__ for m in self.model]
        if modules != ["Transformer"]:
            raise OnnxRefused(f"its modules are {modules}; the ONNX engine runs one sequence-classification model")
        if self.tokenizer.padding_side != "right":
            raise OnnxRefused(f"its tokenizer pads on the {self.tokenizer.padding_side}; the ONNX engine pads right")
        self._pad_id = int(self.tokenizer.pad_token_id or 0)
        digest = self.version.removeprefix("sha256:")
        sample = self.tokenizer(
            ["hello world", "a query"], ["a text", "a second, longer text"], padding=True, return_tensors="pt"
        )
        self.onnx_path = onnx_engine.export(
            self.model[0].auto_model,
            sample,
            "logits",
            cache_dir / f"{name}-{digest}-cross-encoder-opset{OPSET}.onnx",
            name=name,
            output_axes={0: "batch"},
        )
        self.session, self._inputs = onnx_engine.session(self.onnx_path, threads)
        self.max_difference = self._verify()

    def _verify(self) -> float:
        """The largest difference from predict's logits on SAMPLE_PAIRS, per unit of size; OnnxRefused past
        MAX_DIFFERENCE."""
        reference = super().score(SAMPLE_PAIRS)
        difference = float((np.abs(self.score(SAMPLE_PAIRS) - reference) / np.maximum(1.0, np.abs(reference))).max())
        if not difference <= MAX_DIFFERENCE:
            raise OnnxRefused(f"its ONNX scores differ from torch's by {difference:.2e} (more than {MAX_DIFFERENCE})")
        return difference

    def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """One tokenizer pass over the batch (pairs truncated longest-first to max_seq_length, as predict does), then
        forward passes over sub-batches of similar length."""
        out = np.empty(len(pairs), np.float32)
        encoded = self.tokenizer(
            [self.prompt + q for q, _ in pairs],
            [t for _, t in pairs],
            padding=False,
            truncation="longest_first",
            max_length=self.max_seq_length,
            return_attention_mask=False,
        )
        ids: list[list[int]] = encoded["input_ids"]
        types: list[list[int]] | None = encoded.get("token_type_ids")
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        for rows in onnx_engine.sub_batches(lengths, self.inner_batch):
            logits = self.session.run(None, onnx_engine.features(ids, types, rows, self._pad_id, self._inputs))[0]
            out[rows] = logits.reshape(len(rows), -1)[:, 0]
        return out


def load_cross_encoder(spec: ModelSpec, *, device: str, data_dir: Path | None, inner_batch: int = 32) -> Any:
    """The cross-encoder a spec names, on ONNX Runtime or torch as its engine says (ONNX falls back to torch, with a
    log line, when it cannot serve the model)."""
    options: CrossEncoderOptions = spec.options
    engine = options.engine
    if engine == "auto":
        engine = "onnx" if device == "cpu" and not options.fp16 and onnx_engine.available() else "torch"
    if engine == "onnx":
        refusal = _onnx_refusal(device, options.fp16, data_dir)
        if refusal is None:
            assert data_dir is not None
            try:
                return OnnxCrossEncoder(
                    spec.name,
                    options.path,
                    cache_dir=data_dir / CACHE_SUBDIR,
                    inner_batch=inner_batch,
                    max_seq_length=options.max_seq_length,
                )
            except OnnxRefused as exc:
                refusal = str(exc)
        log.warning("model %s: not on the ONNX engine: %s; it runs on torch", spec.name, refusal)
    return TorchCrossEncoder(
        spec.name,
        options.path,
        device=device,
        fp16=options.fp16,
        inner_batch=inner_batch,
        max_seq_length=options.max_seq_length,
    )


def _onnx_refusal(device: str, fp16: bool, data_dir: Path | None) -> str | None:
    if device != "cpu" or fp16:
        return f"the ONNX engine runs on the CPU in float32 (this model: {device}{', fp16' if fp16 else ''})"
    if not onnx_engine.available():
        return "onnxruntime is not installed"
    if data_dir is None:
        return "no data directory to cache the exported graph in"
    return None


class CrossEncoderKind(Kind):
    name = CrossEncoderOptions.kind
    keys = frozenset(
        {"path", "format", "device", "fp16", "engine", "max_seq_length", "batching", "max_batch_size", "max_wait_ms"}
    )

    def parse(self, where: str, entry: Mapping[str, Any]) -> CrossEncoderOptions:
        engine = entry.get("engine", "auto")
        if engine not in ("auto", "onnx", "torch"):
            raise ConfigError(f"{where}.engine: auto, onnx or torch, got {engine!r}")
        fp16 = bool_value(where, entry, "fp16", False)
        if fp16 and engine == "onnx":
            raise ConfigError(f"{where}.fp16: float16 runs on torch (a GPU), not engine = onnx")
        return CrossEncoderOptions(
            path=path_value(where, entry, "a cross-encoder model directory"),
            format=enum_value(
                f"{where}.format", CrossEncoderFormat, entry.get("format", CrossEncoderFormat.SENTENCE_TRANSFORMERS)
            ),
            device=device_value(where, entry),
            fp16=fp16,
            engine=str(engine),
            max_seq_length=int_value(where, entry, "max_seq_length", 0, 0, 1_000_000),
            batching=bool_value(where, entry, "batching", True),
            max_batch_size=int_value(where, entry, "max_batch_size", 64, 1, 4096),
            max_wait_ms=number_value(where, entry, "max_wait_ms", 5.0, 0, 1000),
        )

    def offers(self, spec: ModelSpec) -> frozenset[Capability]:
        return frozenset({Capability.PAIRS})

    def load(self, spec: ModelSpec, context: LoadContext) -> Loaded:
        options: CrossEncoderOptions = spec.options
        device = resolve_device(options.device or context.device)
        model = load_cross_encoder(spec, device=device, data_dir=context.data_dir)
        return Loaded(
            dimension=0,
            version=model.version,
            source=str(options.path),
            device=model.device,
            parts={Capability.PAIRS: model},
            batching=options.batching_options,
            engine=model.engine,
            precision="fp16" if model.fp16 else "fp32",
        )


KIND = CrossEncoderKind()
