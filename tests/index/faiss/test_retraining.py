"""An IVF collection trained at a small count is trained again once it has grown past the sample it was trained on
(contents.Trained, training.py): in the background, as a rebuild, with writes going on; recorded in checkpoints so
that a restart does not train again; older checkpoints without the record still open. Real FAISS, small sizes."""

import json

import numpy as np
import pytest

from embedsvc.index.faiss import checkpoint, contents, training, vector_index
from embedsvc.index.faiss.contents import Trained
from embedsvc.index.faiss.log import Upsert
from embedsvc.index.faiss.store import CollectionStore
from embedsvc.index.faiss.vector_index import VectorIndex
from embedsvc.index.types import CollectionConfig, IndexKind, IndexParams, Metric, Quantization
from tests.index.vectors import brute_force, clustered

D = 32
NLIST = 16  # trained first at 39 x 16 = 624 vectors; a full sample is 100,000
DATA, QUERIES = np.split(clustered(4200, D, centers=64, seed=5), [4000])  # queries: further points of the clusters


def ivf(name, quantization=Quantization.INT8, **params):
    params_ = IndexParams(IndexKind.IVF_FLAT, nlist=NLIST, quantization=quantization, **params)
    return CollectionConfig(name, D, Metric.L2, params_.resolved(D))


def load(collection, start, end, *, prefix=""):
    for s in range(start, end, 500):
        e = min(s + 500, end)
        ids = [f"{prefix}{i}" for i in range(s, e)]
        collection.upsert(Upsert(ids, DATA[s:e], [{}] * len(ids), [""] * len(ids)))


def recall(collection, n, nprobe):
    """recall@10 of the ANN search at `nprobe` against brute force over the first n rows."""
    exact, _ = brute_force(DATA[:n], QUERIES, 10, Metric.L2)
    hits, was_exact = collection.search(QUERIES, 10, nprobe=nprobe, exact=False)
    assert not was_exact
    found = [[int(h.id) for h in row] for row in hits]
    return np.mean([len(set(f) & set(e.tolist())) / 10 for f, e in zip(found, exact, strict=True)])


@pytest.fixture
def store(tmp_path):
    s = CollectionStore(tmp_path, 1 << 30)
    yield s
    s.close_all(checkpoint=False)


@pytest.fixture
def rebuilds(monkeypatch):
    """The rebuilds that run (a retrain is one), by collection name."""
    done: list[str] = []
    original = training.rebuild

    def counted(contents_, *args, **kwargs):
        original(contents_, *args, **kwargs)
        done.append(contents_.config.name)

    monkeypatch.setattr(training, "rebuild", counted)
    return done


def test_retraining_is_geometric_bounded_and_stops_at_a_full_sample():
    params = IndexParams(IndexKind.IVF_FLAT, nlist=512, quantization=Quantization.INT8).resolved(128)
    assert (params.train_size, params.train_rows) == (19_968, 131_072)
    trained, trainings = Trained(params.train_size, params.train_size), []
    for count in range(params.train_size, 10_000_000, 1000):  # the collection grows; each training as it comes
        at = trained.retrain_at(params)
        if at and count >= at:
            trained = Trained(count, min(count, params.train_rows))
            trainings.append(count)
    # x4 while a full sample is more than 4x away (the first count past 79,872), then x2 to reach it (past 159,936);
    # never again past 2 x train_rows.
    assert trainings == [79_968, 159_968]
    assert trained.sample == params.train_rows and trained.retrain_at(params) == 0
    # Not IVF, or trained on a full sample already: never.
    hnsw = IndexParams(IndexKind.HNSW, quantization=Quantization.INT8).resolved(128)
    assert Trained(1000, 1000).retrain_at(hnsw) == 0
    assert Trained(500_000, params.train_rows).retrain_at(params) == 0


def test_an_ivf_collection_trains_again_once_grown_and_searches_as_well(store, rebuilds, monkeypatch):
    # Recall at one nprobe is compared below, so the lists' balancing (which trades codes scanned per list probed
    # against recall at a given nprobe: test_balance.py) is off for both collections.
    monkeypatch.setattr(vector_index, "BALANCE_UP_TO", 0)
    grown = store.create(ivf("grown"))
    load(grown, 0, 700)
    grown.wait_for_training()
    first = grown.info()["training"]
    assert first == {"count": 700, "sample": 700, "retrain_at": 2800} and rebuilds == ["grown"]
    load(grown, 700, 2799)
    grown.wait_for_training()
    assert grown.info()["training"]["count"] == 700 and rebuilds == ["grown"]  # 2,799 < 2,800: not yet
    load(grown, 2799, 4000)
    grown.wait_for_training()
    info = grown.info()
    assert rebuilds == ["grown", "grown"] and info["count"] == 4000
    trained = info["training"]
    assert trained["count"] >= 2800 and trained["sample"] == trained["count"]
    assert trained["retrain_at"] == max(2 * trained["count"], min(4 * trained["count"], 100_000))
    assert info["calibration"] is not None and info["calibration"].count >= trained["count"]  # measured again

    # The same data in a collection that is never trained again (the growth rule switched off): at the same
    # nprobe, the retrained index finds at least as many of the exact neighbours.
    monkeypatch.setattr(contents, "RETRAIN_GROWTH", 10**9)
    monkeypatch.setattr(contents, "RETRAIN_GROWTH_LAST", 10**9)
    stale = store.create(ivf("stale"))
    load(stale, 0, 700)
    stale.wait_for_training()
    load(stale, 700, 4000)
    stale.wait_for_training()
    assert stale.info()["training"]["count"] == 700
    for nprobe in (1, 2):
        assert recall(grown, 4000, nprobe) >= recall(stale, 4000, nprobe)  # measured: 0.9995 against 0.9955, 0.9985
    # Every id present, every hit a live item, the contract as before.
    hits, _ = grown.search(DATA[:50], 1)
    assert [h[0].id for h in hits] == [str(i) for i in range(50)]
    assert all(item is not None for item in grown.get([str(i) for i in range(4000)], with_vectors=False))


def test_writes_made_while_it_trains_again_are_kept(store, rebuilds):
    collection = store.create(ivf("busy", Quantization.NONE))
    load(collection, 0, 700)
    collection.wait_for_training()
    during = clustered(3, D, centers=64, seed=11)
    seen: list[bool] = []
    check_open = collection._check_open

    def write_meanwhile():
        # The rebuild's check between its steps, on the background thread: write, replace and delete once.
        if not seen and collection.rebuilding:
            collection.upsert(Upsert(["d0", "d1", "5"], during, [{"during": True}] * 3, [""] * 3))
            collection.delete(["7"])
            seen.append(collection.search(during[:1], 1)[0][0][0].id == "d0")
        check_open()

    collection._check_open = write_meanwhile
    load(collection, 700, 3000)
    collection.wait_for_training()
    assert seen == [True] and rebuilds == ["busy", "busy"]
    assert collection.info()["training"]["count"] >= 2800
    assert collection.count == 3000 + 2 - 1
    hits, _ = collection.search(np.concatenate([during, DATA[7:8]]), 1, exact=False)
    assert [h[0].id for h in hits[:3]] == ["d0", "d1", "5"] and hits[3][0].id != "7"
    (five,) = collection.get(["5"], with_vectors=False)
    assert five.metadata == {"during": True} and collection.get(["7"], with_vectors=False) == [None]


def _manifest(tmp_path, name):
    (path,) = sorted((tmp_path / "collections" / name).glob(f"{checkpoint.PREFIX}*"))
    return path / checkpoint.MANIFEST


def test_a_restart_keeps_the_training_and_does_not_train_again(tmp_path, rebuilds):
    store = CollectionStore(tmp_path, 1 << 30)
    collection = store.create(ivf("kept"))
    load(collection, 0, 700)
    collection.wait_for_training()
    load(collection, 700, 3000)
    collection.wait_for_training()
    trained = collection.info()["training"]
    assert rebuilds == ["kept", "kept"] and trained["count"] >= 2800
    load(collection, 3000, 3100, prefix="after")  # in the log only
    store.close_all(checkpoint=True)
    assert json.loads(_manifest(tmp_path, "kept").read_bytes())["training"] == {
        "count": trained["count"],
        "sample": trained["sample"],
    }

    again = CollectionStore(tmp_path, 1 << 30)
    again.recover_all()
    reopened = again.get("kept")
    reopened.wait_for_training()
    assert reopened.info()["training"] == trained and rebuilds == ["kept", "kept"]
    assert reopened.count == 3100 and reopened.search(DATA[:1], 1)[0][0][0].id == "0"
    again.close_all(checkpoint=False)


def test_a_checkpoint_without_the_record_opens_and_one_grown_past_it_trains_at_open(tmp_path, rebuilds):
    store = CollectionStore(tmp_path, 1 << 30)
    for name in ("old", "behind"):
        collection = store.create(ivf(name))
        load(collection, 0, 3000)
        collection.wait_for_training()
    store.close_all(checkpoint=True)
    assert sorted(rebuilds) == ["behind", "old"]
    rebuilds.clear()
    # "old": written before the training was recorded. "behind": trained at 700 and grown to 3,000, then stopped
    # before the retrain ran. (The manifest lists the other files' checksums, not its own.)
    for name, training_ in (("old", None), ("behind", {"count": 700, "sample": 700})):
        path = _manifest(tmp_path, name)
        manifest = json.loads(path.read_bytes())
        if training_ is None:
            del manifest["training"]
        else:
            manifest["training"] = training_
        path.write_text(json.dumps(manifest))

    again = CollectionStore(tmp_path, 1 << 30)
    again.recover_all()
    old, behind = again.get("old"), again.get("behind")
    old.wait_for_training()
    behind.wait_for_training()
    # Taken as trained on what it held: no training at open, the next at 4x.
    assert old.info()["training"] == {"count": 3000, "sample": 3000, "retrain_at": 12_000}
    assert old.search(DATA[:1], 1, exact=False)[0][0][0].id == "0"
    assert rebuilds == ["behind"] and behind.info()["training"]["count"] == 3000
    again.close_all(checkpoint=False)


def test_explicit_parameters_are_kept_and_kinds_without_lists_are_not_trained_again(store, rebuilds):
    collection = store.create(ivf("explicit", nprobe=3))
    load(collection, 0, 700)
    collection.wait_for_training()
    load(collection, 700, 3000)
    collection.wait_for_training()
    assert rebuilds == ["explicit", "explicit"]
    assert collection.config.index.nlist == NLIST and collection.config.index.nprobe == 3
    assert collection._contents.index.index.nlist == NLIST
    # A quantised FLAT index (trained ranges, no lists): its training is recorded, never redone by growth.
    flat = store.create(
        CollectionConfig("sq8", D, Metric.L2, IndexParams(IndexKind.FLAT, quantization=Quantization.INT8).resolved(D))
    )
    load(flat, 0, 4000)
    flat.wait_for_training()
    assert flat.info()["training"]["retrain_at"] == 0 and rebuilds.count("sq8") == 1  # its first training


@pytest.mark.parametrize("metric", [Metric.L2, Metric.COSINE])
def test_centroids_are_the_most_even_of_several_kmeans_runs(metric):
    """The first run is FAISS's own (same parameters and seed): the lists are never less even than FAISS's."""
    sample = clustered(6000, D, centers=64, seed=7)
    if metric is Metric.COSINE:
        sample /= np.linalg.norm(sample, axis=1, keepdims=True)
    params = IndexParams(IndexKind.IVF_FLAT, nlist=32, quantization=Quantization.INT8).resolved(D)
    ours = VectorIndex(params, D, metric)
    ours.train(sample, restarts=5)
    plain = VectorIndex(params, D, metric).index
    plain.train(sample)

    def imbalance(index):
        _, lists = index.quantizer.search(sample, 1)
        sizes = np.bincount(lists[:, 0], minlength=32).astype(float)
        return 32 * (sizes**2).sum() / sizes.sum() ** 2

    assert ours.index.is_trained and ours.index.quantizer.ntotal == 32
    assert imbalance(ours.index) <= imbalance(plain) + 1e-9
    ours.add(np.arange(len(sample)), sample)  # and the index works as before: a row finds itself
    _, labels = ours.search(sample[:20], 1, None, nprobe=4)
    assert labels[:, 0].tolist() == list(range(20))
