"""EvaluateAnalogies counts exactly as gensim evaluate_word_analogies, on the real questions-words.txt."""

import pytest

from embedsvc.core.words.analogies import evaluate_analogies, parse_analogies
from embedsvc.core.words.arithmetic import Method
from embedsvc.errors import EmbedsvcError, Reason
from tests.conftest import QUESTIONS_WORDS, gensim_reference


def assert_matches_gensim(report, gensim_sections):
    *sections, total = gensim_sections
    assert [(s.name, s.correct, s.incorrect) for s in report.sections] == [
        (s["section"], len(s["correct"]), len(s["incorrect"])) for s in sections
    ]
    assert (report.total.correct, report.total.incorrect) == (len(total["correct"]), len(total["incorrect"]))


@pytest.fixture(scope="module")
def questions():
    return parse_analogies(QUESTIONS_WORDS.read_bytes())


def test_parse_questions_words(questions):
    assert len(questions.sections) == 14
    assert questions.sections[0] == "capital-common-countries"
    assert len(questions.questions) == 19544
    assert questions.questions[0].words == ("Athens", "Greece", "Baghdad", "Iraq")


def test_minilm_static_equals_gensim_on_every_section(minilm, questions):
    report = evaluate_analogies(minilm, questions)
    score, sections = minilm.kv.evaluate_word_analogies(str(QUESTIONS_WORDS))
    assert_matches_gensim(report, sections)
    assert report.total.accuracy == pytest.approx(score)
    assert report.total.accuracy > 0.6  # the model card's figure is 0.665


@pytest.mark.parametrize("name", ["lee-binary", "lee-fasttext"])
@pytest.mark.parametrize(("restrict_vocab", "case_sensitive", "dummy"), [(300_000, False, False), (1000, True, True)])
def test_real_models_equal_gensim(spaces, questions, name, restrict_vocab, case_sensitive, dummy):
    kv = gensim_reference(name)
    report = evaluate_analogies(
        spaces[name], questions, restrict_vocab=restrict_vocab, case_sensitive=case_sensitive, dummy4unknown=dummy
    )
    _, sections = kv.evaluate_word_analogies(
        str(QUESTIONS_WORDS), restrict_vocab=restrict_vocab, case_insensitive=not case_sensitive, dummy4unknown=dummy
    )
    assert_matches_gensim(report, sections)
    assert report.oov_questions > 0


def test_planted_file_and_counting_rules(spaces, tmp_path):
    text = (
        b": royals\n"
        b"man king woman queen\n"
        b"MAN KING WOMAN QUEEN\n"  # case folding finds the lower-case words
        b"man king woman unknownword\n"  # OOV: skipped
        b"too few words\n"  # malformed: skipped line
        b": capitals\n"
        b"france paris italy rome\n"
        b"germany berlin france paris\n"
        b"france paris germany rome\n"  # wrong on purpose
    )
    report = evaluate_analogies(spaces["planted"], parse_analogies(text))
    assert [(s.name, s.correct, s.incorrect) for s in report.sections] == [("royals", 2, 0), ("capitals", 2, 1)]
    assert (report.total.correct, report.total.incorrect) == (4, 1)
    assert (report.questions, report.oov_questions, report.skipped_lines) == (6, 1, 1)
    path = tmp_path / "planted.txt"
    path.write_bytes(text)
    kv = spaces["planted"].kv
    _score, sections = kv.evaluate_word_analogies(str(path))
    assert_matches_gensim(report, sections)
    sensitive = evaluate_analogies(spaces["planted"], parse_analogies(text), case_sensitive=True)
    assert sensitive.oov_questions == 2
    dummy = evaluate_analogies(spaces["planted"], parse_analogies(text), dummy4unknown=True)
    assert dummy.total.incorrect == 2


def test_cosmul_solves_planted_analogies(spaces):
    report = evaluate_analogies(
        spaces["planted"],
        parse_analogies(b": x\nman king woman queen\nfrance paris italy rome\n"),
        method=Method.COSMUL,
    )
    assert report.total.accuracy == 1.0


@pytest.mark.parametrize(
    ("data", "line"),
    [(b"man king woman queen\n", "1"), (b": s\nman king \xff\xfe queen\n", "2"), (b"\n\n", None)],
)
def test_bad_files(data, line):
    with pytest.raises(EmbedsvcError) as info:
        parse_analogies(data)
    assert info.value.reason is Reason.INVALID_ANALOGY_FILE
    assert info.value.metadata.get("line") == line


def test_blank_lines_before_the_first_header_are_tolerated():
    parsed = parse_analogies(b"\n: s\na b c d\n")
    assert len(parsed.questions) == 1 and parsed.skipped_lines == 0


def test_restrict_vocab_must_be_positive(spaces):
    with pytest.raises(EmbedsvcError) as info:
        evaluate_analogies(spaces["planted"], parse_analogies(b": s\na b c d\n"), restrict_vocab=0)
    assert info.value.reason is Reason.INVALID_VALUE
