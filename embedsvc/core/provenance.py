"""Provenance: which model (name, version) answered, with which method and parameters. Every answer that used a model
carries one."""

from __future__ import annotations

from dataclasses import dataclass

from embedsvc.backends.capabilities import Part


@dataclass(frozen=True)
class Provenance:
    model: str
    model_version: str
    method: str
    parameters: dict[str, str]


def provenance(part: Part, method: str, parameters: dict[str, str] | None = None) -> Provenance:
    """The provenance of an answer a model's part gave."""
    return Provenance(part.name, part.version, method, dict(parameters or {}))
