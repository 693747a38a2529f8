"""One collection in Milvus: its items as Milvus rows, searched by Milvus, behaving as the FAISS backend's do.

Row: `id` (VARCHAR primary key), `vector` and `fx`, one JSON document holding the filter index (see expressions.py),
the metadata in embedsvc's stored JSON form (returned as is, so types round-trip exactly) and the raw input of a bound
collection. Nothing is kept locally: every call asks Milvus, so replicas of embedsvc can share a collection.

A collection with a keyword index (Milvus 2.5 or later) also has `text`, a VARCHAR analysed by Milvus, and `sparse`,
the sparse vector Milvus's BM25 function derives from it (Milvus's own full-text search: its inverted index, its
BM25 statistics, filters applied by Milvus). `text` holds the item's input as embedsvc's analyzer sees it (its terms,
space-separated: index/keyword/analyzer.py), and queries are analysed the same way, so both backends match the same
terms in every language embedsvc offers: Milvus's own analyzers differ by version (Milvus Lite 3.2 accepts stopword
and stemmer filters and ignores them: "wings" does not find "wing" there), and its tokenizer only splits the terms
again where they hold an underscore, on both sides alike. Scores are Milvus's BM25 (k1 1.2, b 0.75).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedsvc import calls
from embedsvc.errors import EmbedsvcError, Reason, limit_exceeded
from embedsvc.index import metadata as stored
from embedsvc.index.filtering import Filter
from embedsvc.index.keyword.analyzer import terms
from embedsvc.index.milvus import bulk
from embedsvc.index.milvus.client import Connection
from embedsvc.index.milvus.expressions import FX, INPUT, META, filter_index, literal, translate
from embedsvc.index.snapshot_files import ITEMS, ItemsWriter, Taken
from embedsvc.index.types import (
    HIT_OVERHEAD,
    CollectionConfig,
    Hit,
    IndexKind,
    KeywordHits,
    Metric,
    Quantization,
    Searched,
    State,
    StoredItem,
    Upsert,
    response_too_large,
)
from embedsvc.stats import Histogram

METRICS = {Metric.COSINE: "COSINE", Metric.L2: "L2", Metric.INNER_PRODUCT: "IP"}
# Milvus's VARCHAR holds at most this many bytes (inputs and metadata of a Milvus collection).
MAX_VARCHAR = 65_535
MAX_FX_BYTES = 65_000
_QUERY_CHUNK = 1024  # queries per Milvus search call (BatchSearch takes at most limits.max_queries)
# The full-text fields of a collection with a keyword index.
TEXT = "text"
SPARSE = "sparse"
UNKNOWN_COUNT = -1
_ID_CHUNK = 1000
_SNAPSHOT_PAGE = 2000  # items per query of a snapshot's export


def index_params(config: CollectionConfig) -> tuple[str, dict[str, Any]]:
    """The Milvus index of a collection's kind and quantisation (see `unsupported` for what has none)."""
    p = config.index
    if p.kind is IndexKind.HNSW:
        if p.quantization is Quantization.INT8:
            return "HNSW_SQ", {"M": p.m, "efConstruction": p.ef_construction, "sq_type": "SQ8"}
        return "HNSW", {"M": p.m, "efConstruction": p.ef_construction}
    if p.kind is IndexKind.IVF_FLAT:
        if p.quantization is Quantization.INT8:
            return "IVF_SQ8", {"nlist": p.nlist}
        if p.quantization is Quantization.RABITQ:
            return "IVF_RABITQ", {"nlist": p.nlist}
        return "IVF_FLAT", {"nlist": p.nlist}
    if p.kind is IndexKind.IVF_PQ:
        return "IVF_PQ", {"nlist": p.nlist, "m": p.pq_m, "nbits": p.pq_bits}
    return "FLAT", {}


def unsupported(config: CollectionConfig) -> list[tuple[str, str]]:
    """(field, why) for each option of the configuration that Milvus has no equivalent of, whatever its version:
    quantised FLAT (no such Milvus index), RaBitQ other than IVF with 1 bit, recall targets and oversampling (the
    embedded backend's calibration and rescoring), indexed metadata fields (no JSON path index in the Milvus servers
    this supports: they would need Milvus 2.5.11's)."""
    p = config.index
    out = []
    if p.kind is IndexKind.FLAT and p.quantization is not Quantization.NONE:
        out.append(("index.quantization", "Milvus has no quantised FLAT index; use IVF_FLAT (int8 is IVF_SQ8)"))
    if p.quantization is Quantization.RABITQ and (p.kind is not IndexKind.IVF_FLAT or p.rabitq_bits != 1):
        out.append(("index.rabitq_bits", "Milvus's RaBitQ index is IVF_RABITQ, with 1 bit per component"))
    if p.target_recall:
        out.append(
            ("index.target_recall", "recall targets are the embedded (FAISS) backend's; set nprobe or ef_search")
        )
    if p.oversample:
        out.append(("index.oversample", "oversampling and rescoring are the embedded (FAISS) backend's"))
    if config.indexed_fields:
        out.append(
            (
                "indexed_fields",
                "indexed metadata fields need JSON path indexes, which these Milvus servers lack (Milvus 2.5.11 has "
                "them); filters on any field work without them",
            )
        )
    return out


@dataclass(frozen=True)
class Staged:
    """A staged write: an UpsertRequest built column by column, or rows for MilvusClient.upsert."""

    request: Any
    rows: list[dict[str, Any]] | None


def not_supported(field: str, message: str) -> EmbedsvcError:
    """An option that the Milvus backend has no equivalent of: FAILED_PRECONDITION / OPERATION_NOT_SUPPORTED."""
    return EmbedsvcError(Reason.OPERATION_NOT_SUPPORTED, message, field=field, metadata={"backend": "milvus"})


def _metadata(document: dict[str, Any]) -> dict[str, Any]:
    text = document.get(META)
    return stored.loads(text) if text else {}


def _input(document: dict[str, Any]) -> str:
    text = document.get(INPUT)
    return bytes.fromhex(text).decode("utf-8") if text else ""


def ids_expression(ids: Sequence[str]) -> str:
    return "id in [" + ", ".join(literal(i) for i in ids) + "]"


class MilvusCollection:
    def __init__(self, connection: Connection, config: CollectionConfig, milvus_name: str) -> None:
        self.connection = connection
        self.config = config
        self.name = milvus_name
        self.state = State.READY
        self.error = ""
        self.checkpoint_error = ""
        self.checkpoint_failures = 0
        self._rebuilding = False
        self._closed = False
        # Column-built UpsertRequests (bulk.py) unless pymilvus lacks a piece of them, or under Session consistency
        # (which needs pymilvus's own bookkeeping of write timestamps).
        self._fast_writes = bulk.available() and connection.options.consistency != "Session"

    @property
    def client(self) -> Any:
        return self.connection.client

    # ---- what the service asks of every backend ------------------------------------------------------------------

    def check_ready(self) -> None:
        if self._closed:
            raise EmbedsvcError(Reason.STORAGE_ERROR, f"collection '{self.config.name}' is closed")

    @property
    def count(self) -> int:
        rows = self.connection.run("count", self.client.query, self.name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    @property
    def tombstones(self) -> int:
        return 0  # Milvus compacts deleted rows itself

    @property
    def log_bytes(self) -> int:
        return 0

    @property
    def rebuilding(self) -> bool:
        return self._rebuilding

    @property
    def fsync_seconds(self) -> Histogram | None:
        return None

    @property
    def checkpoint_seconds(self) -> Histogram | None:
        return None

    def stage(self, op: Upsert) -> Staged:
        """The write in Milvus's form, checked against Milvus's field limits (built apart from `commit` so that a
        stream can build batch n + 1 while Milvus takes batch n)."""
        self.check_ready()
        documents = []
        for meta, raw in zip(op.metadata, op.inputs, strict=True):
            document = filter_index(meta) if meta else {}
            if meta:
                document[META] = stored.dumps(meta)
            if raw:
                document[INPUT] = raw.encode("utf-8").hex()
            documents.append(document)
        encoded = [bulk.document_bytes(d) for d in documents]
        for item_id, data in zip(op.ids, encoded, strict=True):
            if len(data) > MAX_FX_BYTES:
                raise limit_exceeded(
                    "items",
                    f"bytes of item {item_id!r}'s metadata and input as Milvus holds them (a JSON field)",
                    len(data),
                    MAX_FX_BYTES,
                )
        texts = self._analysed(op) if self.config.keyword else None
        if self._fast_writes:
            return Staged(bulk.upsert_request(self.name, op.ids, op.vectors, encoded, texts), None)
        vectors = op.vectors.tolist()
        rows = [{"id": i, "vector": v, FX: d} for i, v, d in zip(op.ids, vectors, documents, strict=True)]
        if texts is not None:
            for row, text in zip(rows, texts, strict=True):
                row[TEXT] = text
        return Staged(None, rows)

    def _analysed(self, op: Upsert) -> list[str]:
        """Each item's text as its terms, space-separated (what Milvus indexes for BM25)."""
        texts = [" ".join(terms(raw, self.config.keyword)) if raw else "" for raw in op.inputs]
        for item_id, text in zip(op.ids, texts, strict=True):
            if len(text.encode("utf-8")) > MAX_VARCHAR:
                raise limit_exceeded(
                    "items", f"bytes of item {item_id!r}'s analysed text (a Milvus VARCHAR)", len(text), MAX_VARCHAR
                )
        return texts

    def commit(self, staged: Staged) -> int:
        self.check_ready()
        # Upserting the same rows again leaves the same state: safe to retry.
        if staged.request is not None:
            self.connection.run("upsert", bulk.send, self.client, staged.request, write=True)
        else:
            self.connection.run("upsert", self.client.upsert, self.name, data=staged.rows, write=True)
        # Not the count: Milvus counts by scanning (count(*) took 3.8 s at 100k items on Milvus Lite), too dear for
        # every write. GetCollection has it.
        return UNKNOWN_COUNT

    def upsert(self, op: Upsert) -> int:
        return self.commit(self.stage(op))

    def delete(self, ids: Sequence[str]) -> tuple[int, int]:
        self.check_ready()
        present = self._present(ids)
        if present:
            for start in range(0, len(present), _ID_CHUNK):
                chunk = present[start : start + _ID_CHUNK]
                self.connection.run("delete", self.client.delete, self.name, filter=ids_expression(chunk), write=True)
        return len(present), len(ids) - len(present)

    def _present(self, ids: Sequence[str]) -> list[str]:
        found: set[str] = set()
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = list(ids[start : start + _ID_CHUNK])
            rows = self.connection.run(
                "get", self.client.query, self.name, filter=ids_expression(chunk), output_fields=["id"]
            )
            found |= {r["id"] for r in rows}
        return [i for i in ids if i in found]

    def get(self, ids: Sequence[str], *, with_vectors: bool) -> list[StoredItem | None]:
        self.check_ready()
        fields = ["id", FX] + (["vector"] if with_vectors else [])
        by_id: dict[str, StoredItem] = {}
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = list(ids[start : start + _ID_CHUNK])
            rows = self.connection.run(
                "get", self.client.query, self.name, filter=ids_expression(chunk), output_fields=fields
            )
            for row in rows:
                by_id[row["id"]] = self._item(row, with_vectors)
        return [by_id.get(i) for i in ids]

    def _item(self, row: dict[str, Any], with_vectors: bool) -> StoredItem:
        vector = np.asarray(row["vector"], np.float32) if with_vectors else np.empty(0, np.float32)
        document = row[FX] or {}
        return StoredItem(row["id"], vector, _metadata(document), _input(document))

    def ids_with_inputs(self, inputs: set[str]) -> set[str]:
        if not inputs:
            return set()
        path = f'{FX}["{INPUT}"]'
        options = " or ".join(f"{path} == {literal(i.encode('utf-8').hex())}" for i in sorted(inputs))
        expression = f"((exists {path}) and ({options}))"
        rows = self.connection.run("query", self.client.query, self.name, filter=expression, output_fields=["id"])
        return {r["id"] for r in rows}

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        where: Filter | None = None,
        exclude: Sequence[set[str]] = (),
        ef_search: int = 0,
        nprobe: int = 0,
        oversample: int = 0,
        target_recall: float = 0.0,
        exact: bool = False,
        with_metadata: bool = True,
        with_vectors: bool = False,
        max_response_bytes: int = 0,
    ) -> Searched:
        """k hits per query, Milvus filtering exactly (no shortfall), excluded ids dropped from k + their number.

        `exact` on an IVF index probes every list (exact for IVF_FLAT); an HNSW search stays approximate (with ef
        raised to 4,096), and the result says so. A target recall or an oversampling is refused: they are the
        embedded backend's (its calibration, its rescoring)."""
        self.check_ready()
        for field, value in (("options.target_recall", target_recall), ("options.oversample", oversample)):
            if value:
                raise not_supported(field, f"{field.split('.')[1]} is not offered on Milvus collections")
        p = self.config.index
        extra = max((len(e) for e in exclude), default=0)
        want = k + extra
        params: dict[str, int] = {}
        was_exact = p.kind is IndexKind.FLAT
        if p.kind is IndexKind.HNSW:
            params["ef"] = max(ef_search or p.ef_search, want, 4096 if exact else 0)
        elif p.is_ivf:
            params["nprobe"] = p.nlist if exact else min(nprobe or p.nprobe, p.nlist)
            was_exact = exact and p.kind is IndexKind.IVF_FLAT
        expression = translate(where.node) if where is not None else ""
        # Only what the hits need: a collection bound to no model has no inputs, and every field Milvus fetches for
        # k x queries hits costs (fetching "input" of an unbound collection made BatchSearch 1.3x slower).
        bound = bool(self.config.model)
        fields = ["id"] + ([FX] if bound or with_metadata else []) + (["vector"] if with_vectors else [])
        metric = METRICS[self.config.metric]
        results: list[list[Hit]] = []
        spent = 0
        vector_bytes = 4 * self.config.dimension if with_vectors else 0
        exhaustive = dict(params)
        if p.kind is IndexKind.HNSW:
            exhaustive["ef"] = max(params["ef"], 4096)
        elif p.is_ivf:
            exhaustive["nprobe"] = p.nlist
        for start in range(0, len(queries), _QUERY_CHUNK):
            calls.check()
            chunk = np.ascontiguousarray(queries[start : start + _QUERY_CHUNK], dtype=np.float32)
            answers = self._search(chunk, want, expression, fields, {"metric_type": metric, "params": params})
            if expression and exhaustive != params:
                # No shortfall: a filtered ANN search probes only part of the index and may find fewer than asked
                # for; those queries again, with every IVF list probed (or HNSW's widest ef).
                short = [q for q, answer in enumerate(answers) if len(answer) < want]
                if short:
                    again = self._search(
                        chunk[short], want, expression, fields, {"metric_type": metric, "params": exhaustive}
                    )
                    for q, answer in zip(short, again, strict=True):
                        answers[q] = answer
            for q, answer in enumerate(answers):
                skip = exclude[start + q] if start + q < len(exclude) else set()
                rows = [r for r in answer if r["id"] not in skip][:k]
                for row in rows:
                    entity = row.get("entity", row)
                    document = entity.get(FX) or {}
                    spent += HIT_OVERHEAD + vector_bytes + len(row["id"]) + len(document.get(INPUT, "")) // 2
                    spent += len(document.get(META, "")) if with_metadata else 0
                if max_response_bytes and spent > max_response_bytes:
                    raise response_too_large(spent, max_response_bytes)
                results.append([self._hit(row, with_metadata, with_vectors) for row in rows])
        return Searched(results, was_exact)

    def _search(
        self, chunk: np.ndarray, limit: int, expression: str, fields: list[str], search_params: dict[str, Any]
    ) -> list[list[dict[str, Any]]]:
        answers = self.connection.run(
            "search",
            self.client.search,
            self.name,
            data=chunk.tolist(),
            anns_field="vector",
            limit=limit,
            filter=expression,
            output_fields=fields,
            search_params=search_params,
        )
        return [list(answer) for answer in answers]

    @staticmethod
    def _hit(row: dict[str, Any], with_metadata: bool, with_vectors: bool) -> Hit:
        entity = row.get("entity", row)
        return Hit(
            -1,
            row["id"],
            float(row["distance"]),
            _metadata(entity.get(FX) or {}) if with_metadata else None,
            _input(entity.get(FX) or {}),
            np.asarray(entity["vector"], np.float32) if with_vectors else None,
        )

    @property
    def keyword_language(self) -> str:
        return self.config.keyword

    def require_keyword_index(self) -> None:
        if self.config.keyword:
            return
        unsupported = self.connection.full_text_unsupported()
        if unsupported is not None:
            raise unsupported
        raise EmbedsvcError(
            Reason.KEYWORD_INDEX_MISSING,
            f"collection '{self.config.name}' has no keyword index (create it with one: "
            "CreateCollectionRequest.keyword), so it answers dense searches only",
            field="options.mode",
            metadata={"collection": self.config.name},
        )

    def keyword_search(
        self,
        texts: Sequence[str],
        k: int,
        *,
        where: Filter | None = None,
        exclude: Sequence[set[str]] = (),
        with_metadata: bool = True,
        with_vectors: bool = False,
        max_response_bytes: int = 0,
    ) -> list[KeywordHits]:
        """BM25 through Milvus's full-text search: the queries' terms (embedsvc's analysis) against `sparse`, Milvus
        filtering; excluded ids dropped from k + their number. Milvus Lite reports BM25 scores negated (lower
        first); scores here are BM25's, higher closer, on every version."""
        self.check_ready()
        self.require_keyword_index()
        queried = [terms(text, self.config.keyword) for text in texts]
        results = [KeywordHits([], found) for found in queried]
        asked = [q for q, found in enumerate(queried) if found]
        if not asked:
            return results
        extra = max((len(e) for e in exclude), default=0)
        expression = translate(where.node) if where is not None else ""
        fields = ["id", FX] + (["vector"] if with_vectors else [])
        spent = 0
        vector_bytes = 4 * self.config.dimension if with_vectors else 0
        for start in range(0, len(asked), _QUERY_CHUNK):
            calls.check()
            chunk = asked[start : start + _QUERY_CHUNK]
            answers = self.connection.run(
                "search",
                self.client.search,
                self.name,
                data=[" ".join(queried[q]) for q in chunk],
                anns_field=SPARSE,
                limit=k + extra,
                filter=expression,
                output_fields=fields,
                search_params={"metric_type": "BM25"},
            )
            for q, answer in zip(chunk, answers, strict=True):
                skip = exclude[q] if q < len(exclude) else set()
                rows = [r for r in answer if r["id"] not in skip][:k]
                for row in rows:
                    row["distance"] = abs(float(row["distance"]))
                    document = row.get("entity", row).get(FX) or {}
                    spent += HIT_OVERHEAD + vector_bytes + len(row["id"]) + len(document.get(INPUT, "")) // 2
                    spent += len(document.get(META, "")) if with_metadata else 0
                if max_response_bytes and spent > max_response_bytes:
                    raise response_too_large(spent, max_response_bytes)
                rows.sort(key=lambda r: -r["distance"])
                results[q] = KeywordHits([self._hit(r, with_metadata, with_vectors) for r in rows], queried[q])
        return results

    def export(self, batch_size: int, after: str | None = None) -> Iterator[list[StoredItem]]:
        """Every item in id order, `batch_size` at a time: pages of `id > last` in primary-key order (the ordering
        pymilvus's query iterator asks for; its own cursor expression does not escape string keys, so ids with quotes
        or newlines would break it)."""
        self.check_ready()
        last = after
        while True:
            calls.check()
            rows = self.connection.run(
                "export",
                self.client.query,
                self.name,
                filter=f"id > {literal(last)}" if last is not None else 'id != ""',
                limit=batch_size,
                output_fields=["id", FX, "vector"],
                iterator="True",
                reduce_stop_for_best="True",
            )
            if not rows:
                return
            rows = sorted(rows, key=lambda r: r["id"])
            yield [self._item(r, True) for r in rows]
            # Not `len(rows) < batch_size`: with reduce_stop_for_best a page may stop short of the batch size.
            last = rows[-1]["id"]

    def snapshot(
        self, dest: Path, check: Callable[[], None] = lambda: None, units: Callable[[int], None] = lambda _n: None
    ) -> Taken:
        """Every item, in id order, as an "items" snapshot in `dest` (index/snapshot_files.py). A logical export
        through the same queries as `export`: where the server answers the first page with an MVCC timestamp
        (Milvus 2.4 and later), every later page is read at that timestamp and the snapshot is the collection at one
        moment; otherwise (Milvus Lite, Milvus 2.3) each page is read as it is then, so a write made during the
        export may or may not be in it (an item present throughout is there exactly once)."""
        self.check_ready()
        writer = ItemsWriter(dest, self.config.dimension)
        pinned = 0
        last: str | None = None
        while True:
            check()
            options: dict[str, Any] = {"guarantee_timestamp": pinned} if pinned else {}
            rows = self.connection.run(
                "snapshot",
                self.client.query,
                self.name,
                filter=f"id > {literal(last)}" if last is not None else 'id != ""',
                limit=_SNAPSHOT_PAGE,
                output_fields=["id", FX, "vector"],
                iterator="True",
                reduce_stop_for_best="True",
                **options,
            )
            if last is None:
                extra = getattr(rows, "extra", None) or {}
                pinned = int(extra.get("iterator_session_ts", 0) or 0)
            if not rows:
                break
            rows = sorted(rows, key=lambda r: r["id"])
            writer.add([self._item(r, True) for r in rows])
            units(writer.added)
            last = rows[-1]["id"]
        files = writer.close()
        return Taken(ITEMS, writer.count, pinned, pinned > 0, files)

    def rebuild(
        self,
        stage: Callable[[str, int], None] = lambda _stage, _total: None,
        units: Callable[[int], None] = lambda _done: None,
        check: Callable[[], None] = lambda: None,
    ) -> None:
        """Compact (drop deleted rows), then build the index again from the collection's parameters."""
        self.check_ready()
        self._rebuilding = True
        try:
            stage("compacting", 0)
            job = self.connection.run("compact", self.client.compact, self.name, idempotent=False, write=True, ddl=True)
            while True:
                check()
                state = str(self.connection.run("compaction", self.client.get_compaction_state, job))
                if "complete" in state.lower() or "undefined" in state.lower():
                    break
                time.sleep(0.2)
            stage("indexing", 0)
            kind, params = index_params(self.config)
            index = self.client.prepare_index_params()
            index.add_index("vector", index_type=kind, metric_type=METRICS[self.config.metric], params=params)
            self.connection.run("release", self.client.release_collection, self.name, ddl=True)
            try:
                self.connection.run("drop index", self.client.drop_index, self.name, index_name="vector", ddl=True)
                self.connection.run(
                    "create index", self.client.create_index, self.name, index, idempotent=False, ddl=True
                )
            finally:
                self.connection.run("load", self.client.load_collection, self.name, ddl=True)
        finally:
            self._rebuilding = False

    def info(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "trained": True,
            "tombstones": 0,
            "disk_bytes": 0,
            "memory_bytes": 0,
            "checkpoint_error": "",
            "checkpoint_failures": 0,
        }

    def close(self) -> None:
        self._closed = True
