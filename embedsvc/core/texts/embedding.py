"""Embedding texts: validation, prompts, truncation or chunking of long texts, normalisation, provenance.

The model runs behind its batcher (`embedsvc.core.texts.batching`), so this is what every caller of a text encoder goes
through: TextService, collections bound to a text model, and text terms of vector expressions.

A prompt (one of the model's named prompts, `TextEncoder.prompts`) is put before each text, as sentence-transformers'
encode(prompt_name=...) does; token counts, truncation and chunk windows count its tokens, since the model reads them.
Vectors made with a prompt live in their own space, "<model's space>;prompt=<name>" (`prompt_space`), so that a query
vector can never be stored where documents are by mistake. An empty prompt changes nothing: its vectors stay in the
model's space.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from embedsvc.calls import CallControl
from embedsvc.core.expression import Expression, TermKind
from embedsvc.core.provenance import Provenance, provenance
from embedsvc.core.texts.batching import TextModel
from embedsvc.core.words.arithmetic import FieldOf, cosadd_means
from embedsvc.errors import EmbedsvcError, Reason, check_count, invalid, limit_exceeded
from embedsvc.limits import Limits
from embedsvc.vectors import check_vector, unit_rows


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
    vectors: np.ndarray
    # Positions of texts longer than the model's max_seq_length (truncated, or chunked on request).
    truncated: list[int]
    token_counts: list[int]
    max_seq_length: int
    space: str
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
    chunk: bool = False,
    control: CallControl | None = None,
    prompt: Prompt | None = None,
) -> tuple[np.ndarray, list[int], list[int]]:
    """Vectors of checked texts through the model's batcher, each text after `prompt`'s text; returns (vectors,
    truncated positions, token counts of what the model reads)."""
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
    if chunk and truncated:
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
        vectors = np.array(model.batcher.submit(texts, counts, control), dtype=np.float32)
    if normalize:
        vectors = unit_rows(vectors)
    return vectors, truncated, counts


def embed_texts(
    model: TextModel,
    texts: Sequence[str],
    limits: Limits,
    *,
    normalize: bool = False,
    chunk: bool = False,
    control: CallControl | None = None,
    prompt_name: str = "",
) -> TextEmbeddings:
    """EmbedTexts: checked texts -> one vector each (after the named prompt, or the model's default one), with
    truncation report and provenance."""
    prompt = request_prompt(model, prompt_name)
    check_texts(texts, "texts", limits)
    vectors, truncated, counts = encode(
        model, texts, field_of=lambda n: f"texts[{n}]", normalize=normalize, chunk=chunk, control=control, prompt=prompt
    )
    encoder = model.encoder
    return TextEmbeddings(
        vectors=vectors,
        truncated=truncated,
        token_counts=counts,
        max_seq_length=encoder.max_seq_length,
        space=prompt_space(encoder.space, prompt),
        provenance=provenance(
            encoder,
            encoder.method,
            {
                "normalize": str(normalize).lower(),
                "long_texts": "chunk" if chunk else "truncate",
                "device": encoder.device,
            }
            | ({"prompt_name": prompt.name} if prompt is not None else {}),
        ),
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
