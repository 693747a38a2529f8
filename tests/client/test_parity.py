"""The client covers the API, and AsyncClient offers exactly what Client offers, method by method."""

import inspect
import re

from embedsvc.api import SERVICES
from embedsvc.client import AsyncClient, Client

# Methods of AsyncClient that return an async iterator instead of being coroutines.
ASYNC_ITERATORS = {"export_items", "export_words"}
# RPCs whose client method is not the RPC's name in snake case.
RENAMED = {"AnomalyScore": "anomaly_scores"}


def public_methods(cls):
    return {name: f for name, f in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}


def snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_async_client_has_every_method_of_client_with_the_same_parameters():
    sync, aio = public_methods(Client), public_methods(AsyncClient)
    assert sorted(sync) == sorted(aio)
    for name, method in sync.items():
        parameters = list(inspect.signature(method).parameters.values())
        assert parameters == list(inspect.signature(aio[name]).parameters.values()), name
        asynchronous = inspect.iscoroutinefunction(aio[name]) or name in ASYNC_ITERATORS
        assert asynchronous, f"AsyncClient.{name} is not a coroutine"


def test_every_rpc_has_a_client_method():
    methods = public_methods(Client)
    missing = [
        path
        for service in SERVICES
        for path, rpc in service.methods()
        if RENAMED.get(rpc.name, snake(rpc.name)) not in methods
    ]
    assert missing == []
