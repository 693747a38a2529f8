"""Test data for collections: clustered vectors (what graph and IVF indexes are built for) and the exact answer."""

import numpy as np

from embedsvc.index.types import Metric


def clustered(n, d=32, centers=50, seed=0):
    """Vectors around random centres: structured data that graph and IVF indexes are built for."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d))
    return (c[rng.integers(0, centers, n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def brute_force(x, q, k, metric):
    """(top-k rows, their scores) by numpy, with the backends' score conventions (squared L2, cosine, inner product)."""
    if metric is Metric.COSINE:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    if metric is Metric.L2:
        scores = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        order = np.argsort(scores, axis=1, kind="stable")[:, :k]
    else:
        scores = q @ x.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, 1)
