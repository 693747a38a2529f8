"""The registry hands out parts by capability: `model(name, Capability.X)` and each way it refuses; warm-up and memory
per distinct part; a kind that breaks its word (a part that does not honour its protocol, a capability it promised
but did not load) fails that model only."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from embedsvc.backends.base import Capability, LoadContext, Loaded, ModelSpec
from embedsvc.backends.capabilities import LatentEncoder, WordSpace
from embedsvc.backends.text_encoders import TextEncoderFormat, TextEncoderOptions
from embedsvc.backends.word_vectors import WordVectorFormat, WordVectorsOptions
from embedsvc.core.registry import ModelRegistry, ModelState
from embedsvc.core.texts import embedding as texts
from embedsvc.core.texts.batching import TextModel
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.limits import Limits
from tests import toy_kind
from tests.toy_kind import LinearAEKind, LinearAEOptions, LinearAutoencoder


@dataclass(frozen=True)
class NoEmbedOptions(LinearAEOptions):
    kind: ClassVar[str] = "no-embed"


class NoEmbedKind(LinearAEKind):
    """Offers images, but its part cannot embed: a kind's bug."""

    name = NoEmbedOptions.kind

    def offers(self, spec: ModelSpec) -> frozenset[Capability]:
        return frozenset({Capability.IMAGES})

    def load(self, spec: ModelSpec, context: LoadContext) -> Loaded:
        return Loaded(dimension=4, version="v", source="generated", parts={Capability.IMAGES: object()})


@dataclass(frozen=True)
class UnkeptOptions(LinearAEOptions):
    kind: ClassVar[str] = "unkept-promise"


class UnkeptPromiseKind(LinearAEKind):
    """Says it offers an image encoder and a latent encoder and decoder, loads only the decoder."""

    name = UnkeptOptions.kind

    def load(self, spec: ModelSpec, context: LoadContext) -> Loaded:
        model = LinearAutoencoder(spec.name, 0)
        return Loaded(dimension=4, version="v", source="generated", parts={Capability.LATENT_DECODER: model})


@pytest.fixture
def registry(planted_file: Path, tmp_path: Path) -> Iterator[ModelRegistry]:
    bad = tmp_path / "bad.txt"
    bad.write_text("1 3\nking 1 2\n")
    specs = (
        ModelSpec("planted", WordVectorsOptions(WordVectorFormat.WORD2VEC_TEXT, planted_file)),
        ModelSpec("planted-mean", TextEncoderOptions(TextEncoderFormat.AVERAGED_WORDS, words="planted")),
        ModelSpec("bad", WordVectorsOptions(WordVectorFormat.WORD2VEC_TEXT, bad)),
        ModelSpec("ae", LinearAEOptions()),
        ModelSpec("no-embed", NoEmbedOptions()),
        ModelSpec("unkept", UnkeptOptions()),
    )
    with toy_kind.registered(NoEmbedKind(), UnkeptPromiseKind()):
        models = ModelRegistry(specs, tmp_path / "data")
        yield models
        models.close()


def refusal(fn) -> EmbedsvcError:
    with pytest.raises(EmbedsvcError) as info:
        fn()
    return info.value


def test_parts_come_typed_by_capability(registry):
    registry.load_all()
    words = registry.model("planted", Capability.WORDS)
    assert isinstance(words, WordSpace) and words.size == 52
    text = registry.model("planted-mean", Capability.TEXTS)
    assert isinstance(text, TextModel)  # the encoder with its batcher
    embedded = texts.embed_texts(text, ["king queen"], Limits())
    assert embedded.vectors.shape == (1, 32) and embedded.provenance.model == "planted-mean"
    encoder = registry.model("ae", Capability.LATENT_ENCODER)
    assert isinstance(encoder, LatentEncoder)
    # One object under three capabilities: handed out as the same part.
    assert registry.model("ae", Capability.IMAGES) is encoder is registry.model("ae", Capability.LATENT_DECODER)


def test_a_part_offered_three_times_is_warmed_and_counted_once(registry):
    registry.load_all()
    part = registry.model("ae", Capability.LATENT_DECODER)
    assert isinstance(part, LinearAutoencoder)
    assert part.warm_ups == 1
    info = registry.info("ae")
    assert info.memory_bytes == part.basis.nbytes == 64 * 4 * 4
    assert (info.state, info.dimension, info.image_size, info.image_channels) == (ModelState.READY, 4, 8, 1)
    assert not info.embeds_texts and registry.info("planted-mean").embeds_texts


def test_missing_and_unknown_names(registry):
    error = refusal(lambda: registry.model("", Capability.WORDS))
    assert (error.reason, error.field) == (Reason.MISSING_FIELD, "model")
    error = refusal(lambda: registry.model("nope", Capability.WORDS))
    assert (error.reason, error.field, error.metadata) == (Reason.MODEL_NOT_FOUND, "model", {"model": "nope"})


def test_kind_mismatch_says_what_to_do_instead(registry):
    # Known before loading: the kind says what its models offer.
    error = refusal(lambda: registry.model("planted-mean", Capability.WORDS))
    assert (error.reason, error.field) == (Reason.MODEL_KIND_MISMATCH, "model")
    assert error.metadata == {"model": "planted-mean", "kind": "text-encoder", "hint": "embed-texts"}
    assert "it embeds texts" in error.message and "has no vocabulary" in error.message
    error = refusal(lambda: registry.model("planted", Capability.TEXTS))
    assert error.reason is Reason.MODEL_KIND_MISMATCH
    assert 'words = "planted"' in error.message  # the averaged-words configuration to add
    error = refusal(lambda: registry.model("planted", Capability.IMAGES))
    assert error.message == "model 'planted' is a word-vectors model, not an image model"
    # A capability that is part of the latent family, asked of a model outside it: the family's mismatch.
    error = refusal(lambda: registry.model("planted", Capability.ANOMALY_SCORES))
    assert error.reason is Reason.MODEL_KIND_MISMATCH and "not a generative latent model" in error.message


def test_a_latent_model_without_a_part_is_refused_as_a_precondition(registry):
    registry.load_all()
    for capability in (Capability.ANOMALY_SCORES, Capability.INPAINTING):
        error = refusal(lambda c=capability: registry.model("ae", c))
        assert (error.reason, error.field) == (Reason.OPERATION_NOT_SUPPORTED, "model")
        assert error.metadata == {"model": "ae", "kind": "linear-ae", "needs": capability.value}


def test_not_ready_failed_and_unloaded(registry):
    error = refusal(lambda: registry.model("ae", Capability.LATENT_DECODER))  # before load_all
    assert (error.reason, error.metadata) == (Reason.MODEL_NOT_READY, {"model": "ae", "state": "loading"})
    registry.load_all()
    error = refusal(lambda: registry.model("bad", Capability.WORDS))
    assert (error.reason, error.metadata["state"]) == (Reason.MODEL_NOT_READY, "failed")
    assert "cannot read" in error.message
    registry.unload("ae")
    error = refusal(lambda: registry.model("ae", Capability.LATENT_DECODER))
    assert (error.reason, error.field, error.metadata) == (
        Reason.MODEL_UNLOADED,
        "model",
        {"model": "ae", "state": "unloaded"},
    )
    registry.load("ae")
    assert registry.model("ae", Capability.LATENT_DECODER).latent_dim == 4


def test_a_kind_that_breaks_its_word_fails_that_model_only(registry):
    registry.load_all()
    assert registry.info("no-embed").state is ModelState.FAILED
    assert "break their protocol: images" in registry.info("no-embed").error
    assert registry.info("unkept").state is ModelState.FAILED
    assert "offers images, latent-decoder, latent-encoder but loaded latent-decoder" in registry.info("unkept").error
    assert registry.info("ae").state is ModelState.READY


def test_the_batcher_goes_with_the_model(registry):
    registry.load_all()
    text = registry.model("planted-mean", Capability.TEXTS)
    assert registry.batchers() == {"planted-mean": text.batcher}
    before = texts.embed_texts(text, ["king"], Limits()).vectors
    registry.reload("planted-mean")
    again = registry.model("planted-mean", Capability.TEXTS)
    assert again.batcher is not text.batcher and again.encoder is not text.encoder
    assert registry.batchers() == {"planted-mean": again.batcher}
    np.testing.assert_array_equal(texts.embed_texts(again, ["king"], Limits()).vectors, before)
