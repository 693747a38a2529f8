"""Bulk writes without pymilvus's row packing.

`MilvusClient.upsert` packs rows field by field in Python (about 40% of embedsvc's time in a bulk load, measured with
py-spy); the same UpsertRequest built column by column from the batch's arrays costs a fraction of that. This uses
pymilvus's generated protobuf messages and its connection's stub, which are not a public API: `available()` checks for
every piece once, and MilvusCollection falls back to `MilvusClient.upsert` when one is missing (pymilvus is pinned
below 4; tests/index/milvus checks that both paths store the same rows).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np


@cache
def available() -> bool:
    try:
        from pymilvus.client.call_context import _api_level_md  # noqa: F401
        from pymilvus.client.utils import check_status  # noqa: F401
        from pymilvus.grpc_gen import milvus_pb2, schema_pb2

        milvus_pb2.UpsertRequest(collection_name="x", num_rows=0)
        schema_pb2.FieldData(field_name="x").vectors.float_vector.data.extend([0.0])
        schema_pb2.FieldData(field_name="x").scalars.json_data.data.extend([b"{}"])
        schema_pb2.FieldData(field_name="x").scalars.string_data.data.extend(["x"])
    except (ImportError, AttributeError, ValueError, TypeError):
        return False
    return True


def upsert_request(
    name: str, ids: Sequence[str], vectors: np.ndarray, documents: Sequence[bytes], texts: Sequence[str] | None = None
) -> Any:
    """The UpsertRequest of rows (id, vector, fx, and `texts` as the full-text field when given) for `name`."""
    from pymilvus import DataType
    from pymilvus.grpc_gen import milvus_pb2, schema_pb2

    request = milvus_pb2.UpsertRequest(collection_name=name, num_rows=len(ids))
    id_field = schema_pb2.FieldData(field_name="id", type=DataType.VARCHAR)
    id_field.scalars.string_data.data.extend(ids)
    vector_field = schema_pb2.FieldData(field_name="vector", type=DataType.FLOAT_VECTOR)
    vector_field.vectors.dim = vectors.shape[1]
    vector_field.vectors.float_vector.data.extend(np.ascontiguousarray(vectors, np.float32).ravel().tolist())
    fx_field = schema_pb2.FieldData(field_name="fx", type=DataType.JSON)
    fx_field.scalars.json_data.data.extend(documents)
    request.fields_data.extend([id_field, vector_field, fx_field])
    if texts is not None:
        text_field = schema_pb2.FieldData(field_name="text", type=DataType.VARCHAR)
        text_field.scalars.string_data.data.extend(texts)
        request.fields_data.append(text_field)
    return request


def send(client: Any, request: Any, timeout: float) -> None:
    """Send an UpsertRequest on a MilvusClient's connection; Milvus's refusals raise as pymilvus's do."""
    from pymilvus.client.call_context import _api_level_md
    from pymilvus.client.utils import check_status

    connection = client._get_connection()
    context = client._generate_call_context()
    response = connection._stub.Upsert(request, timeout=timeout, metadata=_api_level_md(context))
    check_status(response.status)


def document_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
