"""Analogy test sets (questions-words.txt format) and their evaluation with gensim's counting rules.

gensim `evaluate_word_analogies` asks `most_similar` one question at a time; here every question of the file is
answered in a few batched searches, then counted exactly as gensim counts: questions with a word outside the first
`restrict_vocab` words are OOV (skipped, or wrong with dummy4unknown), case folding maps each spelling to its most
frequent variant, and the prediction is the first of the top 5 hits that is not an input word.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedsvc.backends.word_vectors import WordVectors
from embedsvc.core.arithmetic import Method, TermBatch, cosmul_top, knn
from embedsvc.errors import EmbedsvcError, Reason, invalid

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
    space: WordVectors,
    analogies: AnalogySet,
    *,
    restrict_vocab: int = GENSIM_RESTRICT_VOCAB,
    case_sensitive: bool = False,
    dummy4unknown: bool = False,
    method: Method = Method.COSADD,
) -> AnalogyReport:
    if restrict_vocab <= 0:
        raise invalid("restrict_vocab", f"restrict_vocab must be positive, got {restrict_vocab}")
    vocab = space.case_folded_vocabulary(restrict_vocab, case_sensitive)
    fold = (lambda w: w) if case_sensitive else str.upper
    correct = [0] * len(analogies.sections)
    incorrect = [0] * len(analogies.sections)
    oov = 0
    asked: list[tuple[int, tuple[str, str, str, str], tuple[int, int, int, int]]] = []
    for q in analogies.questions:
        folded = tuple(fold(w) for w in q.words)
        ids = tuple(vocab.get(w, -1) for w in folded)
        if min(ids) < 0:
            oov += 1
            if dummy4unknown:
                incorrect[q.section] += 1
            continue
        asked.append((q.section, folded, ids))  # type: ignore[arg-type]
    base = space.unit[: min(restrict_vocab, space.size)]
    for start in range(0, len(asked), _CHUNK):
        chunk = asked[start : start + _CHUNK]
        ids = np.asarray([c[2] for c in chunk], dtype=np.int64)
        labels = _search(space, base, ids, method)
        for (section, folded, (a, b, c, _)), row in zip(chunk, labels, strict=True):
            inputs = {a, b, c}
            sims = [int(i) for i in row if i >= 0 and int(i) not in inputs][:5]
            ignore = set(folded[:3])
            predicted = None
            for i in sims:
                predicted = fold(space.words[i])
                if predicted in vocab and predicted not in ignore:
                    break
            if predicted == folded[3]:
                correct[section] += 1
            else:
                incorrect[section] += 1
    scores = tuple(SectionScore(name, correct[i], incorrect[i]) for i, name in enumerate(analogies.sections))
    total = SectionScore(TOTAL, sum(correct), sum(incorrect))
    return AnalogyReport(scores, total, len(analogies.questions), oov, analogies.skipped_lines)


def _search(space: WordVectors, base: np.ndarray, ids: np.ndarray, method: Method) -> np.ndarray:
    """Top 8 (5 + up to 3 inputs) for b - a + c, as gensim most_similar(positive=[b, c], negative=[a])."""
    unit = space.unit
    if method is Method.COSADD:
        # gensim sums b, c, -a in that order, divides by 3, then normalises.
        means = (unit[ids[:, 1]].astype(np.float64) + unit[ids[:, 2]] - unit[ids[:, 0]]) / 3.0
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        queries = np.ascontiguousarray((means / norms).astype(np.float32))
        return knn(queries, base, 8)[1]
    n = ids.shape[0]
    terms = unit[ids[:, [1, 2, 0]].reshape(-1)]
    batch = TermBatch(
        vectors=np.ascontiguousarray(terms, dtype=np.float32),
        weights=np.tile(np.array([1.0, 1.0, -1.0]), n),
        owner=np.repeat(np.arange(n), 3),
        starts=np.arange(0, 3 * n, 3),
        inputs=[],
        resolved=[],
    )
    return cosmul_top(batch, base, 8)[1]
