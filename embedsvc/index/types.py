"""What every collection backend shares: metrics, index kinds and their parameters, a collection's configuration,
and the items and hits that come back. No engine is imported here."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np

from embedsvc.errors import EmbedsvcError, Reason, limit_exceeded


class Backend(StrEnum):
    """Where a collection's items live."""

    FAISS = "faiss"  # embedded: files under the data directory, FAISS indexes in memory
    MILVUS = "milvus"  # a Milvus server or cluster, or Milvus Lite (a local file)


class State(StrEnum):
    RECOVERING = "recovering"
    READY = "ready"
    DATA_LOSS = "data_loss"


class Metric(StrEnum):
    COSINE = "cosine"
    L2 = "l2"
    INNER_PRODUCT = "ip"


class IndexKind(StrEnum):
    FLAT = "flat"
    HNSW = "hnsw"
    IVF_FLAT = "ivf-flat"
    IVF_PQ = "ivf-pq"


class Quantization(StrEnum):
    """How an index compresses its vectors (FLAT, HNSW and IVF-FLAT; IVF-PQ is quantised by its kind). A quantised
    index fetches `oversample` x k candidates by their codes and rescores them with the exact float vectors."""

    NONE = "none"
    INT8 = "int8"  # a scalar quantiser, one byte per component (FAISS SQ8): 0.25 x the float vectors
    RABITQ = "rabitq"  # RaBitQ, `rabitq_bits` bits per component (1 bit: d / 8 bytes and a few factors)


class FieldType(StrEnum):
    """The type of an indexed metadata field: every item's value must be one of it, a list of them, or absent."""

    STRING = "string"
    INTEGER = "integer"
    TIMESTAMP = "timestamp"


@dataclass(frozen=True)
class IndexedField:
    """A metadata field that equality, IN and range filters find through an index, at a cost in proportion to the
    items that match (declared when the collection is created)."""

    name: str
    type: FieldType


# Oversampling when a quantised index does not say: candidates fetched per hit, rescored with the float vectors.
# Measured on clustered d = 128 vectors (README's cost curve): int8 reaches recall@10 1.0 after rescoring at 2;
# RaBitQ needs more the fewer bits it keeps (4 bits: 0.99 at 4; 1 bit: 0.81 at 10); PQ (m = d / 4, 8 bits) at 4.
_OVERSAMPLE = {"int8": 2, "pq": 4}
_RABITQ_OVERSAMPLE = {1: 16, 2: 8, 3: 6, 4: 4}
# What a collection's searches aim for unless a request says otherwise: recall@10 against exact search, estimated on
# a sample of the collection's own vectors (IVF and HNSW kinds, and quantised FLAT).
DEFAULT_TARGET_RECALL = 0.95


@dataclass(frozen=True)
class IndexParams:
    """Index kind and parameters; 0 means "the default" until `resolved`.

    `quantization` compresses FLAT, HNSW and IVF-FLAT indexes (int8 on IVF-FLAT is FAISS's IVF-SQ8); a quantised index
    and IVF-PQ fetch `oversample` x k candidates by their codes and rescore them with the float vectors (which stay
    on disk, memory-mapped). `target_recall` is what searches aim for: the service measures recall against exact
    search on a sample of the collection's own vectors and picks nprobe, ef_search or the oversampling that reaches
    it. Unset, it is DEFAULT_TARGET_RECALL, unless the knob itself is set (nprobe for IVF, ef_search for HNSW, the
    oversampling of a quantised FLAT index): then 0, the knob as set. `mmap` False reads the float vectors into
    memory at open instead of mapping them."""

    kind: IndexKind = IndexKind.FLAT
    m: int = 0
    ef_construction: int = 0
    ef_search: int = 0
    nlist: int = 0
    nprobe: int = 0
    pq_m: int = 0
    pq_bits: int = 0
    quantization: Quantization = Quantization.NONE
    rabitq_bits: int = 0
    oversample: int = 0
    target_recall: float = 0.0
    mmap: bool | None = None  # None: the backend's default (mapped, on FAISS)

    def resolved(self, dimension: int, *, rescoring: bool = True) -> IndexParams:
        """Defaults filled in for this kind; parameters of other kinds zeroed. `rescoring` False (a backend that
        neither rescores nor calibrates: Milvus) leaves oversample and target_recall as asked, so that the backend can
        refuse them when set."""
        knob_set = (
            (self.kind is IndexKind.HNSW and self.ef_search)
            or (self.is_ivf and self.nprobe)
            or (self.kind is IndexKind.FLAT and self.quantization is not Quantization.NONE and self.oversample)
        )
        bits = oversample = 0
        if self.quantization is Quantization.RABITQ:
            bits = self.rabitq_bits or 4
            oversample = self.oversample or _RABITQ_OVERSAMPLE.get(bits, 3)
        elif self.quantization is Quantization.INT8:
            oversample = self.oversample or _OVERSAMPLE["int8"]
        elif self.kind is IndexKind.IVF_PQ:
            oversample = self.oversample or _OVERSAMPLE["pq"]
        target = self.target_recall or (0.0 if knob_set else DEFAULT_TARGET_RECALL)
        if not rescoring:
            oversample, target = self.oversample, self.target_recall
        common = IndexParams(
            self.kind,
            quantization=self.quantization,
            rabitq_bits=bits,
            oversample=oversample,
            target_recall=target,
            mmap=self.mmap,
        )
        if self.kind is IndexKind.FLAT:
            return common
        if self.kind is IndexKind.HNSW:
            return replace(
                common, m=self.m or 32, ef_construction=self.ef_construction or 200, ef_search=self.ef_search or 64
            )
        nlist = self.nlist or 256
        ivf = replace(common, nlist=nlist, nprobe=self.nprobe or min(16, nlist))
        if self.kind is IndexKind.IVF_FLAT:
            return ivf
        pq_m = self.pq_m or next(m for m in (64, 32, 16, 8, 4, 2, 1) if dimension % m == 0)
        return replace(ivf, pq_m=pq_m, pq_bits=self.pq_bits or 8)

    def problems(self, dimension: int) -> list[tuple[str, str]]:
        """(field, message) for each parameter out of range; call on resolved params."""
        checks = [
            ("m", 2 <= self.m <= 256 if self.kind is IndexKind.HNSW else True, "m must be 2..256"),
            ("ef_construction", 1 <= self.ef_construction <= 4096 or self.kind is not IndexKind.HNSW, "1..4096"),
            ("ef_search", 1 <= self.ef_search <= 4096 or self.kind is not IndexKind.HNSW, "1..4096"),
            ("nlist", 1 <= self.nlist <= 65536 or not self.is_ivf, "1..65536"),
            ("nprobe", 1 <= self.nprobe <= self.nlist or not self.is_ivf, "1..nlist"),
            (
                "pq_m",
                self.kind is not IndexKind.IVF_PQ or (self.pq_m > 0 and dimension % self.pq_m == 0),
                f"must divide the dimension {dimension}",
            ),
            ("pq_bits", self.kind is not IndexKind.IVF_PQ or 1 <= self.pq_bits <= 16, "1..16"),
            (
                "quantization",
                self.kind is not IndexKind.IVF_PQ or self.quantization is Quantization.NONE,
                "IVF-PQ is quantised by its kind: leave quantization unset",
            ),
            (
                "quantization",
                self.kind is not IndexKind.HNSW or self.quantization is not Quantization.RABITQ,
                "RaBitQ is offered on FLAT and IVF indexes (FAISS's HNSW with RaBitQ supports L2 only); use int8",
            ),
            ("rabitq_bits", self.quantization is not Quantization.RABITQ or 1 <= self.rabitq_bits <= 8, "1..8"),
            ("oversample", 0 <= self.oversample <= 100, "0..100"),
            ("target_recall", 0.0 <= self.target_recall <= 1.0, "0 (the knobs as set) to 1"),
        ]
        return [(f"index.{name}", f"{name}: {message}") for name, ok, message in checks if not ok]

    @property
    def is_ivf(self) -> bool:
        return self.kind in (IndexKind.IVF_FLAT, IndexKind.IVF_PQ)

    @property
    def quantised(self) -> bool:
        """Searched by codes, so candidates are rescored with the float vectors."""
        return self.quantization is not Quantization.NONE or self.kind is IndexKind.IVF_PQ

    @property
    def train_size(self) -> int:
        """Vectors needed before training (FAISS wants about 39 points per centroid; a scalar quantiser learns each
        component's range, RaBitQ the centre of the data)."""
        if self.kind is IndexKind.IVF_FLAT:
            return 39 * self.nlist
        if self.kind is IndexKind.IVF_PQ:
            return 39 * max(self.nlist, 1 << self.pq_bits)
        if self.quantization is not Quantization.NONE:
            return QUANTISER_TRAIN_SIZE
        return 0

    @property
    def train_rows(self) -> int:
        """Rows an index is trained on at most (a seeded sample of the live rows beyond it): k-means uses 256 per
        centroid at most; a quantiser's ranges and PQ's codebooks need far fewer than 100,000."""
        centroids = max(self.nlist, (1 << self.pq_bits) if self.kind is IndexKind.IVF_PQ else 1)
        return max(self.train_size, 256 * centroids, 100_000)


# Vectors a quantised FLAT or HNSW index is trained on (its ranges or centre); searched exactly until then.
QUANTISER_TRAIN_SIZE = 1000


class SearchMode(StrEnum):
    DENSE = "dense"
    KEYWORD = "keyword"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class SearchDefaults:
    """What a collection's searches get when a request does not say (stored with its configuration); empty / 0 /
    None: the service's defaults (core/collections/fusion.py)."""

    mode: SearchMode = SearchMode.DENSE
    fusion: str = ""  # "rrf" | "weighted" | ""
    rrf_k: int = 0
    dense_weight: float | None = None
    candidates: int = 0


@dataclass(frozen=True)
class CollectionConfig:
    name: str
    dimension: int
    metric: Metric
    index: IndexParams
    model: str = ""
    model_version: str = ""
    space: str = ""
    # Seconds since the epoch (UTC); 0 in collections made before it was recorded (then the config file's mtime).
    created_at: float = 0.0
    backend: Backend = Backend.FAISS
    indexed_fields: tuple[IndexedField, ...] = ()
    # The keyword index's analyzer language (index/keyword/analyzer.py); "" when the collection has none (every
    # collection made before keyword search existed opens so: dense only).
    keyword: str = ""
    search_defaults: SearchDefaults = field(default_factory=SearchDefaults)
    # A collection bound to a text model with prompts: the prompt put before items' inputs on upsert and the one put
    # before query texts on search, by name and text ("" for none; collections made before prompts existed have
    # none), and the space of query vectors made with it ("" when queries are in `space`; `space` is the documents').
    document_prompt_name: str = ""
    document_prompt: str = ""
    query_prompt_name: str = ""
    query_prompt: str = ""
    query_space: str = ""
    # A collection of shaped vectors (core/collections/shapes.py): the number type ("" for float32: int8, uint8,
    # binary, ubinary), the Matryoshka dimensions a bound text model's vectors are cut to (0: none; `dimension` is
    # then this), and for a bound int8 or uint8 collection the calibration it quantises with: the (2, dimension)
    # float32 ranges as little-endian base64, of the documents' space and (when the query prompt makes another
    # space) of the queries', and their description. Stored vectors are float32 of `dimension` components whatever
    # the type (binary ones unpacked to +1/-1), so backends store and search them as any other.
    dtype: str = ""
    shape_dimensions: int = 0
    ranges: str = ""
    query_ranges: str = ""
    calibration: str = ""

    def to_json(self) -> bytes:
        data = asdict(self)
        data["metric"] = self.metric.value
        data["index"]["kind"] = self.index.kind.value
        data["index"]["quantization"] = self.index.quantization.value
        data["backend"] = self.backend.value
        data["indexed_fields"] = [{"name": f.name, "type": f.type.value} for f in self.indexed_fields]
        data["search_defaults"]["mode"] = self.search_defaults.mode.value
        return json.dumps({"format": 1, **data}, indent=2).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes | str) -> CollectionConfig:
        """Also reads configurations written before quantisation, recall targets and indexed fields (none, target 0:
        the knobs as configured, none)."""
        data = json.loads(raw)
        data.pop("format", None)
        index = data.pop("index")
        index["kind"] = IndexKind(index["kind"])
        index["quantization"] = Quantization(index.get("quantization", Quantization.NONE.value))
        index.setdefault("target_recall", 0.0)  # collections made before recall targets keep their knobs
        backend = Backend(data.pop("backend", Backend.FAISS.value))
        fields = tuple(IndexedField(f["name"], FieldType(f["type"])) for f in data.pop("indexed_fields", []))
        defaults = data.pop("search_defaults", None) or {}
        defaults["mode"] = SearchMode(defaults.get("mode") or SearchMode.DENSE.value)
        return cls(
            **{**data, "metric": Metric(data["metric"]), "index": IndexParams(**index), "backend": backend},
            indexed_fields=fields,
            search_defaults=SearchDefaults(**defaults),
        )

    def indexed_field(self, name: str) -> IndexedField | None:
        return next((f for f in self.indexed_fields if f.name == name), None)


@dataclass(frozen=True)
class StoredItem:
    id: str
    vector: np.ndarray
    metadata: dict[str, Any]
    input: str


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 4x more, and a batch makes 10^4 of these
class Hit:
    slot: int
    id: str
    score: float
    metadata: dict[str, Any] | None = None
    input: str = ""
    vector: np.ndarray | None = None


class Searched(tuple[list[list[Hit]], bool]):
    """What a collection's search returns: the pair (hits per query, whether the search was exact), which unpacks
    as before, and `parameters`: the effective search parameters the provenance reports (nprobe, ef_search,
    oversample, target_recall, estimated_recall: strings)."""

    parameters: dict[str, str]

    def __new__(cls, hits: list[list[Hit]], exact: bool, parameters: dict[str, str] | None = None) -> Searched:
        self = super().__new__(cls, (hits, exact))
        self.parameters = dict(parameters or {})
        return self

    @property
    def hits(self) -> list[list[Hit]]:
        return self[0]

    @property
    def exact(self) -> bool:
        return self[1]


@dataclass(frozen=True)
class KeywordHits:
    """One keyword query's hits, best first (scores: BM25, higher is closer), and the query's terms after analysis
    (empty: it had only stopwords or no word characters, and there are no hits)."""

    hits: list[Hit]
    terms: list[str]


@dataclass(frozen=True)
class Upsert:
    """Add or replace items (one atomic write)."""

    ids: list[str]
    vectors: np.ndarray  # (n, d) float32
    metadata: list[dict[str, Any]]
    inputs: list[str]


@dataclass(frozen=True)
class Delete:
    ids: list[str]


Operation = Upsert | Delete


@dataclass(frozen=True)
class Alias:
    """Another name for a collection (see embedsvc.index.aliases)."""

    alias: str
    collection: str
    update_time: datetime


def alias_not_found(alias: str) -> EmbedsvcError:
    return EmbedsvcError(Reason.ALIAS_NOT_FOUND, f"no alias named '{alias}'", field="alias", metadata={"alias": alias})


# Bytes a hit costs in a response beside its id, input, metadata and vector (score, field tags, framing).
HIT_OVERHEAD = 32


def response_too_large(spent: int, limit: int) -> EmbedsvcError:
    """The search budget every backend enforces while it collects hits (limits.max_response_bytes)."""
    return limit_exceeded(
        "options.k",
        "response bytes (the hits' ids, inputs, metadata and vectors; fewer queries, a smaller k or "
        "include_metadata = false make it smaller)",
        spent,
        limit,
    )
