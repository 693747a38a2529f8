"""The ONNX Runtime engine's shared parts, for every Hugging Face transformer it runs (sentence encoders in
`embedsvc.backends.onnx_text`, cross-encoders in `embedsvc.backends.cross_encoders`): the export of a transformer's
forward pass (once, cached under the data directory by the weights' digest, written by temporary file + fsync +
rename), the session (on the CPU, idle threads sleeping), and the padded inputs of sub-batches of similar length.

Packed passes (BERT encoders, sentence encoders' default): instead of a [rows, longest] batch padded on the right,
the texts of a pass are laid end to end in one sequence of real tokens, each token attending only to its own text
(a block-diagonal mask built inside the graph from a per-token text number) with positions restarting at every text.
Every matrix product then runs on real tokens only. On the text benchmark's sentences (6-20 words, random batches of
16) padding made 1.55 tokens computed per real token; packed, all-MiniLM-L6-v2 costs 4.6-4.8 ms CPU a sentence in
ONNX Runtime against 6.4-6.7 padded (and sentence-transformers' sorted batch-64 6.8-6.9), int8 2.0-2.1 against 3.1-3.2.
The attention's [tokens x tokens] scores are the price, so a pass holds at most PACK_TOKENS tokens (a longer text
runs alone).

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
# Tokens per packed pass: the block-diagonal attention computes scores for every pair in the pass, so the wasted share
# grows with the pass (measured, fp32 ms per sentence at 128 / 256 / 512 / 1024 tokens: 4.56 / 4.62 / 4.86 / 4.81).
PACK_TOKENS = 256
# Graph rewrites left out: ONNX Runtime 1.32's CPU SkipLayerNormalization (residual add + LayerNorm fused) is slower
# than the two ops it replaces (measured, all-MiniLM-L6-v2 packed, one thread: fp32 4.66-5.10 -> 4.29-4.45 ms a
# sentence, int8 2.25-2.36 -> 1.90-1.99).
DISABLED_FUSIONS = ["SkipLayerNormFusion"]
PACKED_INPUTS = ["input_ids", "token_type_ids", "position_ids", "gather_index", "key_mask", "scatter_index"]


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

    axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"hidden": output_axes}
    _write(Forward(transformer), tuple(sample[n] for n in names), names, axes, target)
    log.info("model %s: exported to ONNX (%s)", name, target)
    return target


def _write(module: Any, args: tuple[Any, ...], names: list[str], axes: dict[str, dict[int, str]], target: Path) -> None:
    """`module` traced on `args` and written to `target` (a temporary file, fsync, rename)."""
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # The tracer's notes on constants it folds (checked against torch at every load) are not server logs.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                tmp,
                input_names=names,
                output_names=["hidden"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def packing_refusal(transformer: Any) -> str | None:
    """Why packed passes cannot run this transformer (None when they can): they reproduce BERT's encoder."""
    config = transformer.config
    if getattr(config, "model_type", None) != "bert":
        return f"its architecture is {getattr(config, 'model_type', 'unknown')}; packed passes run BERT encoders"
    if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        return f"its position embeddings are {config.position_embedding_type}; packed passes use absolute ones"
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return "it is a decoder; packed passes run encoders"
    return None


def export_packed(transformer: Any, target: Path, *, name: str) -> Path:
    """`target`, exported from a BERT encoder `transformer` as a packed pass, if it is not there yet.

    Inputs, one axis of tokens: PACKED_INPUTS (input ids, token types, the position of each token in its text, and the
    number of its text in the pass); output "hidden", [1, tokens, hidden size]. Node names follow the model's module
    names ("/encoder/layer.0/output/dense/MatMul"), as the padded export's do, so int8 recipes select the same nodes.
    """
    if target.exists():
        return target
    import torch

    refusal = packing_refusal(transformer)
    if refusal is not None:
        raise OnnxRefused(refusal)
    transformer.eval()

    class Embeddings(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, ids: Any, types: Any, positions: Any) -> Any:
            e = self.inner
            x = e.word_embeddings(ids) + e.position_embeddings(positions) + e.token_type_embeddings(types)
            return e.LayerNorm(x)

    class SelfAttention(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.query, self.key, self.value = inner.query, inner.key, inner.value
            self.heads = int(inner.num_attention_heads)
            self.size = int(inner.attention_head_size)

        def forward(self, x: Any, gather: Any, bias: Any, scatter: Any) -> Any:
            rows, longest = gather.shape[0], gather.shape[1]

            def heads(t: Any) -> Any:  # [1, tokens, hidden] -> [texts, heads, longest, head size]
                return t[0][gather].view(rows, longest, self.heads, self.size).transpose(1, 2)

            scores = torch.matmul(heads(self.query(x)), heads(self.key(x)).transpose(2, 3)) * self.size**-0.5
            context = torch.matmul(torch.softmax(scores + bias, dim=-1), heads(self.value(x)))
            context = context.transpose(1, 2).reshape(rows * longest, self.heads * self.size)
            return context[scatter].unsqueeze(0)

    class Attention(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.self = SelfAttention(inner.self)
            self.output = inner.output  # dense, residual, LayerNorm: token by token

        def forward(self, x: Any, layout: tuple[Any, Any, Any]) -> Any:
            return self.output(self.self(x, *layout), x)

    class Layer(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.attention = Attention(inner.attention)
            self.intermediate, self.output = inner.intermediate, inner.output  # token by token

        def forward(self, x: Any, layout: tuple[Any, Any, Any]) -> Any:
            x = self.attention(x, layout)
            return self.output(self.intermediate(x), x)

    class Encoder(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.layer = torch.nn.ModuleList(Layer(layer) for layer in inner.layer)

        def forward(self, x: Any, layout: tuple[Any, Any, Any]) -> Any:
            for layer in self.layer:
                x = layer(x, layout)
            return x

    class Packed(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.embeddings = Embeddings(inner.embeddings)
            self.encoder = Encoder(inner.encoder)

        def forward(self, ids: Any, types: Any, positions: Any, gather: Any, mask: Any, scatter: Any) -> Any:
            x = self.embeddings(ids, types, positions).unsqueeze(0)
            # Each token attends to the real tokens of its own text only.
            bias = torch.where(mask[:, None, None, :] > 0, 0.0, float("-inf")).to(x.dtype)
            return self.encoder(x, (gather, bias, scatter))

    sample = packed_features([[101, 7592, 102], [101, 102]], None, np.arange(2))
    axes = {"gather_index": {0: "texts", 1: "longest"}, "key_mask": {0: "texts", 1: "longest"}}
    axes |= {n: {0: "tokens"} for n in PACKED_INPUTS if n not in axes} | {"hidden": {1: "tokens"}}
    _write(Packed(transformer), tuple(torch.from_numpy(sample[n]) for n in PACKED_INPUTS), PACKED_INPUTS, axes, target)
    log.info("model %s: exported to ONNX as packed passes (%s)", name, target)
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
    opened = ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=DISABLED_FUSIONS
    )
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


def packs(lengths: np.ndarray, parts: int = 1, budget: int = PACK_TOKENS) -> list[np.ndarray]:
    """Rows grouped into packed passes, longest first: consecutive in that order (so a pass's texts are of similar
    length and its per-text attention pads little), about equal in tokens, at least `parts` of them when there are
    as many rows (to run side by side), each at most `budget` tokens (a longer row alone)."""
    order = np.argsort(-lengths, kind="stable")
    if len(order) == 0:
        return []
    sizes = lengths[order]
    total = int(sizes.sum())
    count = min(len(order), max(parts, -(-total // budget)))
    cuts = np.unique(np.searchsorted(np.cumsum(sizes), total * np.arange(1, count) / count, side="left") + 1)
    passes: list[np.ndarray] = []
    for chunk in np.split(order, cuts[cuts < len(order)]):
        start, filled = 0, 0
        for end, n in enumerate(lengths[chunk].tolist()):
            if end > start and filled + n > budget:
                passes.append(chunk[start:end])
                start, filled = end, 0
            filled += n
        passes.append(chunk[start:])
    return passes


def packed_features(ids: list[list[int]], types: list[list[int]] | None, rows: np.ndarray) -> dict[str, np.ndarray]:
    """A packed pass's inputs for these rows (PACKED_INPUTS): their tokens end to end in this order, each token's
    position in its text, and the layout of the per-text attention (for each text the indices of its tokens padded to
    the longest text, which of them are real, and where each token sits in that padded grid)."""
    picked = [ids[i] for i in rows.tolist()]
    lengths = np.fromiter((len(x) for x in picked), dtype=np.int64, count=len(picked))
    total, longest = int(lengths.sum()), int(lengths.max())
    input_ids = np.fromiter((t for x in picked for t in x), dtype=np.int64, count=total)
    if types is None:
        token_types = np.zeros(total, np.int64)
    else:
        token_types = np.fromiter((t for i in rows.tolist() for t in types[i]), dtype=np.int64, count=total)
    starts = np.cumsum(lengths) - lengths
    positions = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)
    slots = np.arange(longest, dtype=np.int64)
    mask = (slots[None, :] < lengths[:, None]).astype(np.int64)
    gather = np.where(mask > 0, starts[:, None] + slots[None, :], starts[:, None])
    scatter = np.repeat(np.arange(len(picked), dtype=np.int64) * longest, lengths) + positions
    return {
        "input_ids": input_ids,
        "token_type_ids": token_types,
        "position_ids": positions,
        "gather_index": gather,
        "key_mask": mask,
        "scatter_index": scatter,
    }
