"""The OpenAPI 3.1 description of the HTTP API (`GET /openapi.json`): JSON schemas of the proto messages, built from
their descriptors, and each route module's paths."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from google.protobuf.descriptor import Descriptor, FieldDescriptor


class Paths(Protocol):
    """A route module's part of the description: its paths, adding the schemas they refer to to `schemas`."""

    def openapi(self, schemas: dict[str, Any]) -> dict[str, Any]: ...


_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    # proto3 JSON writes 64-bit integers as strings and reads either.
    FieldDescriptor.TYPE_INT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": ["string", "integer"], "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": ["string", "integer"], "format": "uint64"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}},
}


def field_schema(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        return message_schema(field.message_type, schemas)
    return dict(_SCALARS[field.type])


def message_schema(desc: Descriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if desc.full_name in _WELL_KNOWN:
        return dict(_WELL_KNOWN[desc.full_name])
    ref = {"$ref": f"#/components/schemas/{desc.full_name}"}
    if desc.full_name in schemas:
        return ref
    schemas[desc.full_name] = {}  # placeholder: messages may refer to themselves
    properties: dict[str, Any] = {}
    for field in desc.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            properties[field.json_name] = {"type": "object", "additionalProperties": field_schema(value, schemas)}
        elif field.is_repeated:
            properties[field.json_name] = {"type": "array", "items": field_schema(field, schemas)}
        else:
            properties[field.json_name] = field_schema(field, schemas)
    schemas[desc.full_name] = {"type": "object", "properties": properties}
    return ref


def document(modules: Iterable[Paths]) -> dict[str, Any]:
    """The whole description: every route module's paths, and the schemas they refer to."""
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for module in modules:
        paths.update(module.openapi(schemas))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "embedsvc",
            "version": "v1",
            "description": "The embedsvc gRPC API over HTTP/JSON (the Connect protocol, generated from protos/), and "
            "the OpenAI (/v1/embeddings, /v1/models) and text-embeddings-inference (/embed, /rerank, /tokenize, /info, "
            "/health) dialects over it.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }
