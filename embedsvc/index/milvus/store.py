"""Collections in Milvus: a catalog collection holding each embedsvc collection's configuration, and one Milvus
collection per embedsvc collection (named `es_` + the name's bytes in hex: Milvus names allow only letters, digits
and underscores). Every lookup asks Milvus, so several embedsvc replicas can serve the same collections.

A collection exists for embedsvc once its catalog row does. Restoring a snapshot fills a Milvus collection under a
temporary name (`es_restore_<seconds>_<hex>`), renames it, then writes the catalog row: a failure drops it, and one
that a crash left behind is invisible (no catalog row) and dropped by the next start a day later (no restore takes
that long, and another replica's running restore must not be dropped).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.milvus.client import Connection, MilvusOptions, ensure_table
from embedsvc.index.milvus.collection import (
    FX,
    MAX_VARCHAR,
    METRICS,
    SPARSE,
    TEXT,
    MilvusCollection,
    index_params,
    not_supported,
    unsupported,
)
from embedsvc.index.milvus.expressions import literal
from embedsvc.index.snapshot_files import Manifest
from embedsvc.index.types import CollectionConfig, StoredItem, Upsert

log = logging.getLogger(__name__)
_WRITE_BATCH = 1000  # items per Milvus write when restoring
CATALOG = "embedsvc_catalog"
PREFIX = "es_"
RESTORING = "es_restore_"
_LEFTOVER_S = 24 * 3600


def milvus_name(name: str) -> str:
    return PREFIX + name.encode("utf-8").hex()


class MilvusStore:
    def __init__(self, options: MilvusOptions, *, max_id_bytes: int = 256) -> None:
        self.options = options
        self.max_id_bytes = max_id_bytes
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._collections: dict[str, MilvusCollection] = {}

    @property
    def connection(self) -> Connection:
        with self._lock:
            if self._connection is None:
                self._connection = Connection(self.options)
                self._ensure_catalog(self._connection)
            return self._connection

    def _ensure_catalog(self, connection: Connection) -> None:
        ensure_table(connection, CATALOG, "name", {"config": MAX_VARCHAR})

    def recover_all(self) -> None:
        """Connect and read the catalog; Milvus being down does not stop the server (calls retry the connection)."""
        try:
            names = self.names()
        except EmbedsvcError as exc:
            log.error("Milvus at %s is unavailable at start: %s (collection calls will retry)", self.options.uri, exc)
            return
        log.info("Milvus at %s: %d collections", self.options.uri, len(names))
        self._drop_leftovers()

    def _drop_leftovers(self) -> None:
        """Drop the temporary collections of restores that a crash stopped more than a day ago."""
        connection = self.connection
        try:
            found = connection.run("restore", connection.client.list_collections)
        except EmbedsvcError:
            return
        for name in found:
            started = name.removeprefix(RESTORING).split("_")[0]
            if name.startswith(RESTORING) and started.isdigit() and time.time() - int(started) > _LEFTOVER_S:
                log.warning("dropping %s, left by a restore that did not finish", name)
                connection.run("restore", connection.client.drop_collection, name, ddl=True)

    def _configs(self, expression: str = "") -> dict[str, CollectionConfig]:
        connection = self.connection
        rows = connection.run(
            "catalog",
            connection.client.query,
            CATALOG,
            filter=expression or 'name != ""',
            output_fields=["name", "config"],
        )
        return {r["name"]: CollectionConfig.from_json(r["config"]) for r in rows}

    def names(self) -> list[str]:
        return sorted(self._configs())

    def has(self, name: str) -> bool:
        try:
            return bool(self._configs(f"name == {literal(name)}"))
        except EmbedsvcError:
            return False

    def get(self, name: str) -> MilvusCollection:
        configs = self._configs(f"name == {literal(name)}")
        config = configs.get(name)
        if config is None:
            with self._lock:
                self._collections.pop(name, None)
            raise EmbedsvcError(
                Reason.COLLECTION_NOT_FOUND,
                f"no collection named '{name}'",
                field="collection",
                metadata={"collection": name},
            )
        connection = self.connection
        with self._lock:
            collection = self._collections.get(name)
            if collection is not None and collection.config == config:
                return collection
        collection = MilvusCollection(connection, config, milvus_name(name))
        # First use in this process: load it (idempotent; a reopened Milvus Lite file or a restarted Milvus may have
        # it released).
        connection.run("load", connection.client.load_collection, collection.name, ddl=True)
        with self._lock:
            self._collections[name] = collection
        return collection

    def keyword_unsupported(self) -> EmbedsvcError | None:
        try:
            return self.connection.full_text_unsupported()
        except EmbedsvcError as exc:  # Milvus unreachable: creating the collection will say so
            log.warning("cannot ask Milvus for its version: %s", exc)
            return None

    def create(self, config: CollectionConfig) -> MilvusCollection:
        for field, why in unsupported(config):
            raise not_supported(field, why)
        connection = self.connection
        stored = len(config.to_json())
        if stored > MAX_VARCHAR:  # a shaped collection's int8 ranges grow with its dimension (two sets with prompts)
            raise EmbedsvcError(
                Reason.BACKEND_UNSUPPORTED,
                f"the collection's configuration takes {stored} bytes (its int8/uint8 calibration ranges), more than "
                f"a Milvus catalog entry holds ({MAX_VARCHAR}); use the FAISS backend, fewer dimensions or no query "
                "prompt",
                field="shape",
                metadata={"backend": "milvus", "needed": f"{stored} bytes", "actual": str(MAX_VARCHAR)},
            )
        if config.keyword:
            refusal = connection.full_text_unsupported()
            if refusal is not None:
                refusal.field = "keyword"
                raise refusal
        client = connection.client
        name = milvus_name(config.name)
        if self.has(config.name) or connection.run("create", client.has_collection, name):
            raise EmbedsvcError(
                Reason.COLLECTION_EXISTS,
                f"a collection named '{config.name}' exists",
                field="name",
                metadata={"collection": config.name},
            )
        self._create_table(name, config)
        self._catalog(config)
        return self.get(config.name)

    def _catalog(self, config: CollectionConfig) -> None:
        connection = self.connection
        row = {"name": config.name, "vector": [0.0, 0.0], "config": config.to_json().decode("utf-8")}
        connection.run("create", connection.client.upsert, CATALOG, data=[row], write=True)

    def _create_table(self, name: str, config: CollectionConfig) -> None:
        from pymilvus import DataType, Function, FunctionType

        connection = self.connection
        client = connection.client
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=max(self.max_id_bytes, 1))
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=config.dimension)
        schema.add_field(FX, DataType.JSON)
        kind, params = index_params(config)
        index = client.prepare_index_params()
        index.add_index("vector", index_type=kind, metric_type=METRICS[config.metric], params=params)
        if config.keyword:
            # The text arrives analysed by embedsvc (collection.py): Milvus only splits it at spaces (and
            # underscores) and lowercases it, which leaves the terms as they are.
            analyzer = {"tokenizer": "standard", "filter": ["lowercase"]}
            schema.add_field(
                TEXT, DataType.VARCHAR, max_length=MAX_VARCHAR, enable_analyzer=True, analyzer_params=analyzer
            )
            schema.add_field(SPARSE, DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="bm25", function_type=FunctionType.BM25, input_field_names=[TEXT], output_field_names=[SPARSE]
                )
            )
            index.add_index(SPARSE, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        properties: dict[str, Any] = {} if config.index.mmap is None else {"mmap.enabled": config.index.mmap}
        try:
            connection.run(
                "create",
                client.create_collection,
                name,
                schema=schema,
                index_params=index,
                consistency_level=self.options.consistency,
                idempotent=False,
                ddl=True,
                properties=properties or None,
            )
        except EmbedsvcError as exc:
            if f"invalid index type: {kind.lower()}" not in exc.message.lower():
                raise
            # An index this server lacks (HNSW_SQ, IVF_RABITQ before Milvus 2.6): nothing is left behind.
            if connection.run("create", client.has_collection, name):
                connection.run("create", client.drop_collection, name, ddl=True)
            version = connection.run("create", client.get_server_version)
            raise not_supported(
                "index.quantization", f"this Milvus server ({version}) has no {kind} index; use FAISS, or IVF_SQ8"
            ) from None

    def restore(
        self,
        config: CollectionConfig,
        snapshot: str,
        source: Path,
        manifest: Manifest,
        items: Callable[[], Iterator[list[StoredItem]]],
        check: Callable[[], None],
        units: Callable[[int], None],
        *,
        replace: bool = False,
    ) -> MilvusCollection:
        """A new collection holding a snapshot's items, written under a temporary name, then renamed and entered in
        the catalog (see the module docstring). With `replace`, an existing collection of that name is dropped just
        before the rename: on Milvus that swap is not one step (a call in between finds no collection)."""
        for field, why in unsupported(config):
            raise not_supported(field, why)
        connection = self.connection
        client = connection.client
        final = milvus_name(config.name)
        if not replace and (self.has(config.name) or connection.run("restore", client.has_collection, final)):
            raise EmbedsvcError(
                Reason.COLLECTION_EXISTS,
                f"a collection named '{config.name}' exists (set replace_existing to restore over it)",
                field="name",
                metadata={"collection": config.name},
            )
        tmp = f"{RESTORING}{int(time.time())}_{secrets.token_hex(6)}"
        self._create_table(tmp, config)
        try:
            connection.run("load", client.load_collection, tmp, ddl=True)
            collection = MilvusCollection(connection, config, tmp)
            done = 0
            for batch in items():
                check()
                vectors = np.stack([i.vector for i in batch]).astype(np.float32)
                ids, metadata, inputs = [i.id for i in batch], [i.metadata for i in batch], [i.input for i in batch]
                for start in range(0, len(ids), _WRITE_BATCH):
                    part = slice(start, start + _WRITE_BATCH)
                    collection.upsert(Upsert(ids[part], vectors[part], metadata[part], inputs[part]))
                done += len(batch)
                units(done)
            check()
            if replace and self.has(config.name):
                self.delete(config.name)
            elif connection.run("restore", client.has_collection, final):  # a collection of a crashed restore
                log.warning("dropping Milvus collection %s, which no catalog entry names", final)
                connection.run("restore", client.drop_collection, final, ddl=True)
            connection.run("release", client.release_collection, tmp, ddl=True)
            connection.run("rename", client.rename_collection, tmp, final, idempotent=False, ddl=True)
        except BaseException:
            try:
                connection.run("restore", client.drop_collection, tmp, ddl=True)
            except EmbedsvcError as exc:
                log.error("cannot drop %s after a failed restore: %s (dropped a day later at start)", tmp, exc)
            raise
        self._catalog(config)
        return self.get(config.name)

    def delete(self, name: str) -> None:
        collection = self.get(name)  # COLLECTION_NOT_FOUND
        connection = self.connection
        collection.close()
        connection.run("delete", connection.client.drop_collection, collection.name, ddl=True)
        connection.run("delete", connection.client.delete, CATALOG, filter=f"name == {literal(name)}", write=True)
        with self._lock:
            self._collections.pop(name, None)

    def close_all(self, *, checkpoint: bool) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
            self._collections.clear()
        if connection is not None:
            connection.close()
