"""Client() and AsyncClient() without a target call $EMBEDSVC_TARGET when it is set (as the CLI's --target does),
else localhost:50051; a target given explicitly wins."""

import asyncio

import pytest

from embedsvc.client import AsyncClient, Client, EmbedsvcClientError
from embedsvc.client._channel import DEFAULT_TARGET, resolve_target


def test_the_default_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMBEDSVC_TARGET", raising=False)
    assert resolve_target(None) == DEFAULT_TARGET == "localhost:50051"
    monkeypatch.setenv("EMBEDSVC_TARGET", "")
    assert resolve_target(None) == DEFAULT_TARGET
    monkeypatch.setenv("EMBEDSVC_TARGET", "example.org:443")
    assert resolve_target(None) == "example.org:443"
    assert resolve_target("other:1") == "other:1"


def test_clients_without_a_target_call_the_environments(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    monkeypatch.setenv("EMBEDSVC_TARGET", target)
    with Client() as client:
        assert client.health() == "SERVING"

    async def ask() -> str:
        async with AsyncClient() as client:
            return await client.health()

    assert asyncio.run(ask()) == "SERVING"


def test_an_explicit_target_wins(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    monkeypatch.setenv("EMBEDSVC_TARGET", target)
    with Client("127.0.0.1:1", timeout=5) as client, pytest.raises(EmbedsvcClientError) as failed:
        client.health()
    assert failed.value.code.name == "UNAVAILABLE"
