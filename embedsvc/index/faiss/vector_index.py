"""The FAISS index behind a collection, by kind and quantisation, searched through an id bitmap; and how it is kept in
checkpoints.

| kind     | none                          | int8                           | rabitq                        |
|----------|-------------------------------|--------------------------------|-------------------------------|
| FLAT     | none: the store's rows         | IndexScalarQuantizer (SQ8)     | IndexRaBitQ                   |
| HNSW     | IndexHNSWFlat                 | IndexHNSWSQ                    | (refused: L2 only in FAISS)   |
| IVF-FLAT | IndexIVFFlat                  | IndexIVFScalarQuantizer (SQ8)  | IndexIVFRaBitQ                |
| IVF-PQ   | IndexIVFPQ                    |                                |                               |

A FLAT collection without quantisation has no FAISS index: the planner searches the store's rows (memory-mapped from
the checkpoint) exactly, block by block, so the float vectors are held once. Every other kind is a FAISS index whose
ids are the collection's slots (row numbers of its store). Deleted and replaced rows stay in the index as tombstones
until a compaction or a rebuild, and searches pass a bitmap of the allowed slots, so FAISS never returns them.
Quantised kinds need training (the scalar quantiser's ranges, RaBitQ's centre, IVF's centroids): until a collection
holds `train_size` vectors the planner searches its store exactly.

Checkpoints (`keeps_codes` kinds: IVF and quantised FLAT) store each row's codes in its segment (`codes(start,
end)`: FAISS's standalone codes, with the inverted list for IVF) and the trained, empty index once (`template`), so
that opening re-adds codes (`restore`) instead of training and encoding again. HNSW kinds are saved whole
(`serialize`, when rows were added since), their graph being rewritten by every insertion.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import faiss
import numpy as np

from embedsvc.index.exact import faiss_metric, faiss_threads
from embedsvc.index.faiss.balance import balance, imbalance
from embedsvc.index.types import IndexKind, IndexParams, Metric, Quantization

log = logging.getLogger(__name__)

# FAISS's type stubs lack the keyword constructors of its SearchParameters classes, which exist at run time.
_faiss: Any = faiss


class VectorIndex:
    """One FAISS index over a collection's slots (or none: FLAT). Not thread-safe: the collection serialises writes."""

    def __init__(self, params: IndexParams, dimension: int, metric: Metric) -> None:
        self.params = params
        self.dimension = dimension
        self.metric = metric
        self.faiss_metric = faiss_metric(metric)
        self.index: Any = self._build()
        self.trained = self.index is None or bool(self.index.is_trained)
        self._template: bytes | None = None
        self._added = 0  # FLAT: rows "added" (the store holds them)
        self._pending: list[tuple[int, np.ndarray]] = []  # IVF: codes of rows added since the last checkpoint
        self.dirty = False  # HNSW: rows added since it was last serialised

    def _build(self) -> Any:  # FAISS's stubs lack the index subclasses' attributes
        p, d, metric = self.params, self.dimension, self.faiss_metric
        sq8: Any = faiss.ScalarQuantizer.QT_8bit
        if p.kind is IndexKind.FLAT:
            if p.quantization is Quantization.INT8:
                return faiss.IndexScalarQuantizer(d, sq8, metric)
            if p.quantization is Quantization.RABITQ:
                return faiss.IndexRaBitQ(d, metric, p.rabitq_bits)
            return None
        if p.kind is IndexKind.HNSW:
            if p.quantization is Quantization.INT8:
                index: Any = faiss.IndexHNSWSQ(d, sq8, p.m, metric)
            else:
                index = faiss.IndexHNSWFlat(d, p.m, metric)
            index.hnsw.efConstruction = p.ef_construction
            index.hnsw.efSearch = p.ef_search
            return index
        quantizer = faiss.IndexFlat(d, metric)
        if p.kind is IndexKind.IVF_PQ:
            index = faiss.IndexIVFPQ(quantizer, d, p.nlist, p.pq_m, p.pq_bits, metric)
        elif p.quantization is Quantization.INT8:
            index = faiss.IndexIVFScalarQuantizer(quantizer, d, p.nlist, sq8, metric)
        elif p.quantization is Quantization.RABITQ:
            index = faiss.IndexIVFRaBitQ(quantizer, d, p.nlist, metric, True, p.rabitq_bits)
        else:
            index = faiss.IndexIVFFlat(quantizer, d, p.nlist, metric)
        index.nprobe = p.nprobe
        self._quantizer = quantizer  # keep the Python object alive next to the index
        return index

    # ---- what the planner and training need -------------------------------------------------------------------

    @property
    def exact(self) -> bool:
        """No FAISS index: searches are exact over the store's rows."""
        return self.index is None

    @property
    def keeps_codes(self) -> bool:
        """Checkpoints keep this index's codes per segment (IVF kinds, quantised FLAT)."""
        return self.params.is_ivf or (self.params.kind is IndexKind.FLAT and self.index is not None)

    @property
    def whole(self) -> bool:
        """Checkpoints keep this index whole (HNSW kinds)."""
        return self.params.kind is IndexKind.HNSW

    @property
    def ntotal(self) -> int:
        return self._added if self.index is None else int(self.index.ntotal)

    def train(self, vectors: np.ndarray, *, restarts: int = 1) -> None:
        """Train on a sample; an IVF index's centroids from up to `restarts` k-means runs (_train_centroids)."""
        if self.index is None:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with faiss_threads():
            if self.params.is_ivf and restarts > 1:
                self._train_centroids(vectors, restarts)  # then FAISS trains only the codes (the centroids are there)
            self.index.train(vectors)
        self.trained = True
        if self.keeps_codes:
            self._template = bytes(faiss.serialize_index(self.index))

    def _train_centroids(self, vectors: np.ndarray, restarts: int) -> None:
        """The IVF centroids: k-means as FAISS runs it (its parameters: 10 iterations, at most 256 points a list,
        spherical for inner product), from `restarts` seeds when that is cheap enough (KMEANS_RESTARTS_UP_TO),
        keeping the run whose lists are the most even on the sample, then made more even by split-and-merge
        (balance.py) on as much of the sample as BALANCE_UP_TO allows. An IVF search scans the lists it probes
        whole, and one k-means run's local optimum decides how even they are: at 1M clustered vectors
        (benchmarks/ivf_training.py), six seeds on one sample gave list-size imbalances from 1.89 to 2.39, so codes
        scanned at nprobe 16 from 105k to 144k; balancing the best of them brought it to 1.18 and 47k codes, with
        recall@10 at nprobe 4 to 16 the same. The sample's imbalance is within 0.02 of the whole data's."""
        index = self.index
        nlist, d = int(index.nlist), self.dimension
        points = min(len(vectors), int(index.cp.max_points_per_centroid) * nlist)
        restarts = restarts if points * nlist * d <= KMEANS_RESTARTS_UP_TO else 1
        best: tuple[float, np.ndarray] | None = None
        for restart in range(restarts):
            cp = faiss.ClusteringParameters()
            for name in ("niter", "spherical", "max_points_per_centroid", "min_points_per_centroid"):
                setattr(cp, name, getattr(index.cp, name))
            cp.seed = int(index.cp.seed) + restart
            clustering = faiss.Clustering(d, nlist, cp)
            assign = faiss.IndexFlat(d, self.faiss_metric)
            clustering.train(vectors, assign)
            _, lists = assign.search(vectors, 1)
            uneven = imbalance(np.bincount(lists[:, 0], minlength=nlist))
            if best is None or uneven < best[0]:
                best = (uneven, faiss.vector_to_array(clustering.centroids).reshape(nlist, d))
        assert best is not None
        centroids = best[1]
        points = min(points, BALANCE_UP_TO // (nlist * d))
        if points >= BALANCE_MIN_PER_LIST * nlist:
            if points < len(vectors):  # a seeded subsample (k-means trained on FAISS's own)
                vectors = vectors[np.sort(np.random.default_rng(0).choice(len(vectors), points, replace=False))]
            centroids, before, after = balance(
                centroids, vectors, self.faiss_metric, spherical=bool(index.cp.spherical), seed=int(index.cp.seed)
            )
            log.info("IVF lists balanced: imbalance %.3f -> %.3f on %d training vectors", before, after, len(vectors))
        index.quantizer.reset()
        index.quantizer.add(centroids)

    def add(self, slots: np.ndarray, vectors: np.ndarray) -> None:
        """Add rows; every kind but IVF numbers them in order, so `slots` must continue from ntotal."""
        if not len(slots):
            return
        if not self.params.is_ivf and int(slots[0]) != self.ntotal:
            raise ValueError(f"slot {int(slots[0])} added at position {self.ntotal}")
        if self.index is None:
            self._added += len(slots)
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with faiss_threads():
            if self.params.is_ivf:
                codes = self.index.sa_encode(vectors)
                self.index.add_sa_codes(codes, np.ascontiguousarray(slots, dtype=np.int64))
                self._pending.append((int(slots[0]), codes))
            else:
                self.index.add(vectors)
        self.dirty = True

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None, *, ef_search: int = 0, nprobe: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top k among the allowed slots (a bool mask over slots, or None for all); labels -1 where there are fewer.

        A selector takes FAISS's flat search off its BLAS path, so pass None whenever every slot may be returned.
        """
        bitmap = selector = None
        if allowed is not None:
            bitmap = np.packbits(allowed, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
        if self.params.kind is IndexKind.HNSW:
            params: Any = _faiss.SearchParametersHNSW(efSearch=max(ef_search or self.params.ef_search, k), sel=selector)
        elif self.params.is_ivf:
            params = _faiss.SearchParametersIVF(
                nprobe=min(nprobe or self.params.nprobe, self.params.nlist), sel=selector
            )
        else:
            params = _faiss.SearchParameters(sel=selector)
        with faiss_threads():
            distances, labels = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)
        del bitmap  # the selector points into it until here
        return distances, labels

    # ---- checkpoints -----------------------------------------------------------------------------------------

    def template(self) -> bytes | None:
        """The trained, empty index (keeps_codes kinds, once trained)."""
        return self._template if self.trained else None

    def codes(self, start: int, end: int) -> np.ndarray | None:
        """The codes of slots [start, end) in slot order (a copy), or None where this index has not got them all."""
        if not self.keeps_codes or not self.trained or self.index is None or end <= start:
            return None
        if not self.params.is_ivf:
            if end > self.ntotal:
                return None
            size = self.index.code_size
            view = faiss.rev_swig_ptr(self.index.codes.data(), self.ntotal * size)
            return np.array(view[start * size : end * size]).reshape(end - start, size)
        pieces = sorted(self._pending, key=lambda p: p[0])
        out: list[np.ndarray] = []
        at = start
        for first, codes in pieces:
            last = first + len(codes)
            if last <= at or first >= end:
                continue
            if first > at:
                return None
            out.append(codes[at - first : min(end, last) - first])
            at = min(end, last)
            if at == end:
                break
        return np.concatenate(out) if at == end and out else None

    def codes_at(self, slots: np.ndarray) -> np.ndarray | None:
        """The codes of some slots (sorted), or None."""
        if not len(slots):
            return None if not self.keeps_codes else np.empty((0, self.code_size), np.uint8)
        whole = self.codes(int(slots[0]), int(slots[-1]) + 1)
        return None if whole is None else whole[slots - int(slots[0])]

    @property
    def code_size(self) -> int:
        return int(self.index.sa_code_size()) if self.index is not None else 0

    def forget(self, end: int) -> None:
        """The codes of slots below `end` are in a checkpoint now: drop the copies kept for it (IVF)."""
        self._pending = [(first, codes) for first, codes in self._pending if first + len(codes) > end]

    def restore(self, template: bytes, parts: list[tuple[int, np.ndarray]]) -> None:
        """Become the trained index of `template` holding the codes of each (first slot, codes) part, in order."""
        self.index = faiss.deserialize_index(np.frombuffer(template, np.uint8))
        if self.params.is_ivf:
            self.index.nprobe = self.params.nprobe
        self.trained = True
        self._template = template
        with faiss_threads():
            if self.params.is_ivf:
                self._fill_lists(parts)
                return
            for _, codes in parts:  # in slot order: FLAT numbers its rows as they come
                self.index.add_sa_codes(np.ascontiguousarray(codes), None)

    def _fill_lists(self, parts: list[tuple[int, np.ndarray]]) -> None:
        """An IVF index's inverted lists from its standalone codes (list number, then the code), each list allocated
        once at its final size: appending segment after segment (add_sa_codes) grows each list's buffer by doubling,
        which left a restored int8 index about a third larger than its codes. Two passes over the codes, a bounded
        chunk at a time (the codes are usually a checkpoint's mapped column): count per list, then write in place."""
        index = self.index
        invlists = faiss.downcast_InvertedLists(index.invlists)
        nlist, coarse, size = int(index.nlist), _coarse_bytes(int(index.nlist)), int(invlists.code_size)
        rows = max(1, _FILL_CHUNK_BYTES // max(1, coarse + size))

        def chunks() -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
            for first, codes in parts:
                for start in range(0, len(codes), rows):
                    chunk = np.asarray(codes[start : start + rows])
                    lists = np.zeros(len(chunk), np.int64)
                    for byte in range(coarse):  # little-endian, as IndexIVF::encode_listno writes it
                        lists |= chunk[:, byte].astype(np.int64) << (8 * byte)
                    yield first + start, chunk, lists

        counts = np.zeros(nlist, np.int64)
        for _, _, lists in chunks():
            counts += np.bincount(lists, minlength=nlist)
        for list_no in np.flatnonzero(counts).tolist():
            invlists.resize(list_no, int(counts[list_no]))
        filled = np.zeros(nlist, np.int64)
        for first, chunk, lists in chunks():
            order = np.argsort(lists, kind="stable")
            ids = (first + order).astype(np.int64)
            fine = np.ascontiguousarray(chunk[order, coarse : coarse + size])
            present, starts, sizes = np.unique(lists[order], return_index=True, return_counts=True)
            for list_no, at, n in zip(present.tolist(), starts.tolist(), sizes.tolist(), strict=True):
                invlists.update_entries(
                    list_no, int(filled[list_no]), n, faiss.swig_ptr(ids[at : at + n]), faiss.swig_ptr(fine[at:])
                )
                filled[list_no] += n
        index.ntotal = int(counts.sum())

    def serialize(self) -> np.ndarray:
        """The whole index (HNSW kinds), as FAISS writes it."""
        self.dirty = False
        return faiss.serialize_index(self.index)

    def restore_whole(self, data: np.ndarray) -> None:
        self.index = faiss.deserialize_index(data)
        self.index.hnsw.efSearch = self.params.ef_search
        self.trained = bool(self.index.is_trained)
        self.dirty = False

    def memory_bytes(self) -> int:
        if self.index is None:
            return 0
        n = self.ntotal
        if self.params.kind is IndexKind.HNSW:
            storage = self.dimension if self.params.quantization is Quantization.INT8 else 4 * self.dimension
            return n * (storage + 4 * self.params.m * 2 + 8)
        code = self.code_size if self.trained else 0
        if self.params.is_ivf:
            code = code - _coarse_bytes(self.params.nlist) + 8  # the id beside each code in its list
            pending = sum(c.nbytes for _, c in self._pending)
            return n * code + pending + 4 * self.params.nlist * self.dimension
        return n * code


# k-means runs an IVF index's centroids are chosen from (the most even lists) when it is trained in the background
# (training.build: first training, retraining, Rebuild; a refill at open or under a compaction's lock runs one), while
# training points x nlist x dimension is at most KMEANS_RESTARTS_UP_TO (a full sample at nlist 512, d = 128: about
# 7 s a run on a 2-core machine); one run beyond it (nlist 1,024 and up at d = 128, once the sample is full).
KMEANS_RESTARTS = 5
KMEANS_RESTARTS_UP_TO = 256 * 512 * 512 * 128
# The chosen run's lists are then made more even (balance.py: split the largest, retire the smallest; about 8 s at a
# full sample, nlist 512, d = 128) on at most BALANCE_UP_TO / (nlist x dimension) of the training vectors (all of a
# full sample up to nlist 1,024 at d = 128; 64 a list at nlist 2,048), and not at all when that leaves fewer than
# BALANCE_MIN_PER_LIST a list (nlist 4,096 and up at d = 128).
BALANCE_UP_TO = 4 * KMEANS_RESTARTS_UP_TO
BALANCE_MIN_PER_LIST = 32
# Codes read at a time when an IVF index's lists are filled from a checkpoint (a transient copy).
_FILL_CHUNK_BYTES = 64 << 20


def _coarse_bytes(nlist: int) -> int:
    """Bytes of the inverted list number at the start of an IVF index's standalone code."""
    size, bits = 0, max(nlist - 1, 1).bit_length()
    while bits > 0:
        size += 1
        bits -= 8
    return size
