"""How text becomes keyword terms, per language: tokens of two or more word characters, Unicode lowercase, the
language's stopwords out, its Snowball stemmer.

Token for token this is the analysis of the reference BM25 (bm25s with PyStemmer: scikit-learn's token pattern
`\\w\\w+`, Lucene's English stopwords, Snowball English), so keyword scores differ from the reference only by the
scorer. Tokens longer than 64 bytes (hashes, encoded data) are not indexed.
"""

from __future__ import annotations

from functools import cache

import tantivy

from embedsvc.errors import EmbedsvcError, Reason

DEFAULT_LANGUAGE = "english"
NO_LANGUAGE = "none"
# Languages with a Snowball stemmer and a stopword list in tantivy, and those with a stemmer only.
WITH_STOPWORDS = (
    "english",
    "danish",
    "dutch",
    "finnish",
    "french",
    "german",
    "hungarian",
    "italian",
    "norwegian",
    "portuguese",
    "russian",
    "spanish",
    "swedish",
)
STEMMER_ONLY = ("arabic", "greek", "romanian", "tamil", "turkish")
LANGUAGES = (*WITH_STOPWORDS, *STEMMER_ONLY, NO_LANGUAGE)
TOKEN_PATTERN = r"\w\w+"  # noqa: S105 - a regular expression, not a secret
MAX_TOKEN_BYTES = 64


def check_language(language: str, field: str = "keyword.language") -> str:
    """The language, or "english" when empty; INVALID_VALUE naming the choices otherwise."""
    language = language or DEFAULT_LANGUAGE
    if language not in LANGUAGES:
        raise EmbedsvcError(
            Reason.INVALID_VALUE,
            f"unknown keyword language {language!r}; choose one of {', '.join(LANGUAGES)}",
            field=field,
            metadata={"choices": ",".join(LANGUAGES)},
        )
    return language


def analyzer(language: str) -> tantivy.TextAnalyzer:
    """The analyzer of a (checked) language."""
    builder = (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(TOKEN_PATTERN))
        .filter(tantivy.Filter.remove_long(MAX_TOKEN_BYTES + 1))
        .filter(tantivy.Filter.lowercase())
    )
    if language in WITH_STOPWORDS:
        builder = builder.filter(tantivy.Filter.stopword(language))
    if language != NO_LANGUAGE:
        builder = builder.filter(tantivy.Filter.stemmer(language))
    return builder.build()


@cache
def _shared(language: str) -> tantivy.TextAnalyzer:
    return analyzer(language)


def terms(text: str, language: str) -> list[str]:
    """A text's terms in a (checked) language, in order (what the index stores and what a query matches): the
    Milvus backend sends these to Milvus's BM25, so both backends search the same terms."""
    return list(_shared(language).analyze(text))
