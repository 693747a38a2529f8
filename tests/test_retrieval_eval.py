"""The retrieval evaluation the benchmarks use (benchmarks/ireval.py): nDCG@k and recall@k as trec_eval defines them,
checked by hand; TREC run files written and read back."""

import math

import pytest

from benchmarks import ireval  # not the benchmarks folder on sys.path: its milvus.py would shadow the milvus package

QRELS = {"q1": {"d1": 2, "d2": 1, "d9": 0}, "q2": {"d5": 3}, "q3": {"d7": 0}}


def test_ndcg_by_hand():
    run = {"q1": [("d2", 9.0), ("d1", 8.0), ("d3", 7.0)], "q2": [("d4", 1.0), ("d5", 0.5)]}
    # q1: DCG = (2^1 - 1)/log2(2) + (2^2 - 1)/log2(3); ideal: 3/log2(2) + 1/log2(3)
    q1 = (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3))
    # q2: the one relevant document at rank 2: (2^3 - 1)/log2(3) against 7/log2(2)
    q2 = 1 / math.log2(3)
    # q3 has no relevant document: not counted
    assert ireval.ndcg_at(run, QRELS, 10) == pytest.approx((q1 + q2) / 2)
    assert ireval.ndcg_at(run, QRELS, 1) == pytest.approx((1 / 3 + 0) / 2)


def test_recall_by_hand_and_a_missing_query_scores_zero():
    run = {"q1": [("d2", 1.0), ("d3", 0.9), ("d1", 0.8)]}
    assert ireval.recall_at(run, QRELS, 2) == pytest.approx((1 / 2 + 0) / 2)
    assert ireval.recall_at(run, QRELS, 100) == pytest.approx((1 + 0) / 2)
    assert ireval.ndcg_at({}, QRELS) == 0.0


def test_trec_run_files_round_trip(tmp_path):
    run = {"1": [("d2", 3.5), ("d1", 1.25)], "2": [("d9", 0.5)]}
    path = tmp_path / "runs" / "dense.trec"
    ireval.write_trec(path, run, "embedsvc-dense")
    assert path.read_text().splitlines()[0] == "1 Q0 d2 1 3.500000 embedsvc-dense"
    assert ireval.read_trec(path) == run


def test_beir_files_are_read_as_the_benchmarks_read_them(tmp_path):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "title": "A title", "text": "the text"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "7", "text": "a query"}\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n7\t1\t2\n")
    corpus = ireval.load_corpus(tmp_path / "corpus.jsonl")
    assert (corpus.ids, corpus.texts) == (["1"], ["A title the text"])
    assert ireval.load_queries(tmp_path / "queries.jsonl") == {"7": "a query"}
    assert ireval.load_qrels(tmp_path / "qrels.tsv") == {"7": {"1": 2}}


def test_synthetic_text_is_seeded_and_sized():
    corpus = ireval.Corpus(["a", "b"], ["wing flow wing", "shock wave drag lift"])
    docs = ireval.synthetic(corpus, 50)
    assert docs == ireval.synthetic(corpus, 50) and len(docs) == 50
    assert {w for d in docs for w in d.split()} <= {"wing", "flow", "shock", "wave", "drag", "lift"}


def test_the_readme_reference_figures_are_reproduced():
    folder = ireval.find_cranfield()
    if folder is None:
        pytest.skip("shared/data/cranfield is not beside this checkout")
    pytest.importorskip("bm25s")
    corpus = ireval.load_corpus(folder / "corpus.jsonl")
    queries = ireval.load_queries(folder / "queries-dev.jsonl")
    qrels = ireval.load_qrels(folder / "qrels-dev.tsv")
    run = ireval.reference_bm25(corpus, queries)
    assert (round(ireval.ndcg_at(run, qrels), 3), round(ireval.recall_at(run, qrels), 3)) == (0.544, 0.730)
