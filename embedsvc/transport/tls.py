"""TLS for the server: its certificate and key, and for mutual TLS the CA client certificates must chain to.

The credentials are dynamic: before each new connection's handshake gRPC asks for the current configuration, and the
files are read again when their modification times change (or after SIGHUP), so certificates rotate without dropping
the server or its open connections. A half-written or mismatched pair is refused (logged) and the previous one stays.
"""

from __future__ import annotations

import logging
import ssl
import threading

import grpc

from embedsvc.settings import TlsSettings

log = logging.getLogger(__name__)


class ServerTls:
    def __init__(self, settings: TlsSettings) -> None:
        self._settings = settings
        self._reload = threading.Event()
        self._stamp = self._stamps()
        self._initial = self._configuration()

    def _stamps(self) -> tuple[int, ...]:
        s = self._settings
        files = [s.cert_file, s.key_file, *([s.client_ca_file] if s.client_ca_file else [])]
        return tuple(path.stat().st_mtime_ns for path in files)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        s = self._settings
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(s.cert_file, s.key_file)  # raises when the key does not fit the certificate
        ca = s.client_ca_file.read_bytes() if s.client_ca_file else None
        return grpc.ssl_server_certificate_configuration(
            [(s.key_file.read_bytes(), s.cert_file.read_bytes())], root_certificates=ca
        )

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._initial, self._fetch, require_client_authentication=self._settings.client_ca_file is not None
        )

    def reload(self) -> None:
        """Read the files again before the next handshake (SIGHUP)."""
        self._reload.set()

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            stamp = self._stamps()
        except OSError as exc:
            log.error("TLS files unreadable (%s); keeping the current certificate", exc)
            return None
        if stamp == self._stamp and not self._reload.is_set():
            return None
        self._reload.clear()
        try:
            configuration = self._configuration()
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.error("the new TLS certificate or key cannot be used (%s); keeping the current one", exc)
            return None
        self._stamp = stamp
        log.info("TLS certificate reloaded from %s", self._settings.cert_file)
        return configuration
