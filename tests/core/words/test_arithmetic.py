"""3CosAdd and 3CosMul against gensim on real vectors: same words in the same order, scores within 1e-5."""

import numpy as np
import pytest

from embedsvc.core.expression import Expression, Term, TermKind
from embedsvc.core.words.arithmetic import Method, Options, check_options, evaluate
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.limits import Limits
from tests.conftest import gensim_reference


def words_expr(positive, negative=(), weights=None):
    terms = [Term(TermKind.WORD, 1.0, w) for w in positive] + [Term(TermKind.WORD, -1.0, w) for w in negative]
    if weights is not None:
        terms = [Term(TermKind.WORD, w, t.value) for t, w in zip(terms, weights, strict=True)]
    return Expression(tuple(terms))


# Batched BLAS and gensim's per-query dot product sum in different orders, so two words whose float32 scores differ by
# about 1e-7 may come out in either order. Only such exact ties may differ; every other position must match.
TIE = 1e-6


def assert_same(ours, theirs):
    words = [h.word for h in ours.hits]
    scores = [h.score for h in ours.hits]
    assert len(words) == len(theirs)
    np.testing.assert_allclose(scores, [s for _, s in theirs], atol=1e-5)
    for i, (word, (their_word, their_score)) in enumerate(zip(words, theirs, strict=True)):
        if word != their_word:
            assert abs(scores[i] - their_score) < TIE, f"position {i}: {word} != {their_word} and not a tie"


def sample_queries(kv, n, seed=0):
    """Random analogy-shaped queries over the model's own vocabulary (the 2,000 most frequent words)."""
    rng = np.random.default_rng(seed)
    top = kv.index_to_key[: min(2000, len(kv))]
    return [tuple(str(w) for w in rng.choice(top, size=3, replace=False)) for _ in range(n)]


@pytest.mark.parametrize("name", ["glove", "lee-text", "lee-binary", "lee-fasttext"])
def test_cosadd_batch_equals_gensim_most_similar(spaces, name):
    kv = gensim_reference(name)
    queries = sample_queries(kv, 200)
    expressions = [words_expr([b, c], [a]) for a, b, c in queries]
    results = evaluate(spaces[name], expressions, Options(top_n=10))
    for (a, b, c), result in zip(queries, results, strict=True):
        assert_same(result, kv.most_similar(positive=[b, c], negative=[a], topn=10))


def test_cosadd_on_minilm_static(minilm):
    kv = minilm.kv
    queries = [("man", "king", "woman"), ("france", "paris", "italy"), ("walk", "walking", "swim")]
    queries += sample_queries(kv, 300, seed=1)
    results = evaluate(minilm, [words_expr([b, c], [a]) for a, b, c in queries], Options(top_n=10))
    for (a, b, c), result in zip(queries, results, strict=True):
        assert_same(result, kv.most_similar(positive=[b, c], negative=[a], topn=10))
    assert results[0].hits[0].word == "queen"


@pytest.mark.parametrize("name", ["glove", "lee-binary", "lee-fasttext"])
def test_cosmul_equals_gensim(spaces, name):
    kv = gensim_reference(name)
    queries = sample_queries(kv, 100, seed=2)
    results = evaluate(spaces[name], [words_expr([b, c], [a]) for a, b, c in queries], Options(Method.COSMUL, 10))
    for (a, b, c), result in zip(queries, results, strict=True):
        assert_same(result, kv.most_similar_cosmul(positive=[b, c], negative=[a], topn=10))


def test_weights_restrict_vocab_and_raw_vectors_match_gensim(spaces):
    kv = gensim_reference("lee-binary")
    space = spaces["lee-binary"]
    vec = kv.get_vector("government") * 3.0  # raw vectors are used as given, not normalised
    expr = Expression(
        (
            Term(TermKind.WORD, 0.5, "minister"),
            Term(TermKind.WORD, -0.25, "police"),
            Term(TermKind.VECTOR, 2.0, vector=vec),
        )
    )
    (ours,) = evaluate(space, [expr], Options(top_n=15, restrict_vocab=500))
    theirs = kv.most_similar(positive=[("minister", 0.5), ("police", -0.25), (vec, 2.0)], topn=15, restrict_vocab=500)
    assert_same(ours, theirs)
    assert all(space.index[h.word] < 500 for h in ours.hits)


def test_single_word_is_most_similar(spaces):
    kv = gensim_reference("glove")
    (ours,) = evaluate(spaces["glove"], [words_expr(["the"])], Options(top_n=5))
    assert_same(ours, kv.most_similar("the", topn=5))


def test_keep_inputs_marks_them(spaces):
    space = spaces["planted"]
    (plain,) = evaluate(space, [words_expr(["king", "woman"], ["man"])], Options(top_n=5))
    (kept,) = evaluate(space, [words_expr(["king", "woman"], ["man"])], Options(top_n=5, keep_inputs=True))
    assert plain.hits[0].word == "queen"
    assert not any(h.is_input for h in plain.hits)
    assert {h.word for h in kept.hits if h.is_input} <= {"king", "woman", "man"}
    assert any(h.is_input for h in kept.hits)
    assert next(h.word for h in kept.hits if not h.is_input) == "queen"


@pytest.mark.parametrize(
    ("positive", "negative", "answer"),
    [
        (["king", "woman"], ["man"], "queen"),
        (["paris", "italy"], ["france"], "rome"),
        (["boy", "queen"], ["king"], "girl"),
        (["berlin", "france"], ["germany"], "paris"),
    ],
)
@pytest.mark.parametrize("method", [Method.COSADD, Method.COSMUL])
def test_planted_analogies(spaces, positive, negative, answer, method):
    (result,) = evaluate(spaces["planted"], [words_expr(positive, negative)], Options(method, 3))
    assert result.hits[0].word == answer


def test_query_vector_and_contributions(spaces):
    kv = gensim_reference("glove")
    space = spaces["glove"]
    (result,) = evaluate(
        space,
        [words_expr(["the", "and"], ["a"])],
        Options(top_n=5, return_query_vector=True, return_contributions=True),
    )
    expected = kv.get_mean_vector(["the", "and", "a"], [1.0, 1.0, -1.0], pre_normalize=True, post_normalize=True)
    np.testing.assert_allclose(result.query_vector, expected, atol=1e-6)
    for hit in result.hits:
        assert len(hit.contributions) == 3
        assert sum(hit.contributions) == pytest.approx(hit.score, abs=1e-5)
        # each share is weight * cos(hit, term) / (sum|w| * |mean|): the sign follows the weight's for similar words
        cos = [kv.similarity(hit.word, w) for w in ("the", "and", "a")]
        ratios = [c / (s * w) for c, s, w in zip(hit.contributions, cos, (1, 1, -1), strict=True)]
        assert max(ratios) == pytest.approx(min(ratios), rel=1e-4)


def test_cosmul_contributions_are_factors(spaces):
    (result,) = evaluate(
        spaces["planted"],
        [words_expr(["king", "woman"], ["man"])],
        Options(Method.COSMUL, 3, return_contributions=True),
    )
    for hit in result.hits:
        pos = hit.contributions[0] * hit.contributions[1]
        assert pos / (hit.contributions[2] + 1e-6) == pytest.approx(hit.score, rel=1e-4)


def test_batch_of_mixed_lengths(spaces):
    space = spaces["lee-text"]
    exprs = [
        words_expr(["the"]),
        words_expr(["government", "minister"], ["police"]),
        words_expr(["in", "of", "a", "to"]),
    ]
    batch = evaluate(space, exprs, Options(top_n=7))
    single = [evaluate(space, [e], Options(top_n=7))[0] for e in exprs]
    for b, s in zip(batch, single, strict=True):
        assert [h.word for h in b.hits] == [h.word for h in s.hits]


def test_top_n_larger_than_vocabulary(spaces):
    space = spaces["planted"]
    (result,) = evaluate(space, [words_expr(["king"])], Options(top_n=1000))
    assert len(result.hits) == space.size - 1


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        (words_expr(["king"], ["king"]), Reason.INVALID_EXPRESSION),  # cancels to zero
        (words_expr(["king", "zzzunknown", "qqq"]), Reason.OUT_OF_VOCABULARY),
        (Expression((Term(TermKind.TEXT, 1.0, "a text"),)), Reason.TERM_KIND_NOT_SUPPORTED),
        (Expression((Term(TermKind.VECTOR, 1.0, vector=np.ones(3, np.float32)),)), Reason.DIMENSION_MISMATCH),
        (
            Expression((Term(TermKind.VECTOR, 1.0, vector=np.ones(32, np.float32), space="model:x@sha256:0"),)),
            Reason.SPACE_MISMATCH,
        ),
        (Expression((Term(TermKind.VECTOR, 1.0, vector=np.full(32, np.nan, np.float32)),)), Reason.NOT_FINITE),
    ],
)
def test_bad_expressions(spaces, expression, reason):
    with pytest.raises(EmbedsvcError) as info:
        evaluate(spaces["planted"], [expression], Options())
    assert info.value.reason is reason
    assert info.value.field.startswith("expressions[0]")


def test_oov_lists_every_missing_word(spaces):
    with pytest.raises(EmbedsvcError) as info:
        evaluate(spaces["planted"], [words_expr(["king", "zz1"]), words_expr(["zz2", "queen"])], Options())
    assert info.value.metadata["words"] == "zz1 zz2"
    assert info.value.field == "expressions[0].terms[1]"


def test_fasttext_embeds_oov_words_from_subwords(spaces):
    kv = gensim_reference("lee-fasttext")
    (result,) = evaluate(spaces["lee-fasttext"], [words_expr(["governmentalism"])], Options(top_n=5))
    assert not result.terms[0].in_vocabulary
    assert_same(result, kv.most_similar("governmentalism", topn=5))


def test_cosmul_needs_a_positive_term(spaces):
    with pytest.raises(EmbedsvcError) as info:
        evaluate(spaces["planted"], [words_expr([], ["king"])], Options(Method.COSMUL))
    assert info.value.reason is Reason.INVALID_EXPRESSION


@pytest.mark.parametrize(
    ("options", "reason", "field"),
    [
        (Options(top_n=0), Reason.INVALID_VALUE, "top_n"),
        (Options(top_n=1001), Reason.LIMIT_EXCEEDED, "top_n"),
        (Options(restrict_vocab=-1), Reason.INVALID_VALUE, "restrict_vocab"),
        (Options(Method.COSMUL, return_query_vector=True), Reason.INVALID_VALUE, "return_query_vector"),
    ],
)
def test_option_checks(options, reason, field):
    with pytest.raises(EmbedsvcError) as info:
        check_options(options, Limits())
    assert (info.value.reason, info.value.field) == (reason, field)
