"""The table of services (embedsvc/api.py) holds exactly the services of the proto files, and each entry's generated
pieces exist."""

import pkgutil
import re
from importlib import import_module
from pathlib import Path

import embedsvc.v1
from embedsvc import api

PROTOS = Path(__file__).resolve().parents[1] / "protos" / "embedsvc" / "v1"


def test_the_table_holds_every_service_of_the_proto_files():
    declared = {
        f"embedsvc.v1.{name}"
        for proto in PROTOS.glob("*.proto")
        for name in re.findall(r"^service\s+(\w+)\s*\{", proto.read_text(encoding="utf-8"), re.MULTILINE)
    }
    generated = {
        service.full_name
        for info in pkgutil.iter_modules(embedsvc.v1.__path__)
        if info.name.endswith("_pb2")
        for service in import_module(f"embedsvc.v1.{info.name}").DESCRIPTOR.services_by_name.values()
    }
    table = [s.full_name for s in api.SERVICES]
    assert len(table) == len(set(table))
    assert set(table) == declared == generated


def test_each_entry_names_its_generated_stub_and_registration():
    shorts = [s.short for s in (*api.SERVICES, api.HEALTH)]
    assert len(shorts) == len(set(shorts))
    for service in (*api.SERVICES, api.HEALTH):
        assert service.descriptor.name == service.name
        assert callable(service.stub) and callable(service.add_to_server)
        paths = [path for path, _method in service.methods()]
        assert paths == [f"/{service.full_name}/{m.name}" for m in service.descriptor.methods]
        assert paths, service.name
