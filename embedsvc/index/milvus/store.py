"""Collections in Milvus: a catalog collection holding each embedsvc collection's configuration, and one Milvus
collection per embedsvc collection (named `es_` + the name's bytes in hex: Milvus names allow only letters, digits
and underscores). Every lookup asks Milvus, so several embedsvc replicas can serve the same collections.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

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
from embedsvc.index.types import CollectionConfig

log = logging.getLogger(__name__)
CATALOG = "embedsvc_catalog"
PREFIX = "es_"


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
        from pymilvus import DataType, Function, FunctionType

        for field, why in unsupported(config):
            raise not_supported(field, why)
        connection = self.connection
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
        row = {"name": config.name, "vector": [0.0, 0.0], "config": config.to_json().decode("utf-8")}
        connection.run("create", client.upsert, CATALOG, data=[row], write=True)
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
