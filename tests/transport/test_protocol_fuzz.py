"""A protocol fuzzer: random and mutated messages for every RPC of every service, built from the descriptors, fired
at a live server. Whatever arrives, the answer is a status with a reason (never INTERNAL or UNKNOWN), the server stays
up, and its memory stays bounded. A short run here (fixed seed); a long one under `-m slow`.

Random messages fill fields by type with edge values (empty and huge strings, NaN and infinities, negative and
maximal integers, unknown enum numbers, nested and repeated messages) and, often, with the names of the server's
real models, collections and words, so that calls get past the first checks. Mutated messages are valid seeds with
flipped, cut, duplicated or inserted bytes, sent as raw bytes.
"""

import io
import random
import resource
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor
from google.protobuf.message import Message
from PIL import Image

from embedsvc.api import SERVICES
from embedsvc.backends.base import ModelSpec
from embedsvc.backends.vae import VAEOptions
from embedsvc.client import Client
from embedsvc.limits import Limits
from tests.conftest import planted_specs

REPO = Path(__file__).resolve().parents[2]

# Codes a well-formed refusal may carry. INTERNAL and UNKNOWN mean a bug.
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.DATA_LOSS,
}
NAMES = ["planted", "planted-mean", "vae", "docs", "docs-alias", "king", "queen", "man", "woman", "g = 1", "x"]
INTS = [0, 1, -1, 2, 3, 10, 64, 1000, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]
FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-30, 1e30, 3.4e38, float("nan"), float("inf"), float("-inf")]


def _png(rng: random.Random) -> bytes:
    side = rng.choice([1, 2, 28, 64])
    pixels = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 255, (side, side), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def string(self) -> str:
        r = self.rng.random()
        if r < 0.45:
            return self.rng.choice(NAMES)
        if r < 0.55:
            return ""
        if r < 0.65:
            return "x" * self.rng.choice([100, 5000, 70_000])
        if r < 0.8:
            return "".join(chr(self.rng.randrange(1, 0x2FFF)) for _ in range(self.rng.randrange(1, 20)))
        return self.rng.choice(["king - man + woman", '"a text" + 2*queen', "(((", 'timestamp("x")', "*", "-"])

    def bytes_(self) -> bytes:
        r = self.rng.random()
        if r < 0.4:
            return _png(self.rng)
        if r < 0.5:
            return b""
        return bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 64)))

    def scalar(self, field: descriptor.FieldDescriptor):
        t = field.type
        if t in (field.TYPE_STRING,):
            return self.string()
        if t == field.TYPE_BYTES:
            return self.bytes_()
        if t == field.TYPE_BOOL:
            return self.rng.random() < 0.5
        if t in (field.TYPE_FLOAT, field.TYPE_DOUBLE):
            value = self.rng.choice(FLOATS) if self.rng.random() < 0.6 else self.rng.uniform(-5, 5)
            return float(np.float32(value)) if t == field.TYPE_FLOAT and np.isfinite(value) else value
        if t == field.TYPE_ENUM:
            numbers = [v.number for v in field.enum_type.values]
            return self.rng.choice(numbers) if self.rng.random() < 0.85 else self.rng.choice([99, -3])
        value = self.rng.choice(INTS) if self.rng.random() < 0.5 else self.rng.randrange(0, 50)
        if t in (field.TYPE_UINT32, field.TYPE_UINT64, field.TYPE_FIXED32, field.TYPE_FIXED64):
            value = abs(value) % (2**32 if t in (field.TYPE_UINT32, field.TYPE_FIXED32) else 2**64)
        elif t in (field.TYPE_INT32, field.TYPE_SINT32, field.TYPE_SFIXED32):
            value = max(-(2**31), min(2**31 - 1, value))
        return value

    def fill(self, message: Message, depth: int = 0) -> Message:
        desc = message.DESCRIPTOR
        chosen_oneofs = {o.name: self.rng.choice(o.fields) for o in desc.oneofs}
        for field in desc.fields:
            if field.containing_oneof is not None and chosen_oneofs[field.containing_oneof.name] is not field:
                continue
            if self.rng.random() < 0.3:
                continue  # left unset
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                target = getattr(message, field.name)
                for _ in range(self.rng.randrange(0, 3)):
                    key = self.string()[:50]
                    value_field = field.message_type.fields_by_name["value"]
                    if value_field.message_type is not None:
                        if depth < 4:
                            self.fill(target[key], depth + 1)
                    else:
                        target[key] = self.scalar(value_field)
                continue
            repeated = field.is_repeated
            count = self.rng.choice([0, 1, 2, 3, 8]) if repeated else 1
            if field.message_type is not None:
                if depth >= 4:
                    continue
                if field.message_type.full_name == "google.protobuf.Timestamp":
                    for _ in range(count):
                        stamp = getattr(message, field.name).add() if repeated else getattr(message, field.name)
                        stamp.seconds = self.rng.choice([0, 1_700_000_000, -1, 253402300799])
                    continue
                for _ in range(count):
                    child = getattr(message, field.name).add() if repeated else getattr(message, field.name)
                    self.fill(child, depth + 1)
                    if not repeated:
                        child.SetInParent()
                continue
            for _ in range(count):
                value = self.scalar(field)
                try:
                    if repeated:
                        getattr(message, field.name).append(value)
                    else:
                        setattr(message, field.name, value)
                except (ValueError, TypeError):
                    pass  # out of the field's range for this runtime: leave it
        return message

    def mutate(self, raw: bytes) -> bytes:
        data = bytearray(raw)
        for _ in range(self.rng.randrange(1, 4)):
            op = self.rng.random()
            if not data or op < 0.3:
                data += bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 8)))
            elif op < 0.6:
                data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
            elif op < 0.8:
                data = data[: self.rng.randrange(len(data))]
            else:
                at = self.rng.randrange(len(data))
                data = data[:at] + data[at : at + 16] + data[at:]
        return bytes(data)


def methods():
    for service in SERVICES:
        for _path, method in service.methods():
            yield service.descriptor, method


def message_class(desc: descriptor.Descriptor):
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(desc)


@pytest.fixture(scope="module")
def fuzz_target(make_server, planted_file):
    models = (*planted_specs(planted_file), ModelSpec("vae", VAEOptions(REPO / "models" / "mnist-vae")))
    # Small limits: the fuzzer reaches them often, and nothing it sends can take long.
    limits = Limits(max_inpaint_steps=20, max_steps=16, max_samples=16, max_map_points=500, max_k=50)
    with make_server(models=models, limits=limits, default_deadline_s=10) as (srv, target):
        with Client(target) as client:
            client.create_collection("docs", dimension=32, metric="cosine", model="planted")
            client.upsert("docs", ["a", "b"], inputs=["king", "queen"], metadata=[{"g": 1}, {"g": 2}])
            client.create_alias("docs-alias", "docs")
        yield srv, target


def fire(channel: grpc.Channel, service, method, payloads: list[bytes]) -> grpc.StatusCode:
    path = f"/{service.full_name}/{method.name}"
    identity = lambda b: b  # noqa: E731
    kwargs = {"request_serializer": identity, "response_deserializer": identity}
    try:
        if method.client_streaming and method.server_streaming:
            for _ in channel.stream_stream(path, **kwargs)(iter(payloads), timeout=15):
                pass
        elif method.client_streaming:
            channel.stream_unary(path, **kwargs)(iter(payloads), timeout=15)
        elif method.server_streaming:
            for _ in channel.unary_stream(path, **kwargs)(payloads[0], timeout=15):
                pass
        else:
            channel.unary_unary(path, **kwargs)(payloads[0], timeout=15)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def run(target: str, seed: int, rounds: int) -> dict:
    gen = Generator(seed)
    every = list(methods())
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 256 * 1024 * 1024)])
    seen: dict[str, int] = {}
    rss_start = None
    try:
        for i in range(rounds):
            service, method = every[i % len(every)] if i < len(every) else gen.rng.choice(every)
            cls = message_class(method.input_type)
            payloads = []
            for _ in range(gen.rng.randrange(1, 4) if method.client_streaming else 1):
                raw = gen.fill(cls()).SerializeToString()
                payloads.append(gen.mutate(raw) if gen.rng.random() < 0.3 else raw)
            code = fire(channel, service, method, payloads)
            seen[code.name] = seen.get(code.name, 0) + 1
            where = f"seed {seed}, round {i}: {service.name}/{method.name} with {payloads[0][:200]!r}"
            assert code in ALLOWED, f"{code.name} for {where}"
            if i == len(every):
                rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        health = channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10)
        assert health == b"\x08\x01"  # SERVING: the server is up
    finally:
        channel.close()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - (rss_start or 0)) / 1024
    return {"codes": seen, "rss_growth_mb": grown_mb}


def test_every_rpc_survives_random_and_mutated_messages(fuzz_target):
    _, target = fuzz_target
    report = run(target, seed=1, rounds=1500)
    assert report["codes"].get("OK", 0) > 0 and report["codes"].get("INVALID_ARGUMENT", 0) > 0
    assert report["rss_growth_mb"] < 500, report


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 6))
def test_every_rpc_survives_random_and_mutated_messages_long(fuzz_target, seed):
    _, target = fuzz_target
    report = run(target, seed=seed, rounds=20_000)
    assert report["rss_growth_mb"] < 500, report
