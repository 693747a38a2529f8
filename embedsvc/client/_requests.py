"""Request builders of the Python client (private: the call builders in `_calls.py` and `points.py` use them): enum
names, vectors, typed metadata, images, terms and expressions, items, queries and search options."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from embedsvc.client.types import (
    DirectionRef,
    ExpressionLike,
    ImageLike,
    ItemRef,
    LatentLike,
    SpaceVector,
    TermLike,
)
from embedsvc.v1 import (
    arithmetic_pb2,
    collections_pb2,
    common_pb2,
    latent_pb2,
    maps_pb2,
    retrieval_pb2,
    text_pb2,
)

METHODS = {"cosadd": arithmetic_pb2.METHOD_COSADD, "cosmul": arithmetic_pb2.METHOD_COSMUL}


METRICS = {
    "cosine": collections_pb2.METRIC_COSINE,
    "l2": collections_pb2.METRIC_L2,
    "ip": collections_pb2.METRIC_INNER_PRODUCT,
}


INDEX_KINDS = {
    "flat": collections_pb2.INDEX_KIND_FLAT,
    "hnsw": collections_pb2.INDEX_KIND_HNSW,
    "ivf-flat": collections_pb2.INDEX_KIND_IVF_FLAT,
    "ivf-pq": collections_pb2.INDEX_KIND_IVF_PQ,
}


QUANTIZATIONS = {
    "": collections_pb2.QUANTIZATION_UNSPECIFIED,
    "none": collections_pb2.QUANTIZATION_NONE,
    "int8": collections_pb2.QUANTIZATION_INT8,
    "rabitq": collections_pb2.QUANTIZATION_RABITQ,
}


FIELD_TYPES = {
    "string": collections_pb2.FIELD_TYPE_STRING,
    "integer": collections_pb2.FIELD_TYPE_INTEGER,
    "timestamp": collections_pb2.FIELD_TYPE_TIMESTAMP,
}


BACKENDS = {
    "": collections_pb2.BACKEND_UNSPECIFIED,
    "faiss": collections_pb2.BACKEND_FAISS,
    "milvus": collections_pb2.BACKEND_MILVUS,
}


LONG_TEXT_MODES = {
    "truncate": text_pb2.LONG_TEXT_MODE_TRUNCATE,
    "chunk": text_pb2.LONG_TEXT_MODE_CHUNK,
    "refuse": text_pb2.LONG_TEXT_MODE_REFUSE,
}


TRUNCATION_DIRECTIONS = {"right": text_pb2.TRUNCATION_DIRECTION_RIGHT, "left": text_pb2.TRUNCATION_DIRECTION_LEFT}


DTYPES = {
    "float32": text_pb2.EMBEDDING_DTYPE_FLOAT32,
    "int8": text_pb2.EMBEDDING_DTYPE_INT8,
    "uint8": text_pb2.EMBEDDING_DTYPE_UINT8,
    "binary": text_pb2.EMBEDDING_DTYPE_BINARY,
    "ubinary": text_pb2.EMBEDDING_DTYPE_UBINARY,
}


CLUSTER_METHODS = {"gmm": maps_pb2.CLUSTER_METHOD_GAUSSIAN_MIXTURE, "kmeans": maps_pb2.CLUSTER_METHOD_KMEANS}


COVARIANCES = {
    "full": maps_pb2.COVARIANCE_TYPE_FULL,
    "diag": maps_pb2.COVARIANCE_TYPE_DIAG,
    "spherical": maps_pb2.COVARIANCE_TYPE_SPHERICAL,
    "tied": maps_pb2.COVARIANCE_TYPE_TIED,
}


def choice(table: dict[str, Any], value: Any, what: str) -> Any:
    """An enum value given by name (or already as the proto value)."""
    if not isinstance(value, str):
        return value
    try:
        return table[value]
    except KeyError:
        raise ValueError(f"{what} must be one of {', '.join(table)}, got {value!r}") from None


def vector(v: LatentLike | Sequence[float]) -> common_pb2.Vector:
    if isinstance(v, SpaceVector):
        return common_pb2.Vector(values=np.asarray(v.values, dtype=np.float32).ravel().tolist(), space=v.space)
    return common_pb2.Vector(values=np.asarray(v, dtype=np.float32).ravel().tolist())


def _put_value(message: common_pb2.MetadataValue, value: Any, where: str) -> None:
    if isinstance(value, bool):  # before int: a bool is an int in Python
        message.bool_value = value
    elif isinstance(value, int | np.integer):
        if not -(2**63) <= int(value) < 2**63:
            raise ValueError(f"metadata {where}: {value} does not fit in 64 bits")
        message.int_value = int(value)
    elif isinstance(value, float | np.floating):
        message.double_value = float(value)
    elif isinstance(value, str):
        message.string_value = value
    elif isinstance(value, datetime):  # a naive datetime is taken as UTC
        message.timestamp_value.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    elif isinstance(value, list | tuple):
        message.list_value.SetInParent()  # an empty list is still a list (reading .values alone sets nothing)
        elements = message.list_value.values
        for i, element in enumerate(value):
            _put_value(elements.add(), element, f"{where}[{i}]")
    else:
        raise ValueError(
            f"metadata {where}: {type(value).__name__} values are not supported (str, int, float, bool, "
            "datetime or lists of those)"
        )


def put_metadata(fields: Any, metadata: dict[str, Any]) -> None:
    """Fill a metadata map (map<string, MetadataValue>) from a dict of plain Python values."""
    for key, value in metadata.items():
        _put_value(fields[key], value, repr(key))


def packed_rows(vectors: np.ndarray) -> bytes:
    """An (n, d) array as the float32 little-endian, row-major bytes of a `packed_*` field."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"expected an (n, d) array of vectors, got shape {vectors.shape}")
    return np.ascontiguousarray(vectors, dtype="<f4").tobytes()


def image_input(image: ImageLike) -> common_pb2.ImageInput:
    if isinstance(image, Path):
        return common_pb2.ImageInput(data=image.read_bytes())
    if isinstance(image, bytes | bytearray):
        return common_pb2.ImageInput(data=bytes(image))
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"an image array is (H, W) or (H, W, C), got shape {array.shape}")
    if array.dtype == np.uint8:
        dtype, pixels = common_pb2.PIXEL_TYPE_UINT8, np.ascontiguousarray(array).tobytes()
    else:
        dtype, pixels = common_pb2.PIXEL_TYPE_FLOAT32, np.ascontiguousarray(array, dtype="<f4").tobytes()
    raw = common_pb2.RawImage(
        pixels=pixels, height=array.shape[0], width=array.shape[1], channels=array.shape[2], dtype=dtype
    )
    return common_pb2.ImageInput(raw=raw)


def images(values: Sequence[ImageLike]) -> list[common_pb2.ImageInput]:
    return [image_input(i) for i in values]


def _is_vector(value: object) -> bool:
    return isinstance(value, SpaceVector) or (isinstance(value, np.ndarray) and value.ndim == 1)


def term(value: TermLike) -> arithmetic_pb2.Term:
    """The one term builder: a str is a word, a 1-D array or SpaceVector a vector, a DirectionRef a direction, an
    ItemRef a stored item, and
    bytes, a Path or a 2-D/3-D array an image; (weight, value) weights any of them."""
    weight: float | None = None
    if isinstance(value, tuple):
        weight, value = float(value[0]), value[1]
    if isinstance(value, str):
        message = arithmetic_pb2.Term(word=value)
    elif isinstance(value, DirectionRef):
        message = arithmetic_pb2.Term(direction=value.name)
    elif isinstance(value, ItemRef):
        message = arithmetic_pb2.Term(item=arithmetic_pb2.ItemRef(collection=value.collection, id=value.id))
    elif _is_vector(value):
        message = arithmetic_pb2.Term(vector=vector(value))  # type: ignore[arg-type]
    else:
        message = arithmetic_pb2.Term(image=image_input(value))  # type: ignore[arg-type]
    if weight is not None:
        message.weight = weight
    return message


def expression(value: ExpressionLike | arithmetic_pb2.Expression) -> arithmetic_pb2.Expression:
    if isinstance(value, arithmetic_pb2.Expression):
        return value
    if isinstance(value, str):
        return arithmetic_pb2.Expression(text=value)
    return arithmetic_pb2.Expression(terms=[term(t) for t in value])


def point(value: ImageLike | LatentLike) -> latent_pb2.LatentPoint:
    if _is_vector(value):
        return latent_pb2.LatentPoint(latent=vector(value))  # type: ignore[arg-type]
    return latent_pb2.LatentPoint(image=image_input(value))  # type: ignore[arg-type]


def decode_latents_request(
    model: str, latents: Sequence[LatentLike] | np.ndarray, expressions: Sequence[Any]
) -> latent_pb2.DecodeLatentsRequest:
    """Latents as an (n, d) array go packed; vectors and expressions as messages. The results come back packed."""
    request = latent_pb2.DecodeLatentsRequest(model=model, expressions=[expression(e) for e in expressions])
    if isinstance(latents, np.ndarray) and latents.ndim == 2:
        request.packed_latents = packed_rows(latents)
    else:
        request.latents.extend(latent_rows(latents))
    request.packed_results = True
    return request


def latent_rows(latents: Sequence[LatentLike] | np.ndarray) -> list[common_pb2.Vector]:
    if isinstance(latents, np.ndarray) and latents.ndim == 2:  # one tolist() for the matrix: cheaper than per row
        return [common_pb2.Vector(values=z) for z in np.asarray(latents, dtype=np.float32).tolist()]
    return [vector(z) for z in latents]


def embed_texts_request(
    model: str,
    texts: Sequence[str],
    normalize: bool,
    long_texts: str,
    dimensions: int = 0,
    dtype: str = "float32",
    truncation_direction: str = "right",
    prompt_name: str = "",
    prompt: str | None = None,
) -> text_pb2.EmbedTextsRequest:
    """EmbedTexts' request, asking for the packed forms (the client reads both); `prompt` None leaves the literal
    prompt unset ("" sets it: no prompt)."""
    return text_pb2.EmbedTextsRequest(
        model=model,
        texts=list(texts),
        normalize=normalize,
        long_texts=choice(LONG_TEXT_MODES, long_texts, "long_texts"),
        dimensions=dimensions,
        dtype=choice(DTYPES, dtype, "dtype"),
        truncation_direction=choice(TRUNCATION_DIRECTIONS, truncation_direction, "truncation_direction"),
        packed_results=True,
        prompt_name=prompt_name,
        prompt=prompt,
    )


def items(
    ids: Sequence[str],
    vectors: np.ndarray | None = None,
    metadata: Sequence[dict[str, Any] | None] | None = None,
    inputs: Sequence[str] | None = None,
    pictures: Sequence[ImageLike] | None = None,
) -> tuple[list[collections_pb2.Item], bytes]:
    """Item messages from parallel lists (ids, an (n, d) array or None with inputs or images, metadata dicts), and the
    vectors packed as float32 little-endian for the request's `packed_vectors`."""
    if pictures is not None and len(pictures) != len(ids):
        raise ValueError(f"{len(pictures)} images for {len(ids)} ids (one each)")
    built = []
    for n, item_id in enumerate(ids):
        item = collections_pb2.Item(id=item_id, input=inputs[n] if inputs is not None else "")
        fields = metadata[n] if metadata is not None else None
        if fields:
            put_metadata(item.metadata, fields)
        if pictures is not None:
            item.image.CopyFrom(image_input(pictures[n]))
        built.append(item)
    return built, b"" if vectors is None else packed_rows(vectors)


MODES = {
    "": retrieval_pb2.SEARCH_MODE_UNSPECIFIED,
    "dense": retrieval_pb2.SEARCH_MODE_DENSE,
    "keyword": retrieval_pb2.SEARCH_MODE_KEYWORD,
    "hybrid": retrieval_pb2.SEARCH_MODE_HYBRID,
}
FUSIONS = {
    "": retrieval_pb2.FUSION_METHOD_UNSPECIFIED,
    "rrf": retrieval_pb2.FUSION_METHOD_RRF,
    "weighted": retrieval_pb2.FUSION_METHOD_WEIGHTED,
}
STRATEGIES = {
    "": retrieval_pb2.EXAMPLE_STRATEGY_UNSPECIFIED,
    "average_vector": retrieval_pb2.EXAMPLE_STRATEGY_AVERAGE_VECTOR,
    "best_score": retrieval_pb2.EXAMPLE_STRATEGY_BEST_SCORE,
}


def query(
    vector_: np.ndarray | SpaceVector | None = None,
    item_id: str = "",
    input: str = "",
    expression_: ExpressionLike | arithmetic_pb2.Expression | None = None,
    image: ImageLike | None = None,
    *,
    keyword_text: str = "",
    positive_ids: Sequence[str] = (),
    negative_ids: Sequence[str] = (),
    strategy: str = "",
) -> collections_pb2.Query:
    """One query: one of vector, item_id, input, expression, image, or examples (positive_ids / negative_ids);
    `keyword_text` for the keyword side (with any of them, or alone for a keyword search)."""
    message = collections_pb2.Query(keyword_text=keyword_text)
    if vector_ is not None:
        message.vector.CopyFrom(vector(vector_))
    elif item_id:
        message.item_id = item_id
    elif input:
        message.input = input
    elif expression_ is not None:
        message.expression.CopyFrom(expression(expression_))
    elif image is not None:
        message.image.CopyFrom(image_input(image))
    elif positive_ids or negative_ids:
        message.examples.CopyFrom(
            retrieval_pb2.Examples(
                positive_ids=list(positive_ids),
                negative_ids=list(negative_ids),
                strategy=choice(STRATEGIES, strategy, "strategy"),
            )
        )
    elif not keyword_text:
        raise ValueError("give one of vector, item_id, input, expression, image, positive_ids or keyword_text")
    return message


def search_options(
    k: int = 10,
    filter: str = "",
    exact: bool = False,
    ef_search: int = 0,
    nprobe: int = 0,
    include_vectors: bool = False,
    include_metadata: bool = True,
    target_recall: float = 0.0,
    oversample: int = 0,
    *,
    mode: str = "",
    fusion: str = "",
    rrf_k: int = 0,
    dense_weight: float | None = None,
    candidates: int = 0,
    rerank: str = "",
    rerank_candidates: int = 0,
    raw_scores: bool = False,
    group_by: str = "",
    group_size: int = 0,
    diversity: float | None = None,
    diversity_candidates: int = 0,
    keep_inputs: bool = False,
    include_explanations: bool | None = None,
) -> collections_pb2.SearchOptions:
    options = collections_pb2.SearchOptions(
        k=k,
        filter=filter,
        exact=exact,
        ef_search=ef_search,
        nprobe=nprobe,
        include_vectors=include_vectors,
        include_metadata=include_metadata,
        target_recall=target_recall,
        oversample=oversample,
        mode=choice(MODES, mode, "mode"),
        group_by=group_by,
        group_size=group_size,
        diversity_candidates=diversity_candidates,
        keep_inputs=keep_inputs,
    )
    if fusion or rrf_k or dense_weight is not None or candidates:
        options.fusion.CopyFrom(
            retrieval_pb2.Fusion(method=choice(FUSIONS, fusion, "fusion"), rrf_k=rrf_k, candidates=candidates)
        )
        if dense_weight is not None:
            options.fusion.dense_weight = dense_weight
    if rerank:
        options.rerank.CopyFrom(
            retrieval_pb2.RerankStage(model=rerank, candidates=rerank_candidates, raw_scores=raw_scores)
        )
    if diversity is not None:
        options.diversity = diversity
    if include_explanations is not None:
        options.include_explanations = include_explanations
    return options


def keyword_spec(keyword: str | bool | None) -> retrieval_pb2.KeywordIndexSpec | None:
    """create_collection's `keyword`: None (the server's default), True / a language (one), False (none)."""
    if keyword is None:
        return None
    if keyword is False:
        return retrieval_pb2.KeywordIndexSpec(enabled=False)
    return retrieval_pb2.KeywordIndexSpec(language="" if keyword is True else str(keyword), enabled=True)


def search_defaults(
    mode: str = "", fusion: str = "", rrf_k: int = 0, dense_weight: float | None = None, candidates: int = 0
) -> retrieval_pb2.SearchDefaults:
    defaults = retrieval_pb2.SearchDefaults(
        mode=choice(MODES, mode, "mode"),
        fusion=retrieval_pb2.Fusion(method=choice(FUSIONS, fusion, "fusion"), rrf_k=rrf_k, candidates=candidates),
    )
    if dense_weight is not None:
        defaults.fusion.dense_weight = dense_weight
    return defaults


_INT_PARAMS = ("m", "ef_construction", "ef_search", "nlist", "nprobe", "pq_m", "pq_bits", "rabitq_bits", "oversample")


def index_spec(kind: str, quantization: str, mmap: bool | None, params: dict[str, float]) -> collections_pb2.IndexSpec:
    """An IndexSpec from names: kind, quantization, and the integer parameters and target_recall by name."""
    unknown = sorted(set(params) - {*_INT_PARAMS, "target_recall"})
    if unknown:
        raise TypeError(f"unknown index parameters: {', '.join(unknown)}")
    spec = collections_pb2.IndexSpec(
        kind=choice(INDEX_KINDS, kind, "index"),
        quantization=choice(QUANTIZATIONS, quantization, "quantization"),
        target_recall=float(params.get("target_recall", 0.0)),
    )
    for name in _INT_PARAMS:
        if name in params:
            setattr(spec, name, int(params[name]))
    if mmap is not None:
        spec.mmap = mmap
    return spec


def indexed_fields(fields: Mapping[str, str] | None) -> list[collections_pb2.IndexedField]:
    """{"tenant": "string", "year": "integer", "created": "timestamp"} as IndexedField messages."""
    return [
        collections_pb2.IndexedField(name=name, type=choice(FIELD_TYPES, kind, f"indexed field {name!r}"))
        for name, kind in (fields or {}).items()
    ]
