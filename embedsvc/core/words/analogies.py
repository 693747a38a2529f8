"""Analogy test sets (questions-words.txt format) and their evaluation with gensim's counting rules.

gensim `evaluate_word_analogies` asks `most_similar` one question at a time; here every question of the file is
answered in a few batched searches, then counted exactly as gensim counts: questions with a word outside the first
`restrict_vocab` words are OOV (skipped, or wrong with dummy4unknown), case folding maps each spelling to its most
frequent variant, and the prediction is the first of the top 5 hits that is not an input word.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedsvc import calls
from embedsvc.backends.capabilities import WordSpace
from embedsvc.core.words.arithmetic import Method, TermBatch, cosmul_top
from embedsvc.errors import EmbedsvcError, Reason, invalid
from embedsvc.index.exact import knn_inner_product
from embedsvc.vectors import unit_rows

GENSIM_RESTRICT_VOCAB = 300_000
TOTAL = "Total accuracy"
# Questions per batched search: bounds memory at about this many x vocabulary floats for 3CosMul.
_CHUNK = 4096


@dataclass(frozen=True)
class Question:
    section: int
    words: tuple[str, str, str, str]  # a is to b as c is to d


@dataclass(frozen=True)
class AnalogySet:
    sections: tuple[str, ...]
    questions: tuple[Question, ...]
    skipped_lines: int


@dataclass(frozen=True)
class SectionScore:
    name: str
    correct: int
    incorrect: int

    @property
    def accuracy(self) -> float:
        answered = self.correct + self.incorrect
        return self.correct / answered if answered else 0.0


@dataclass(frozen=True)
class AnalogyReport:
    sections: tuple[SectionScore, ...]
    total: SectionScore
    questions: int
    oov_questions: int
    skipped_lines: int


def _bad_file(message: str, line: int | None = None) -> EmbedsvcError:
    metadata = {"line": str(line)} if line is not None else {}
    where = f"line {line}: " if line is not None else ""
    return EmbedsvcError(
        Reason.INVALID_ANALOGY_FILE,
        where + message,
        field="analogies",
        metadata=metadata,
    )


def parse_analogies(data: bytes) -> AnalogySet:
    """Read a questions-words.txt file. Words keep their case; folding happens at evaluation."""
    sections: list[str] = []
    questions: list[Question] = []
    skipped = 0
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line does not start another
    for number, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad_file(f"not valid UTF-8 ({exc.reason} at byte {exc.start})", number) from None
        if line.startswith(": "):
            sections.append(line.lstrip(": ").strip())
            continue
        words = line.split()
        if not sections:
            if not words:
                continue  # blank lines before the first header (gensim would refuse the file)
            raise _bad_file("a question before any ': section' header", number)
        if len(words) != 4:
            skipped += 1
            continue
        questions.append(Question(len(sections) - 1, (words[0], words[1], words[2], words[3])))
    if not sections:
        raise _bad_file("no ': section' header and no questions")
    return AnalogySet(tuple(sections), tuple(questions), skipped)


def evaluate_analogies(
    space: WordSpace,
    analogies: AnalogySet,
    *,
    restrict_vocab: int = GENSIM_RESTRICT_VOCAB,
    case_sensitive: bool = False,
    dummy4unknown: bool = False,
    method: Method = Method.COSADD,
) -> AnalogyReport:
    if restrict_vocab <= 0:
        raise invalid("restrict_vocab", f"restrict_vocab must be positive, got {restrict_vocab}")
    vocab, canonical = space.folded_vocabulary(restrict_vocab, case_sensitive)
    fold = _identity if case_sensitive else str.upper
    n_sections = len(analogies.sections)
    sections = np.fromiter((q.section for q in analogies.questions), dtype=np.int64, count=len(analogies.questions))
    ids = np.fromiter(
        (vocab.get(fold(w), -1) for q in analogies.questions for w in q.words),
        dtype=np.int64,
        count=4 * len(analogies.questions),
    ).reshape(-1, 4)
    known = (ids >= 0).all(axis=1)
    oov_per_section = np.bincount(sections[~known], minlength=n_sections)
    asked_ids, asked_sections = ids[known], sections[known]
    base = space.unit[: min(restrict_vocab, space.size)]
    right = np.zeros(len(asked_ids), dtype=bool)
    for start in range(0, len(asked_ids), _CHUNK):
        calls.check()  # stops when the caller's deadline passes or it goes away
        chunk = asked_ids[start : start + _CHUNK]
        right[start : start + _CHUNK] = _count(chunk, _search(space, base, chunk, method), canonical)
    correct = np.bincount(asked_sections[right], minlength=n_sections)
    incorrect = np.bincount(asked_sections[~right], minlength=n_sections)
    if dummy4unknown:
        incorrect = incorrect + oov_per_section
    scores = tuple(SectionScore(name, int(correct[i]), int(incorrect[i])) for i, name in enumerate(analogies.sections))
    total = SectionScore(TOTAL, int(correct.sum()), int(incorrect.sum()))
    return AnalogyReport(scores, total, len(analogies.questions), int((~known).sum()), analogies.skipped_lines)


def _identity(word: str) -> str:
    return word


def _count(ids: np.ndarray, labels: np.ndarray, canonical: np.ndarray) -> np.ndarray:
    """Which questions are right, by gensim's rules, from the top-8 hits of each.

    gensim drops the hits whose index is an input's, keeps 5, predicts the first whose case-folded key is not an
    input word (or, when none qualifies, the last of the 5), and compares that key with the expected one. Keys are
    compared as canonical indices: every spelling of a folded key maps to the index of its first spelling.
    """
    a, b, c, d = (ids[:, i : i + 1] for i in range(4))
    kept = (labels >= 0) & (labels != a) & (labels != b) & (labels != c)
    kept &= np.cumsum(kept, axis=1) <= 5
    keys = np.where(kept, canonical[np.maximum(labels, 0)], -1)
    qualifies = kept & (keys != a) & (keys != b) & (keys != c)
    rows = np.arange(len(ids))
    first = np.argmax(qualifies, axis=1)
    last = labels.shape[1] - 1 - np.argmax(kept[:, ::-1], axis=1)
    predicted = np.where(qualifies.any(axis=1), keys[rows, first], keys[rows, last])
    return kept.any(axis=1) & (predicted == d[:, 0])


def _search(space: WordSpace, base: np.ndarray, ids: np.ndarray, method: Method) -> np.ndarray:
    """Top 8 (5 + up to 3 inputs) for b - a + c, as gensim most_similar(positive=[b, c], negative=[a])."""
    unit = space.unit
    if method is Method.COSADD:
        # gensim sums b, c, -a in that order, divides by 3, then normalises.
        means = (unit[ids[:, 1]].astype(np.float64) + unit[ids[:, 2]] - unit[ids[:, 0]]) / 3.0
        queries = np.ascontiguousarray(unit_rows(means).astype(np.float32))
        return knn_inner_product(queries, base, 8)[1]
    n = ids.shape[0]
    terms = unit[ids[:, [1, 2, 0]].reshape(-1)]
    batch = TermBatch(
        vectors=np.ascontiguousarray(terms, dtype=np.float32),
        weights=np.tile(np.array([1.0, 1.0, -1.0]), n),
        starts=np.arange(0, 3 * n, 3),
        inputs=[],
        resolved=[],
    )
    return cosmul_top(batch, base, 8)[1]
