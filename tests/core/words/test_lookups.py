"""Embed, nearest, similarity and the odd one out against gensim on real vectors."""

import numpy as np
import pytest

from embedsvc.core.words import lookups as words
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.limits import Limits
from tests.conftest import gensim_reference

LIMITS = Limits()


@pytest.mark.parametrize("name", ["glove", "lee-text", "lee-binary", "lee-fasttext"])
def test_embed_equals_gensim(spaces, name):
    kv = gensim_reference(name)
    sample = kv.index_to_key[:50]
    raw = words.embed(spaces[name], sample, LIMITS, normalize=False)
    unit = words.embed(spaces[name], sample, LIMITS, normalize=True)
    np.testing.assert_array_equal(raw.vectors, np.vstack([kv.get_vector(w) for w in sample]))
    np.testing.assert_allclose(unit.vectors, np.vstack([kv.get_vector(w, norm=True) for w in sample]), atol=1e-7)
    assert all(raw.in_vocabulary)


def test_fasttext_oov_from_subwords(spaces):
    kv = gensim_reference("lee-fasttext")
    result = words.embed(spaces["lee-fasttext"], ["the", "governmentalism"], LIMITS, normalize=False)
    assert result.in_vocabulary == (True, False)
    np.testing.assert_allclose(result.vectors[1], kv.get_vector("governmentalism"), atol=1e-6)


def test_oov_lists_all_missing_words(spaces):
    with pytest.raises(EmbedsvcError) as info:
        words.embed(spaces["glove"], ["the", "zzqx", "and", "qqzx"], LIMITS, normalize=False)
    assert info.value.reason is Reason.OUT_OF_VOCABULARY
    assert info.value.metadata["words"] == "zzqx qqzx"


def test_oov_words_whose_lower_case_is_known_hint_at_it(spaces):
    """The glove vocabulary is lower-case: `The` is out of it, `the` in it; `Zzqx` has no lower-case form in it."""
    with pytest.raises(EmbedsvcError) as info:
        words.embed(spaces["glove"], ["The", "Zzqx", "and"], LIMITS, normalize=False)
    assert info.value.reason is Reason.OUT_OF_VOCABULARY
    assert info.value.metadata == {"model": "glove", "words": "The Zzqx", "suggestions": "the", "hint": "lower-case"}
    assert "lower-case" in info.value.message and "'the'" in info.value.message
    with pytest.raises(EmbedsvcError) as info:
        words.embed(spaces["glove"], ["zzqx"], LIMITS, normalize=False)
    assert "hint" not in info.value.metadata


def test_nearest_equals_gensim(spaces):
    kv = gensim_reference("lee-binary")
    lists = words.nearest(spaces["lee-binary"], ["government", "police"], LIMITS, top_n=8, restrict_vocab=0)
    for word, hits in zip(["government", "police"], lists, strict=True):
        theirs = kv.most_similar(word, topn=8)
        assert [w for w, _ in hits] == [w for w, _ in theirs]
        np.testing.assert_allclose([s for _, s in hits], [s for _, s in theirs], atol=1e-5)


def test_nearest_errors_name_the_request_field(spaces):
    with pytest.raises(EmbedsvcError) as info:
        words.nearest(spaces["glove"], ["the", "zzqx"], LIMITS, top_n=3, restrict_vocab=0)
    assert info.value.field == "words[1]"


def test_similarity_equals_gensim(spaces):
    kv = gensim_reference("glove")
    pairs = [("the", "and"), ("a", "the"), ("and", "and")]
    sims = words.similarity(spaces["glove"], pairs, LIMITS)
    np.testing.assert_allclose(sims, [kv.similarity(a, b) for a, b in pairs], atol=1e-6)


def test_doesnt_match_equals_gensim(minilm):
    sample = ["breakfast", "cereal", "dinner", "lunch"]
    ranking = words.doesnt_match(minilm, sample, LIMITS)
    assert ranking.odd_one_out == minilm.kv.doesnt_match(sample) == "cereal"
    theirs = minilm.kv.rank_by_centrality(sample)
    assert [w for w, _ in ranking.ranking] == [w for _, w in theirs]
    np.testing.assert_allclose([s for _, s in ranking.ranking], [s for s, _ in theirs], atol=1e-6)


@pytest.mark.parametrize(
    ("call", "reason", "field"),
    [
        (lambda s: words.embed(s, [], LIMITS, normalize=False), Reason.MISSING_FIELD, "words"),
        (lambda s: words.embed(s, ["king", ""], LIMITS, normalize=False), Reason.MISSING_FIELD, "words[1]"),
        (lambda s: words.embed(s, ["x" * 513], LIMITS, normalize=False), Reason.LIMIT_EXCEEDED, "words[0]"),
        (lambda s: words.embed(s, ["king"] * 10_001, LIMITS, normalize=False), Reason.LIMIT_EXCEEDED, "words"),
        (lambda s: words.doesnt_match(s, ["king"], LIMITS), Reason.INVALID_VALUE, "words"),
        (lambda s: words.similarity(s, [], LIMITS), Reason.MISSING_FIELD, "pairs"),
        (lambda s: words.similarity(s, [("king", "")], LIMITS), Reason.MISSING_FIELD, "pairs[0].second"),
        (lambda s: words.nearest(s, ["king"], LIMITS, top_n=0, restrict_vocab=0), Reason.INVALID_VALUE, "top_n"),
        (
            lambda s: words.nearest(s, ["king"] * 4097, LIMITS, top_n=1, restrict_vocab=0),
            Reason.LIMIT_EXCEEDED,
            "words",
        ),
    ],
)
def test_bad_input(spaces, call, reason, field):
    with pytest.raises(EmbedsvcError) as info:
        call(spaces["planted"])
    assert (info.value.reason, info.value.field) == (reason, field)
