"""The ONNX Runtime engine's shared parts, for every Hugging Face transformer it runs (sentence encoders in
`embedsvc.backends.onnx_text`, cross-encoders in `embedsvc.backends.cross_encoders`): the export of a transformer's
forward pass (once, cached under the data directory by the weights' digest, written by temporary file + fsync +
rename), the session (on the CPU, idle threads sleeping), and the padded inputs of sub-batches of similar length.

What each model computes on top (mean pooling, a classifier's logits) and the check against torch at every load are
the callers': each compares its ONNX outputs with sentence-transformers' on fixed inputs and refuses the engine
(OnnxRefused, the model then runs on torch) above its tolerance.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
CACHE_SUBDIR = Path("models") / "onnx"
OPSET = 17
# Padded tokens per forward pass (rows x the longest row): a batch of long inputs runs in smaller pieces, one of short
# inputs in larger ones, up to the model's inner batch.
TOKEN_BUDGET = 8192


class OnnxRefused(RuntimeError):
    """The ONNX engine cannot serve this model (the reason says why); the torch engine can."""


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export(transformer: Any, sample: Any, output: str, target: Path, *, name: str, output_axes: dict[int, str]) -> Path:
    """`target` (a cached file named by the weights' digest), exported from `transformer` if it is not there yet.

    `sample` is the tokenizer's answer for a few inputs (padded, as tensors): its input_ids, attention_mask and
    token_type_ids that the model takes become the graph's inputs, with dynamic batch and token axes; `output` is the
    attribute of the model's output the graph returns ("last_hidden_state", "logits"), as "hidden", with
    `output_axes` dynamic ({0: "batch", 1: "tokens"} for hidden states, {0: "batch"} for logits).
    """
    if target.exists():
        return target
    import torch

    transformer.eval()
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Forward(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            return getattr(self.inner(**dict(zip(names, args, strict=True))), output)

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # The tracer's notes on constants it folds (checked against torch at every load) are not server logs.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Forward(transformer),
                tuple(sample[n] for n in names),
                tmp,
                input_names=names,
                output_names=["hidden"],
                dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names} | {"hidden": output_axes},
                opset_version=OPSET,
                dynamo=False,
            )
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("model %s: exported to ONNX (%s)", name, target)
    return target


def session(path: Path, threads: int = 0) -> tuple[Any, list[str]]:
    """An ONNX Runtime session on the CPU for `path`, and its input names."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or max(1, os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    # Idle engine threads sleep instead of spinning: a spinning thread takes the core the gRPC threads need to
    # bring the next batch's calls in (measured, int8 with 16 callers: 281-312 -> 338-349 sentences/s, and
    # 12.7 -> 9.0 CPU seconds for the same 2,000 sentences).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opened = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return opened, [i.name for i in opened.get_inputs()]


def sub_batches(lengths: np.ndarray, inner_batch: int) -> Iterator[np.ndarray]:
    """Rows of similar length, longest first, each group at most `inner_batch` rows and TOKEN_BUDGET padded tokens."""
    order = np.argsort(-lengths, kind="stable")
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]])
        rows = order[start : start + max(1, min(inner_batch, TOKEN_BUDGET // max(longest, 1)))]
        start += len(rows)
        yield rows


def features(
    ids: list[list[int]], types: list[list[int]] | None, rows: np.ndarray, pad_id: int, inputs: list[str]
) -> dict[str, np.ndarray]:
    """The model's inputs for these rows, padded on the right to the longest (as the tokenizer pads)."""
    width = max(len(ids[i]) for i in rows.tolist())
    input_ids = np.full((len(rows), width), pad_id, np.int64)
    attention = np.zeros((len(rows), width), np.int64)
    token_types = np.zeros((len(rows), width), np.int64)
    for r, i in enumerate(rows.tolist()):
        n = len(ids[i])
        input_ids[r, :n] = ids[i]
        attention[r, :n] = 1
        if types is not None:
            token_types[r, :n] = types[i]
    feeds = {"input_ids": input_ids, "attention_mask": attention, "token_type_ids": token_types}
    return {name: feeds[name] for name in inputs}
