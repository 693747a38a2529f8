"""The ONNX Runtime engine for sentence-transformers models: the transformer exported to ONNX once and cached, mean
pooling and normalisation in numpy, the same tokenizer, truncation, token counts and chunking as the torch engine
(export, sessions and padding are `embedsvc.backends.onnx_engine`'s, shared with the cross-encoders).

Measured (2 cores, all-MiniLM-L6-v2, the text benchmark's sentences): random batches of 16 at about 1.3x
sentence-transformers' sorted batch-64 speed, vectors within ~2e-7 of it. The export (`torch.onnx.export`, opset 17,
the TorchScript exporter) runs at first load and is cached under `<data_dir>/models/onnx/` by the weights' digest, so
a changed model directory is exported again. At every load the ONNX vectors are compared with torch's on fixed
sentences; above MAX_DIFFERENCE the engine is refused and the model runs on torch (load_text_encoder logs why).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedsvc.backends import onnx_engine
from embedsvc.backends.onnx_engine import CACHE_SUBDIR, OPSET, OnnxRefused
from embedsvc.backends.text_models import SentenceTransformerEncoder
from embedsvc.corpus import lee_sentences
from embedsvc.durable import write_atomic

__all__ = ["CACHE_SUBDIR", "OnnxRefused", "OnnxSentenceEncoder", "Quality"]
log = logging.getLogger(__name__)
MAX_DIFFERENCE = 1e-5
# Checked at every load: short and long, several languages, punctuation, a text past the model's 256-token window.
SAMPLES = [
    "The cat sits outside.",
    "A man is playing the guitar on a street corner while people walk past.",
    "Das Wetter ist heute schön.",
    "¿Dónde está la biblioteca?",
    "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
    "ok",
    "I love pizza!!! 🍕",
    " ".join(["a long text that runs past the window"] * 60),
]


@dataclass(frozen=True)
class Quality:
    """How close a quantised model's vectors are to its fp32 model's, on `sentences` fixed sentences."""

    mean_cosine: float
    min_cosine: float
    top10_agreement: float  # the mean share of each sentence's 10 nearest neighbours (in the set) both agree on
    sentences: int


def quality_sentences(n: int = 500) -> list[str]:
    """Fixed real sentences for the int8 quality figures: gensim's Lee news corpus (installed with the server)."""
    return lee_sentences(n)


def top_k_agreement(a: np.ndarray, b: np.ndarray, k: int) -> float:
    def neighbours(x: np.ndarray) -> np.ndarray:
        similarity = x @ x.T
        np.fill_diagonal(similarity, -np.inf)
        return np.argsort(-similarity, axis=1)[:, :k]

    return float(np.mean([len(set(p) & set(q)) / k for p, q in zip(neighbours(a), neighbours(b), strict=True)]))


# MatMuls left in fp32 by quantize(): the feed-forward output projections of the first two encoder layers, the most
# sensitive to int8 weights (2 of all-MiniLM-L6-v2's 48 MatMuls).
FP32_MATMULS = re.compile(r"/layer\.[01]/output/dense/MatMul$")
# Part of the int8 file's name: a changed recipe quantises again instead of reusing the cached graph.
INT8_RECIPE = "int8-matmul-pc-ffn01"


def quantize(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation of the MatMul weights, per channel, except FP32_MATMULS.

    Measured on all-MiniLM-L6-v2 against its fp32 graph, on the text benchmark's 2,000 sentences (mean cosine, min,
    top-10 neighbour agreement, speed in-process): every MatMul 0.9928 / 0.983 / 0.889, 800/s; first layer's FFN
    output in fp32 0.9943 / 0.985 / 0.903; first two layers' 0.9948 / 0.982 / 0.909, 813/s (this recipe); whole first
    layer in fp32 0.9947 / 0.986 / 0.907, 786/s; every FFN output 0.9960 / 0.988 / 0.919 but 679/s; reduce_range
    0.9915 / 0.977 / 0.884. Every op (not only MatMul): mean cosine 0.962, top-10 0.82.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = [n.name for n in onnx.load(str(source)).graph.node if n.op_type == "MatMul" and FP32_MATMULS.search(n.name)]
    fd, tmp = tempfile.mkstemp(prefix=".quantize-", suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        quantize_dynamic(
            str(source),
            tmp,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep,
        )
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class OnnxSentenceEncoder(SentenceTransformerEncoder):
    """A sentence-transformers model run by ONNX Runtime on the CPU."""

    engine = "onnx"

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        cache_dir: Path,
        inner_batch: int,
        threads: int = 0,
        precision: str = "fp32",
    ) -> None:
        super().__init__(name, path, device="cpu", fp16=False, inner_batch=inner_batch)
        self._normalize = self._check_pipeline()
        self._pad_id = int(self.tokenizer.pad_token_id or 0)
        if self.tokenizer.padding_side != "right":
            raise OnnxRefused(f"its tokenizer pads on the {self.tokenizer.padding_side}; the ONNX engine pads right")
        self._threads = threads
        self._parallel = threads or max(1, os.cpu_count() or 1)  # packed passes run side by side
        # The other threads of a batch's packed passes (started at first use by the executor itself).
        self._pool = ThreadPoolExecutor(max(1, self._parallel - 1), thread_name_prefix=f"onnx-{name}")
        self.precision = precision
        self.quality: Quality | None = None
        # Packed passes (no padding) where the architecture allows, else padded sub-batches.
        self.packed = onnx_engine.packing_refusal(self.model[0].auto_model) is None
        onnx_path = self._export(cache_dir)
        self._open(onnx_path)
        try:
            self.max_difference = self._verify()
        except OnnxRefused as refused:
            if not self.packed:
                raise
            log.warning("model %s: packed passes refused (%s); padded batches instead", name, refused)
            self.packed = False
            onnx_path = self._export(cache_dir)
            self._open(onnx_path)
            self.max_difference = self._verify()
        if precision == "int8":
            # Another space: int8 vectors are near the fp32 ones, not equal to them.
            fp32_version = self.version
            self.version = f"{fp32_version}+int8"
            int8_path = onnx_path.with_name(f"{onnx_path.stem}-{INT8_RECIPE}.onnx")
            if not int8_path.exists():
                quantize(onnx_path, int8_path)
            self._open(int8_path)
            self.quality = self._quality(int8_path.with_suffix(".quality.json"), fp32_version)
        self.onnx_path = self.session_path

    def _open(self, onnx_path: Path) -> None:
        # Packed passes run side by side, one engine thread each: one pass split across threads costs 10-15% more
        # CPU a sentence (their hand-offs on small matrices; measured fp32 4.6-4.8 ms one thread, 5.2-5.8 two).
        threads = 1 if self.packed else self._threads
        self.session, self._inputs = onnx_engine.session(onnx_path, threads)
        self.session_path = onnx_path

    def _quality(self, path: Path, fp32_version: str) -> Quality:
        """The int8 model against the fp32 one on QUALITY_SENTENCES: measured once, kept beside the int8 graph."""
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("fp32_version") == fp32_version:
                return Quality(**saved["quality"])
        sentences = quality_sentences()
        reference = SentenceTransformerEncoder.encode(self, sentences)
        reference /= np.linalg.norm(reference, axis=1, keepdims=True)
        got = self.encode(sentences)
        got /= np.linalg.norm(got, axis=1, keepdims=True)
        cosines = (reference * got).sum(axis=1)
        quality = Quality(
            float(cosines.mean()), float(cosines.min()), top_k_agreement(reference, got, 10), len(sentences)
        )
        write_atomic(
            path, json.dumps({"fp32_version": fp32_version, "quality": asdict(quality)}, indent=2).encode("utf-8")
        )
        log.info(
            "model %s: int8 against fp32 on %d sentences: mean cosine %.4f, min %.4f, top-10 agreement %.3f",
            self.name,
            quality.sentences,
            quality.mean_cosine,
            quality.min_cosine,
            quality.top10_agreement,
        )
        return quality

    def _check_pipeline(self) -> bool:
        """True when the pipeline ends with Normalize; OnnxRefused unless it is Transformer, mean Pooling, Normalize?"""
        modules: list[Any] = list(self.model)
        names = [type(m).__name__ for m in modules]
        if len(names) not in (2, 3) or names[0] != "Transformer" or names[1] != "Pooling":
            raise OnnxRefused(f"its modules are {names}; the ONNX engine runs Transformer, Pooling (mean), Normalize")
        if len(names) == 3 and names[2] != "Normalize":
            raise OnnxRefused(f"its modules are {names}; the ONNX engine runs Transformer, Pooling (mean), Normalize")
        config = modules[1].get_config_dict()
        mode = config.get("pooling_mode") or ("mean" if config.get("pooling_mode_mean_tokens") else "other")
        if mode not in ("mean", "mean_tokens"):
            raise OnnxRefused(f"its pooling is {mode}; the ONNX engine pools by mean")
        return len(names) == 3

    def _export(self, cache_dir: Path) -> Path:
        digest = self.version.removeprefix("sha256:")
        if self.packed:
            target = cache_dir / f"{self.name}-{digest}-opset{OPSET}-packed.onnx"
            return onnx_engine.export_packed(self.model[0].auto_model, target, name=self.name)
        sample = self.tokenizer(["hello world", "a second, longer sentence"], padding=True, return_tensors="pt")
        target = cache_dir / f"{self.name}-{digest}-opset{OPSET}.onnx"
        return onnx_engine.export(
            self.model[0].auto_model,
            sample,
            "last_hidden_state",
            target,
            name=self.name,
            output_axes={0: "batch", 1: "tokens"},
        )

    def _verify(self) -> float:
        reference = super().encode(SAMPLES)
        difference = float(np.abs(self.encode(SAMPLES) - reference).max())
        if not difference <= MAX_DIFFERENCE:
            raise OnnxRefused(f"its ONNX vectors differ from torch's by {difference:.2e} (more than {MAX_DIFFERENCE})")
        return difference

    def encode(self, texts: list[str]) -> np.ndarray:
        """One tokenizer pass over the batch (truncated to the model's window), then forward passes: packed (texts end
        to end, at most PACK_TOKENS tokens a pass), or over padded sub-batches of similar length (longest first, each
        at most `inner_batch` texts and TOKEN_BUDGET padded tokens)."""
        out = np.empty((len(texts), self.dimension), np.float32)
        if not texts:  # the tokenizer fails on an empty list
            return out
        encoded = self.tokenizer(
            texts, padding=False, truncation=True, max_length=self.max_seq_length or None, return_attention_mask=False
        )
        ids: list[list[int]] = encoded["input_ids"]
        types: list[list[int]] | None = encoded.get("token_type_ids")
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        if self.packed:

            def run(rows: np.ndarray) -> None:
                hidden = self.session.run(None, onnx_engine.packed_features(ids, types, rows))[0][0]
                counts = lengths[rows]
                pooled = np.add.reduceat(hidden, np.cumsum(counts) - counts, axis=0) / counts[:, None]
                if self._normalize:
                    pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
                out[rows] = pooled

            passes = onnx_engine.packs(lengths, parts=self._parallel)
            # Dealt round-robin to `_parallel` threads, this one among them (one hand-off fewer a batch).
            shares = [passes[i :: self._parallel] for i in range(min(self._parallel, len(passes)))]

            def run_all(share: list[np.ndarray]) -> None:
                for rows in share:
                    run(rows)

            started = [self._pool.submit(run_all, share) for share in shares[1:]]
            run_all(shares[0] if shares else [])
            for done in started:
                done.result()
            return out
        for rows in onnx_engine.sub_batches(lengths, self.inner_batch):
            feeds = onnx_engine.features(ids, types, rows, self._pad_id, self._inputs)
            hidden = self.session.run(None, feeds)[0]
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            if self._normalize:
                pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            out[rows] = pooled
        return out
