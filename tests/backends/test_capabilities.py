"""The capability table is complete (a protocol, a description and a registry overload for every capability), and the
shipped kinds' parts honour the protocols they are offered under."""

import typing
from pathlib import Path
from typing import get_args

import numpy as np

from embedsvc.backends.base import LoadContext
from embedsvc.backends.capabilities import DESCRIBED, PROTOCOLS, Capability
from embedsvc.backends.kinds import KINDS
from embedsvc.backends.vae import EMBEDDED_VAE_DIR
from embedsvc.core.registry import ModelRegistry


def test_every_capability_has_a_protocol_a_description_and_an_accessor():
    assert set(PROTOCOLS) == set(DESCRIBED) == set(Capability)
    overloads = typing.get_overloads(ModelRegistry.model)
    typed = [get_args(typing.get_type_hints(o)["capability"])[0] for o in overloads]
    assert sorted(typed) == sorted(Capability)  # one @overload each, no more
    for capability, described in DESCRIBED.items():
        assert described.what
        if described.part_of is not None:  # an optional part of a family whose root is itself no part
            assert DESCRIBED[described.part_of].part_of is None
            assert described.lacking, capability


def test_the_vae_is_one_part_under_five_capabilities(tmp_path: Path):
    kind = KINDS["vae"]
    (spec,) = kind.embedded()
    loaded = kind.load(spec, LoadContext(tmp_path))
    assert loaded.capabilities == kind.offers(spec) and loaded.unfit_parts() == []
    (part,) = {id(p): p for p in loaded.parts.values()}.values()
    for capability in loaded.capabilities:
        assert isinstance(part, PROTOCOLS[capability]), capability
    assert part.has_prior and (part.decode_method, part.score_method) == ("vae-decode", "negative-elbo")
    images = np.zeros((2, 1, 28, 28), np.float32)
    np.testing.assert_array_equal(part.anomaly_terms(images, samples=0, seed=0), part.elbo_terms(images))
    assert EMBEDDED_VAE_DIR.is_dir()
