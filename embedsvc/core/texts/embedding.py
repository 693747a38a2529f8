"""Embedding texts: validation, prompts, truncation (right or left), chunking or refusal of long texts,
normalisation, the output's shape (dimensions, number type: `shapes.py`), provenance; and the tokens of texts.

The model runs behind its batcher (`embedsvc.core.texts.batching`), so this is what every caller of a text encoder goes
through: TextService, collections bound to a text model, and text terms of vector expressions.

A prompt (one of the model's named prompts, `TextEncoder.prompts`) is put before each text, as sentence-transformers'
encode(prompt_name=...) does; token counts, truncation and chunk windows count its tokens, since the model reads them.
Vectors made with a prompt live in their own space, "<model's space>;prompt=<name>" (`prompt_space`), so that a query
vector can never be stored where documents are by mistake. An empty prompt changes nothing: its vectors stay in the
model's space. Output shapes come after the prompt: dimensions and dtype add their facets to the prompt's space
("<model's space>;prompt=<name>/dim=<n>/<dtype>", `shapes.space_of`), and int8/uint8 are calibrated on the prompt's
own vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from embedsvc.backends.capabilities import TokenSpan
from embedsvc.calls import CallControl
from embedsvc.core.expression import Expression, TermKind
from embedsvc.core.provenance import Provenance, provenance
from embedsvc.core.texts import shapes
from embedsvc.core.texts.batching import TextModel
from embedsvc.core.texts.shapes import Calibrations, Dtype
from embedsvc.core.words.arithmetic import FieldOf, cosadd_means
from embedsvc.errors import EmbedsvcError, Reason, check_count, invalid, limit_exceeded
from embedsvc.limits import Limits
from embedsvc.vectors import check_vector, unit_rows


class LongTexts(StrEnum):
    """What happens to a text longer than the model's max_seq_length tokens."""

    TRUNCATE = "truncate"  # keep the first tokens
    TRUNCATE_LEFT = "truncate-left"  # keep the last tokens (from a word boundary)
    CHUNK = "chunk"  # the mean of windows
    REFUSE = "refuse"  # LIMIT_EXCEEDED


@dataclass(frozen=True)
class Prompt:
    """One of a model's named prompts: its name (in space tags) and its text (put before each input)."""

    name: str
    text: str


def prompt_space(space: str, prompt: Prompt | None) -> str:
    """The space of vectors made with `prompt` from a model of `space`: the model's, with ";prompt=<name>" when the
    prompt puts anything before the texts."""
    return f"{space};prompt={prompt.name}" if prompt is not None and prompt.text else space


def named_prompt(model: TextModel, name: str, field: str) -> Prompt | None:
    """The model's prompt of that name (None for ""); INVALID_VALUE naming the choices for a name it lacks."""
    if not name:
        return None
    prompts = model.encoder.prompts
    if name not in prompts:
        choices = ", ".join(sorted(prompts))
        has = f"its prompts are {choices}" if prompts else "it has no prompts"
        raise EmbedsvcError(
            Reason.INVALID_VALUE,
            f"model '{model.encoder.name}' has no prompt named {name!r}: {has}",
            field=field,
            metadata={"model": model.encoder.name, "choices": choices},
        )
    return Prompt(name, prompts[name])


def request_prompt(model: TextModel, name: str, field: str = "prompt_name") -> Prompt | None:
    """The prompt a request names, or the model's default prompt when it names none."""
    return named_prompt(model, name or model.encoder.default_prompt_name, field)


@dataclass(frozen=True)
class TextEmbeddings:
    # (texts, dimension) float32, or quantised: (texts, dtype.width(dimension)) int8 or uint8.
    vectors: np.ndarray
    # Positions of texts longer than the model's max_seq_length (truncated, or chunked on request).
    truncated: list[int]
    token_counts: list[int]
    max_seq_length: int
    space: str
    provenance: Provenance
    dimension: int = 0
    dtype: Dtype = Dtype.FLOAT32
    warnings: list[str] = field(default_factory=list)


# Bytes of one Token message besides its string, at most: tags and lengths, id, flag and offsets as varints.
TOKEN_BYTES = 20


@dataclass(frozen=True)
class Tokenized:
    texts: list[list[TokenSpan]]
    max_seq_length: int
    provenance: Provenance


def check_texts(texts: Sequence[str], field: str, limits: Limits) -> None:
    """1..max_texts_per_request texts, none empty or whitespace-only, none over max_text_chars characters."""
    check_count(field, "texts", len(texts), limits.max_texts_per_request)
    for n, text in enumerate(texts):
        check_text(text, f"{field}[{n}]", limits)


def check_text(text: str, field: str, limits: Limits) -> None:
    if not text.strip():
        raise invalid(field, "the text is empty or only whitespace")
    if len(text) > limits.max_text_chars:
        raise limit_exceeded(field, "characters", len(text), limits.max_text_chars)


def encode(
    model: TextModel,
    texts: Sequence[str],
    *,
    field_of: Callable[[int], str],
    normalize: bool,
    long_texts: LongTexts = LongTexts.TRUNCATE,
    control: CallControl | None = None,
    prompt: Prompt | None = None,
) -> tuple[np.ndarray, list[int], list[int]]:
    """Vectors of checked texts through the model's batcher, each text after `prompt`'s text; returns (vectors, long
    texts' positions, token counts of what the model reads of the whole texts, prompt included)."""
    encoder = model.encoder
    before = prompt.text if prompt is not None else ""
    texts = [before + text for text in texts] if before else list(texts)
    bad = encoder.unembeddable(texts)
    if bad:
        raise EmbedsvcError(
            Reason.UNEMBEDDABLE_INPUT,
            f"model '{encoder.name}' knows no word of this text",
            field=field_of(bad[0]),
            metadata={"model": encoder.name, "positions": ",".join(map(str, bad[:20]))},
        )
    counts = encoder.token_counts(texts)
    limit = encoder.max_seq_length
    truncated = [n for n, c in enumerate(counts) if limit and c > limit]
    if long_texts is LongTexts.REFUSE and truncated:
        n = truncated[0]
        raise EmbedsvcError(
            Reason.LIMIT_EXCEEDED,
            f"the text has {counts[n]} tokens; model '{encoder.name}' reads at most {limit} (truncate or chunk it)",
            field=field_of(n),
            metadata={"limit": str(limit), "actual": str(counts[n]), "model": encoder.name},
        )
    if long_texts is LongTexts.CHUNK and truncated:
        pieces = [
            encoder.chunks(t[len(before) :], before) if limit and c > limit else [t]
            for t, c in zip(texts, counts, strict=True)
        ]
        flat = [p for ps in pieces for p in ps]
        rows = model.batcher.submit(flat, encoder.token_counts(flat), control)
        vectors = np.empty((len(texts), encoder.dimension), np.float32)
        start = 0
        for n, ps in enumerate(pieces):
            vectors[n] = rows[start : start + len(ps)].mean(axis=0)
            start += len(ps)
    else:
        read, read_counts = texts, counts
        if long_texts is LongTexts.TRUNCATE_LEFT and truncated:
            read, read_counts = list(texts), list(counts)
            for n in truncated:
                tail = encoder.tail(texts[n][len(before) :], before)
                if tail is None:
                    raise invalid(
                        "truncation_direction",
                        f"model '{encoder.name}': its tokenizer cannot be cut at a word boundary of this text "
                        "without changing its tokens; truncate on the right, or chunk",
                    )
                read[n] = tail
            for n, c in zip(truncated, encoder.token_counts([read[n] for n in truncated]), strict=True):
                read_counts[n] = c
        vectors = np.array(model.batcher.submit(read, read_counts, control), dtype=np.float32)
    if normalize:
        vectors = unit_rows(vectors)
    return vectors, truncated, counts


def embed_texts(
    model: TextModel,
    texts: Sequence[str],
    limits: Limits,
    *,
    normalize: bool = False,
    long_texts: LongTexts = LongTexts.TRUNCATE,
    dimensions: int = 0,
    dtype: Dtype = Dtype.FLOAT32,
    calibrations: Calibrations | None = None,
    control: CallControl | None = None,
    prompt_name: str = "",
) -> TextEmbeddings:
    """EmbedTexts: checked texts -> one vector each (after the named prompt, or the model's default one) in the asked
    shape, with truncation report and provenance."""
    prompt = request_prompt(model, prompt_name)
    encoder = model.encoder
    warnings = shapes.check_dimensions(encoder, dimensions)
    check_texts(texts, "texts", limits)
    unit = normalize or dimensions > 0 or dtype is not Dtype.FLOAT32
    vectors, truncated, counts = encode(
        model,
        texts,
        field_of=lambda n: f"texts[{n}]",
        normalize=unit,
        long_texts=long_texts,
        control=control,
        prompt=prompt,
    )
    dimension = dimensions or encoder.dimension
    if dimension < encoder.dimension:
        vectors = shapes.truncate(vectors, dimension)
    parameters = {
        "normalize": str(unit).lower(),
        "long_texts": "truncate" if long_texts is LongTexts.TRUNCATE_LEFT else long_texts.value,
        "device": encoder.device,
    }
    if long_texts is LongTexts.TRUNCATE_LEFT:
        parameters["truncation_direction"] = "left"
    if prompt is not None:
        parameters["prompt_name"] = prompt.name
    if dimensions:
        parameters["dimensions"] = str(dimension)
    if dtype is not Dtype.FLOAT32:
        parameters["dtype"] = dtype.value
        ranges = None
        if dtype.calibrated:

            def embed(calibration: list[str], control: CallControl | None) -> np.ndarray:
                rows, _, _ = encode(
                    model, calibration, field_of=lambda n: "dtype", normalize=True, control=control, prompt=prompt
                )
                return rows

            # A prompt's vectors are another space, calibrated on their own (the sentences after the prompt).
            ranges, parameters["calibration"] = (calibrations or Calibrations()).ranges(
                encoder, embed, dimension, control=control, space=prompt_space(encoder.space, prompt)
            )
        vectors = shapes.quantize(vectors, dtype, ranges)
    return TextEmbeddings(
        vectors=vectors,
        truncated=truncated,
        token_counts=counts,
        max_seq_length=encoder.max_seq_length,
        space=shapes.space_of(prompt_space(encoder.space, prompt), dimension, encoder.dimension, dtype),
        provenance=provenance(encoder, encoder.method, parameters),
        dimension=dimension,
        dtype=dtype,
        warnings=warnings,
    )


def tokenize_texts(model: TextModel, texts: Sequence[str], limits: Limits, *, special: bool = True) -> Tokenized:
    """TokenizeTexts: each text's tokens as the model's tokenizer gives them, untruncated."""
    check_texts(texts, "texts", limits)
    encoder = model.encoder
    tokens = [encoder.tokens(t, special) for t in texts]
    # The answer must fit in one message: about TOKEN_BYTES a token besides its string (leaving room for framing).
    size = sum(TOKEN_BYTES + len(t.token.encode("utf-8")) for spans in tokens for t in spans)
    budget = limits.max_message_bytes - 64 * 1024
    if size > budget:
        raise limit_exceeded("texts", "bytes of the tokens' answer", size, budget)
    return Tokenized(
        tokens, encoder.max_seq_length, provenance(encoder, "tokenizer", {"add_special_tokens": str(special).lower()})
    )


def compose(
    model: TextModel,
    expressions: Sequence[Expression],
    field_of: FieldOf,
    limits: Limits,
    control: CallControl | None = None,
    *,
    prompt: Prompt | None = None,
    spaces: Sequence[str] = (),
) -> tuple[np.ndarray, list[set[str]]]:
    """3CosAdd over a text model: the unit-normalised weighted mean of each expression's terms, and its texts.

    Text terms (and bare words, which a sentence model reads as one-word texts) are embedded after `prompt` and
    unit-normalised, as gensim normalises word terms; vector terms must be in the model's space (or one of `spaces`:
    its prompts' spaces a collection uses) and are used as given. Each distinct text is embedded once per call.
    """
    encoder = model.encoder
    unique: dict[str, str] = {}  # text -> the field of its first use
    for e, expr in enumerate(expressions):
        if not expr.terms:
            raise EmbedsvcError(Reason.INVALID_EXPRESSION, "the expression has no terms", field=field_of(e, None))
        for t, term in enumerate(expr.terms):
            if term.kind in (TermKind.TEXT, TermKind.WORD):
                check_text(term.value, field_of(e, t), limits)
                unique.setdefault(term.value, field_of(e, t))
            elif term.kind is not TermKind.VECTOR:
                raise EmbedsvcError(
                    Reason.TERM_KIND_NOT_SUPPORTED,
                    f"{term.kind.value} terms cannot be evaluated against text model '{encoder.name}'",
                    field=field_of(e, t),
                    metadata={"kind": term.kind.value},
                )
    order = list(unique)
    rows = {}
    if order:
        vectors, _, _ = encode(
            model, order, field_of=lambda n: unique[order[n]], normalize=True, control=control, prompt=prompt
        )
        rows = dict(zip(order, vectors, strict=True))
    rows_of_terms: list[np.ndarray] = []
    for e, expr in enumerate(expressions):
        for t, term in enumerate(expr.terms):
            if term.kind is TermKind.VECTOR:
                assert term.vector is not None
                rows_of_terms.append(
                    check_vector(
                        term.vector,
                        term.space,
                        space=term.space if term.space in spaces else encoder.space,
                        dimension=encoder.dimension,
                        owner=f"model '{encoder.name}'",
                        field=field_of(e, t) + ".vector",
                    )
                )
            else:
                rows_of_terms.append(rows[term.value])
    weights = np.asarray([t.weight for expr in expressions for t in expr.terms], np.float64)
    starts = np.cumsum([0] + [len(expr.terms) for expr in expressions[:-1]])
    queries, _ = cosadd_means(np.stack(rows_of_terms), weights, starts, field_of)
    used = [{t.value for t in expr.terms if t.kind is not TermKind.VECTOR} for expr in expressions]
    return queries, used
