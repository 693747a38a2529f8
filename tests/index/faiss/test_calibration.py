"""Calibration.choose: a target recall is reached by the lower end of the measurement's 95% interval, counted in
queries where their misses come together (the design effect)."""

from __future__ import annotations

import numpy as np
import pytest

from embedsvc.index.faiss.calibration import Calibration, design_effect, measure, wilson_lower
from embedsvc.index.types import IndexKind, IndexParams


def test_wilson_lower_bound_matches_the_formula_and_tightens_with_samples():
    assert wilson_lower(1.0, 2000) == pytest.approx(0.99808, abs=1e-5)
    assert wilson_lower(0.991, 2000) == pytest.approx(0.98582, abs=1e-5)
    assert wilson_lower(0.991, 200_000) > wilson_lower(0.991, 2000)
    assert wilson_lower(0.5, 10) < 0.5


def test_a_setting_measured_just_above_the_target_does_not_reach_it():
    # 200 queries x k 10: nprobe 16 measured 0.991, 24 measured 0.996, 32 measured 0.999.
    calibration = Calibration(
        "nprobe", ((8, 2, 0.97), (16, 2, 0.991), (24, 2, 0.996), (32, 2, 0.999)), 10**6, 200, design_effect=1.0
    )
    assert calibration.choose(0.99) == (24, 2, 0.996)  # 0.991's lower bound is 0.986
    assert calibration.choose(0.95) == (8, 2, 0.97)
    # Out of reach: the cheapest setting within 0.001 of the best measured, its recall saying so.
    assert calibration.choose(0.9995) == (32, 2, 0.999)


def test_clustered_misses_widen_the_interval():
    # 1000 queries x k 10, 0.993 measured: 70 misses spread one a query reach 0.99; the same misses in 14 queries (5
    # each, a design effect of about 5) do not, and nprobe 3's 0.999 does.
    points = ((2, 2, 0.993), (3, 2, 0.999))
    assert Calibration("nprobe", points, 10**6, 1000, 10, 1.0).choose(0.99)[0] == 2
    assert Calibration("nprobe", points, 10**6, 1000, 10, 5.0).choose(0.99)[0] == 3


def test_the_design_effect_is_how_the_misses_cluster():
    wanted = np.full(1000, 10.0)
    spread = np.full(1000, 10.0)
    spread[:40] = 9  # 40 misses, one a query
    together = np.full(1000, 10.0)
    together[:4] = 0  # 40 misses, four queries finding nothing
    assert design_effect(spread, wanted) == pytest.approx(1.0, abs=0.05)
    assert design_effect(together, wanted) == pytest.approx(10.0, abs=0.1)
    assert design_effect(wanted, wanted) is None  # no misses: nothing measured


def test_measure_records_the_design_effect_and_a_json_round_trip_keeps_it():
    sample = np.zeros((100, 4), np.float32)
    ids = [str(i) for i in range(100)]
    truth = [[f"t{q}-{j}" for j in range(10)] for q in range(100)]

    def search(queries, k, exclude, exact, value, oversample):
        if exact or value >= 2:
            return truth
        # nprobe 1: 10 queries find half their neighbours (50 misses, 5 a query: a design effect of about 5)
        return [row[:5] + ["x"] * 5 if q < 10 else row for q, row in enumerate(truth)]

    measured = measure(IndexParams(IndexKind.IVF_FLAT, nlist=4).resolved(4), sample, ids, 10**4, search)
    assert measured is not None
    assert measured.points == ((1, 1, 0.95), (2, 1, 1.0))
    assert measured.design_effect == pytest.approx(5.0, rel=0.05)
    assert Calibration.from_json(measured.to_json()) == measured
    old = measured.to_json()
    del old["design_effect"]
    assert Calibration.from_json(old) is None  # measured before design effects: measured again at open


def test_without_misses_the_most_cautious_design_effect():
    sample = np.zeros((50, 4), np.float32)
    truth = [[f"t{q}-{j}" for j in range(10)] for q in range(50)]
    measured = measure(
        IndexParams(IndexKind.IVF_FLAT, nlist=4).resolved(4), sample, [str(i) for i in range(50)], 10**4,
        lambda queries, k, exclude, exact, value, oversample: truth,
    )  # fmt: skip
    assert measured is not None and measured.design_effect == 10.0
