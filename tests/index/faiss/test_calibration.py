"""Calibration.choose: a target recall is reached by the lower end of the measurement's 95% interval."""

from __future__ import annotations

import pytest

from embedsvc.index.faiss.calibration import Calibration, wilson_lower


def test_wilson_lower_bound_matches_the_formula_and_tightens_with_samples():
    assert wilson_lower(1.0, 2000) == pytest.approx(0.99808, abs=1e-5)
    assert wilson_lower(0.991, 2000) == pytest.approx(0.98582, abs=1e-5)
    assert wilson_lower(0.991, 200_000) > wilson_lower(0.991, 2000)
    assert wilson_lower(0.5, 10) < 0.5


def test_a_setting_measured_just_above_the_target_does_not_reach_it():
    # 200 queries x k 10: nprobe 16 measured 0.991, 24 measured 0.996, 32 measured 0.999.
    calibration = Calibration("nprobe", ((8, 2, 0.97), (16, 2, 0.991), (24, 2, 0.996), (32, 2, 0.999)), 10**6, 200)
    assert calibration.choose(0.99) == (24, 2, 0.996)  # 0.991's lower bound is 0.986
    assert calibration.choose(0.95) == (8, 2, 0.97)
    # Out of reach: the cheapest setting within 0.001 of the best measured, its recall saying so.
    assert calibration.choose(0.9995) == (32, 2, 0.999)
