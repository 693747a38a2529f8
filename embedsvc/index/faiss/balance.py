"""Even inverted lists for IVF indexes: k-means centroids refined by splitting the largest lists and retiring the
smallest.

An IVF search scans the lists it probes whole, so its cost at a given nprobe is the summed size of those lists, and
k-means leaves them uneven: in clustered data one centroid takes several natural clusters while another holds half of
one. Worse, a centroid that averages several clusters sits nearer to every query than one at the heart of a single
cluster (in high dimensions the mean of m cluster centres is closer to the rest by a factor of about (1 + 1/m) / 2 in
squared distance), so the largest lists are the ones most queries probe. On 1M clustered vectors at nlist 512
(benchmarks/ivf_training.py), FAISS's k-means left lists with a size imbalance of 1.84 to 2.44 over six seeds and
queries scanned 96,641 to 144,730 codes at nprobe 16.

`balance` is the classic split-and-merge refinement (as in ISODATA): each round, the `share` largest lists are split in
two by a 2-means of their own points, each half taking the centroid of one of the `share` smallest lists (whose points
go to their neighbours), then Lloyd iterations settle every centroid. It keeps the most even set of centroids it saw
(the input included), measured on the training sample. On the 1M benchmark above: imbalance 1.89 -> 1.18 and codes
scanned at nprobe 16 105,116 -> 46,787 (raw FAISS: 96,641), with recall@10 at the defaults unchanged (0.9999) and at
nprobe 1 up from 0.995 to 0.9996. A query's true neighbours split over two halves of one former list sit in the two
nearest lists, so recall at a given nprobe mostly holds; where it does not, the collection's recall calibration
raises nprobe.
"""

from __future__ import annotations

import faiss
import numpy as np

# Rounds of split-and-merge, and the share of lists split (and retired) in each.
BALANCE_ROUNDS = 10
BALANCE_SHARE = 0.05
# Lloyd iterations after each round's splits.
BALANCE_ITERATIONS = 2
# A pair is only worth moving while the larger list holds more than this many times the smaller's points.
_WORTH = 2.0


def imbalance(sizes: np.ndarray) -> float:
    """FAISS's imbalance factor: n * sum(size^2) / (sum size)^2; 1 when every list is the same size."""
    sizes = sizes.astype(np.float64)
    total = float(sizes.sum())
    return float(len(sizes) * (sizes**2).sum() / total**2) if total else 1.0


def _assign(centroids: np.ndarray, vectors: np.ndarray, metric: int) -> np.ndarray:
    """Each vector's nearest centroid (the highest inner product for METRIC_INNER_PRODUCT)."""
    flat = faiss.IndexFlat(centroids.shape[1], metric)
    flat.add(centroids)
    return flat.search(vectors, 1)[1][:, 0]


def _means(centroids: np.ndarray, vectors: np.ndarray, lists: np.ndarray, spherical: bool) -> np.ndarray:
    """One Lloyd update: each centroid the mean of its points (unit length when spherical); empty lists keep theirs."""
    nlist = len(centroids)
    order = np.argsort(lists, kind="stable")
    counts = np.bincount(lists, minlength=nlist)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    filled = np.flatnonzero(counts)
    updated = centroids.copy()
    sums = np.add.reduceat(vectors[order], starts[filled], axis=0)
    updated[filled] = sums / counts[filled, None]
    if spherical:
        norms = np.linalg.norm(updated[filled], axis=1, keepdims=True)
        updated[filled] /= np.maximum(norms, np.finfo(np.float32).tiny)
    return updated.astype(np.float32)


def balance(
    centroids: np.ndarray,
    vectors: np.ndarray,
    metric: int,
    *,
    spherical: bool = False,
    rounds: int = BALANCE_ROUNDS,
    share: float = BALANCE_SHARE,
    iterations: int = BALANCE_ITERATIONS,
    seed: int = 1234,
) -> tuple[np.ndarray, float, float]:
    """The most even centroids found by split-and-merge from `centroids` on the sample `vectors`, with the sample's
    imbalance before and after (after <= before: the input is kept when no round improves on it)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    current = np.ascontiguousarray(centroids, dtype=np.float32)
    nlist, d = current.shape
    lists = _assign(current, vectors, metric)
    sizes = np.bincount(lists, minlength=nlist)
    start = imbalance(sizes)
    if nlist < 4 or len(vectors) < 4 * nlist:
        return current, start, start
    best = (start, current)
    moves = max(1, int(share * nlist))
    for round_ in range(rounds):
        order = np.argsort(sizes, kind="stable")
        smallest, largest = order[:moves], order[::-1][:moves]
        current = current.copy()
        moved = 0
        for small, large in zip(smallest.tolist(), largest.tolist(), strict=True):
            if sizes[large] <= _WORTH * sizes[small] or sizes[large] < 4:
                break
            points = vectors[lists == large]
            halves = faiss.Kmeans(d, 2, niter=10, seed=seed + round_, spherical=spherical, min_points_per_centroid=1)
            halves.train(points)
            pair = np.asarray(halves.centroids)
            current[large], current[small] = pair[0], pair[1]
            moved += 1
        if not moved:
            break
        for _ in range(iterations):
            lists = _assign(current, vectors, metric)
            current = _means(current, vectors, lists, spherical)
        lists = _assign(current, vectors, metric)
        sizes = np.bincount(lists, minlength=nlist)
        even = imbalance(sizes)
        if even < best[0]:
            best = (even, current)
    return best[1], start, best[0]
