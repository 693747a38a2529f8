"""The gRPC server: services, health, reflection, interceptors, model loading and graceful shutdown.

The port opens at once; models load on a background thread while health says NOT_SERVING for the services that need
them, then SERVING. A model that fails to load is FAILED (ListModels / GetModel say why) and the others serve; any
other failure at start (`load_error`) stops the server with a one-line error.
"""

from __future__ import annotations

import logging
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from embedsvc.core.collections.admin import CollectionAdmin
from embedsvc.core.collections.reembed import REEMBED, Reembedder
from embedsvc.core.collections.service import Collections
from embedsvc.core.collections.snapshots import Snapshots
from embedsvc.core.images.directions import DirectionStore
from embedsvc.core.images.latents import Latents
from embedsvc.core.operations import OperationStore
from embedsvc.core.paging import PageTokens
from embedsvc.core.registry import ModelRegistry
from embedsvc.durable import DataDirLock
from embedsvc.errors import EmbedsvcError
from embedsvc.index.exact import configure_faiss
from embedsvc.index.state import replica_id
from embedsvc.index.stores import open_aliases, open_state, open_stores
from embedsvc.settings import Settings
from embedsvc.transport.admission import HEALTH_QUEUE, HEALTH_THREADS, Admission, CountingPool, Lane
from embedsvc.transport.audit import AuditLog
from embedsvc.transport.auth import KeyRing
from embedsvc.transport.http import HttpServer, private_socket
from embedsvc.transport.interceptors import Gateway
from embedsvc.transport.metrics import Metrics
from embedsvc.transport.services import HOSTED, Domain, Health, names
from embedsvc.transport.tls import ServerTls

log = logging.getLogger(__name__)

# Services that answer from the start, while models load.
ALWAYS_SERVING = names(Health.ALWAYS)
# Services that answer only once models are loaded and warmed up and collections recovered; "" is the whole server.
MODEL_BOUND_SERVICES = (*names(Health.MODELS), "")


class Server:
    """A bound, not yet started server; `start()` opens it and begins loading models."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = DataDirLock(settings.data_dir)  # first: nothing may touch a directory another server holds
        try:
            self._build(settings)
        except BaseException:
            self.lock.release()
            raise

    def _build(self, settings: Settings) -> None:
        """The steps, in order: each may fail (a bad setting, a port taken), and `__init__` releases the lock."""
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self.load_error: str | None = None
        domain = self._open_domain(settings)
        self._open_observers(settings)
        self._grpc = self._grpc_server(settings, self._gateway(settings))
        self._add_services(domain)
        self._add_health()
        if settings.reflection:
            self._add_reflection()
        self._open_http(settings)
        self._listen(settings)

    def _open_domain(self, settings: Settings) -> Domain:
        """The models, the collection stores and the durable state, and the domain objects built over them."""
        configure_faiss()
        self.registry = ModelRegistry(
            settings.all_models(),
            settings.data_dir,
            device=settings.device,
            max_queued_texts=settings.limits.max_queued_texts,
        )
        options = settings.storage_options()
        self.store = open_stores(options)
        self.tokens = (
            PageTokens(settings.page_token_secret.encode("utf-8"))
            if settings.page_token_secret
            else PageTokens.in_data_dir(settings.data_dir)
        )
        # The state replicas share (directions, operations, the snapshot catalogue): the data directory, or Milvus.
        self.records = open_state(options)
        self.replica = replica_id(settings.data_dir)
        self.operations = OperationStore(self.records, self.replica, resumable=(REEMBED,))
        self.aliases = open_aliases(options)
        self.directions = DirectionStore(self.records)
        limits = settings.limits
        latents = Latents(self.registry, self.directions, limits, self.tokens)
        collections = Collections(
            self.store, self.registry, limits, latents, aliases=self.aliases, tokens=self.tokens, records=self.records
        )
        admin = CollectionAdmin(collections, self.aliases, self.operations)
        self.reembedder = Reembedder(admin)
        self.snapshots = Snapshots(
            collections, self.records, self.operations, options.snapshots, self.replica, reserve=admin.reserve
        )
        return Domain(
            self.registry,
            limits,
            self.tokens,
            datetime.now(UTC),
            latents,
            collections,
            admin,
            self.reembedder,
            self.snapshots,
        )

    def _open_observers(self, settings: Settings) -> None:
        """Metrics (served once started) and the audit log (with auth)."""
        self.metrics = Metrics(self.registry, self.store) if settings.metrics_port is not None else None
        self.metrics_port: int | None = None
        auth = settings.auth
        self.audit = (
            AuditLog(settings.data_dir, max_bytes=auth.audit_max_bytes, files=auth.audit_files)
            if auth.enabled
            else None
        )

    def _gateway(self, settings: Settings) -> Gateway:
        """The interceptor every call passes, with the worker threads and a lane of their own for health checks
        (transport/admission.py)."""
        self._pools = (
            CountingPool(settings.max_workers, "rpc"),
            CountingPool(HEALTH_THREADS, "health"),
        )
        work, health_lane = (
            Lane(self._pools[0], settings.max_concurrent_rpcs, "max_concurrent_rpcs"),
            Lane(self._pools[1], HEALTH_QUEUE, "health_queue"),
        )
        auth = settings.auth
        return Gateway(
            keys=KeyRing(auth.keys) if auth.enabled else None,
            resolve=self.aliases.resolve,
            metrics=self.metrics,
            audit=self.audit,
            audit_reads=auth.audit_reads,
            default_deadline_s=settings.default_deadline_s,
            admission=Admission(
                max_calls=settings.max_concurrent_rpcs,
                max_streams=settings.max_concurrent_streams,
                max_heavy=settings.max_heavy_rpcs,
                keys=auth.keys if auth.enabled else (),
            ),
            stream_idle_timeout_s=settings.stream_idle_timeout_s,
            work=work,
            health=health_lane,
            max_health_watches=settings.max_health_watches,
        )

    def _grpc_server(self, settings: Settings, gateway: Gateway) -> grpc.Server:
        return grpc.server(
            self._pools[0],
            interceptors=[gateway],
            options=channel_options(settings),
            # A backstop behind admission control (which refuses with reasons, and keeps health checks apart): gRPC
            # itself refuses calls beyond this many, before any thread takes them. The front door keeps the count far
            # below it.
            maximum_concurrent_rpcs=(settings.max_concurrent_rpcs + HEALTH_QUEUE) * 4,
        )

    def _add_services(self, domain: Domain) -> None:
        """Every service of the table (transport/services.py), each with its servicer."""
        for hosted in HOSTED:
            hosted.service.add_to_server(hosted.servicer(domain), self._grpc)

    def _add_health(self) -> None:
        """grpc.health.v1: the services of the ALWAYS group serve at once, the others (and "", the whole server) once
        models are loaded (`_load`)."""
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        for name in ALWAYS_SERVING:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        for name in MODEL_BOUND_SERVICES:
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    def _add_reflection(self) -> None:
        hosted = tuple(h.service.full_name for h in HOSTED)
        reflection.enable_server_reflection((*hosted, health.SERVICE_NAME, reflection.SERVICE_NAME), self._grpc)

    def _open_http(self, settings: Settings) -> None:
        """The HTTP gateway (with --http-port). It reaches this server through a Unix socket only this user can open,
        so that its calls pass the same interceptor (keys, admission, limits, metrics, audit) as everyone's."""
        self.http: HttpServer | None = None
        self._http_folder: Path | None = None
        if settings.http_port is not None:
            internal, self._http_folder = private_socket()
            self._grpc.add_insecure_port(internal)
            self.http = HttpServer(settings, internal)

    def _listen(self, settings: Settings) -> None:
        """Bind the public port, with TLS when configured (port 0 picks a free one: `self.port`)."""
        address = f"{settings.host}:{settings.port}"
        self.tls = ServerTls(settings.tls) if settings.tls is not None else None
        try:
            if self.tls is not None:
                self.port = self._grpc.add_secure_port(address, self.tls.credentials())
            else:
                self.port = self._grpc.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address}: {exc}") from None

    def start(self) -> None:
        self._grpc.start()
        log.info("listening on %s:%d%s", self.settings.host, self.port, " (TLS)" if self.tls else "")
        if self.metrics is not None:
            host = self.settings.metrics_host or self.settings.host
            self.metrics_port = self.metrics.serve(host, self.settings.metrics_port or 0)
            log.info("metrics on http://%s:%d/metrics", host, self.metrics_port)
        if self.http is not None:
            self.http.start()
            log.info(
                "HTTP/JSON API on %s://%s:%d (explorer at /explorer/)", self.http.scheme, self.http.host, self.http.port
            )
        threading.Thread(target=self._load, name="model-loader", daemon=True).start()

    def _load(self) -> None:
        try:
            self.registry.load_all()
            # Collections bound to a model need it loaded; a damaged collection does not stop the others.
            self.store.recover_all()
            self._resume()
        except Exception as exc:
            self.load_error = str(exc)
            log.error("%s", exc)
            self.stop(0)
            return
        for name in MODEL_BOUND_SERVICES:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        failed = self.registry.failures()
        if failed and self.settings.exit_on_model_error:
            first = failed[0]
            prefix = f"model '{first.name}': "
            self.load_error = first.error if first.error.startswith(prefix) else prefix + first.error
            log.error("%s", self.load_error)
            self.stop(0)
            return
        if failed:
            log.warning(
                "serving without %d model(s) that failed to load: %s (GetModel shows why; LoadModel retries)",
                len(failed),
                "; ".join(f"{i.name}: {i.error}" for i in failed),
            )
        else:
            log.info("all models ready and collections recovered; serving")
        self.ready.set()

    def _resume(self) -> None:
        """Once collections are open: settle the operations a stop interrupted (re-embeds continue), and remove the
        snapshots a stop left half-made. The shared state being unreachable (Milvus down) does not stop the server."""
        try:
            self.operations.recover()
            self.reembedder.recover()
            self.snapshots.cleanup()
            self.operations.resume(REEMBED, self.reembedder.resume)
        except EmbedsvcError as exc:
            log.error("cannot read the shared state at start (%s): operations resume at the next start", exc)

    def wait_until_ready(self, timeout: float | None = None) -> None:
        """Block until every model is loaded; raise RuntimeError on a load failure or time-out."""
        while not self.ready.wait(0.05):
            if self.load_error is not None:
                raise RuntimeError(self.load_error)
            if timeout is not None:
                timeout -= 0.05
                if timeout <= 0:
                    raise TimeoutError("models are still loading")

    def stop(self, grace: float | None = None) -> None:
        """Health goes NOT_SERVING, new calls are refused, in-flight calls get `grace` seconds to finish."""
        if self.stopped.is_set():
            return
        self.health.enter_graceful_shutdown()
        grace = self.settings.grace_period_s if grace is None else grace
        if self.http is not None:
            self.http.close()
        if self._http_folder is not None:
            shutil.rmtree(self._http_folder, ignore_errors=True)
        self._grpc.stop(grace).wait()
        for pool in self._pools:
            pool.shutdown(wait=False)
        self.registry.close()
        self.operations.close()  # running operations stop and are recorded INTERRUPTED
        self.store.close_all(checkpoint=self.load_error is None)
        if self.metrics is not None:
            self.metrics.close()
        if self.audit is not None:
            self.audit.close()
        self.lock.release()
        log.info("stopped")
        self.stopped.set()

    def wait_for_termination(self) -> None:
        # In steps: a signal caught by another thread leaves the main thread asleep in an untimed wait, and Python runs
        # its handler (SIGTERM: stop) only once the main thread wakes. A graceful stop was seen lost that way.
        while not self.stopped.wait(0.5):
            pass


def channel_options(settings: Settings) -> list[tuple[str, int]]:
    """The gRPC server's options: message sizes, keepalive and connection lifetimes."""
    limits = settings.limits
    options = [
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", limits.max_message_bytes),
        # Two servers must never share a port silently.
        ("grpc.so_reuseport", 0),
        # Clients may ping every 10 s, also without calls (the keepalive settings of most gRPC clients).
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_ping_strikes", 2),
        # Calls waiting for the poll thread: past the soft limit gRPC refuses arriving calls with a rising
        # probability, past the hard one all of them (refusals in C, the cheapest there are).
        ("grpc.server.max_pending_requests", settings.max_pending_rpcs),
        ("grpc.server.max_pending_requests_hard_limit", 2 * settings.max_pending_rpcs),
    ]
    if settings.max_streams_per_connection > 0:
        options.append(("grpc.max_concurrent_streams", settings.max_streams_per_connection))
    if settings.keepalive_time_s > 0:
        options += [
            ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1e3)),
            ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1e3)),
        ]
    if settings.max_connection_idle_s > 0:
        options.append(("grpc.max_connection_idle_ms", int(settings.max_connection_idle_s * 1e3)))
    if settings.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1e3)),
            ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1e3)),
        ]
    return options


def create_server(settings: Settings) -> tuple[Server, int]:
    """Build and bind a server (port 0 picks a free one); call `start()` to serve."""
    server = Server(settings)
    return server, server.port
