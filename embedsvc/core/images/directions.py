"""Named latent directions: the difference of two example sets' mean latents, stored durably per model.

One record per direction in the state replicas share (`index/state.Records`, kind "directions", key
"<model>/<name>": the file `<data_dir>/directions/<model>/<name>.json`, written atomically before CreateDirection
answers, or a row in Milvus when replicas share collections there), so a direction made through one replica is used
through any other on the next call. Its vector is kept as base64 float32 (exact, and small enough for a shared
record); records written before that kept a list of numbers, still read. A direction remembers the model version it
was made with; using it with another version fails (MODEL_VERSION_CHANGED), because its vector would point somewhere
else in a retrained model's space.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np

from embedsvc.errors import EmbedsvcError, Reason, missing
from embedsvc.index.state import Records

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
KIND = "directions"


@dataclass(frozen=True)
class Direction:
    name: str
    model: str
    model_version: str
    vector: tuple[float, ...]
    from_label: str
    to_label: str
    from_count: int
    to_count: int
    description: str
    created_at: str

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.vector, dtype=np.float32)

    @property
    def norm(self) -> float:
        return math.sqrt(sum(v * v for v in self.vector))


def check_direction_name(name: str, field: str = "name") -> None:
    if not name:
        raise missing(field, "the direction's name")
    if not _NAME.match(name) or name.startswith("."):
        raise EmbedsvcError(
            Reason.INVALID_VALUE,
            f"direction name {name!r}: 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'",
            field=field,
        )


def _encode(direction: Direction) -> bytes:
    data = asdict(direction)
    del data["vector"]
    data["vector_f32"] = base64.b64encode(np.asarray(direction.vector, "<f4").tobytes()).decode("ascii")
    return (json.dumps(data) + "\n").encode()


def _decode(raw: bytes) -> Direction:
    data = json.loads(raw)
    packed = data.pop("vector_f32", None)
    if packed is not None:
        data["vector"] = np.frombuffer(base64.b64decode(packed), "<f4").tolist()
    return Direction(**{**data, "vector": tuple(float(v) for v in data["vector"])})


class DirectionStore:
    """Thread-safe; a record that cannot be read is logged and left out (of listings, and of look-ups, which then
    answer DIRECTION_NOT_FOUND)."""

    def __init__(self, records: Records) -> None:
        self._records = records
        self._lock = threading.Lock()

    @staticmethod
    def _key(model: str, name: str) -> str:
        return f"{model}/{name}"

    def _read(self, key: str, raw: bytes | None) -> Direction | None:
        if raw is None:
            return None
        try:
            return _decode(raw)
        except (ValueError, TypeError, KeyError) as exc:
            log.error("direction record %s is unreadable and was skipped: %s", key, exc)
            return None

    def create(
        self,
        *,
        model: str,
        model_version: str,
        name: str,
        vector: np.ndarray,
        labels: tuple[str, str],
        counts: tuple[int, int],
        description: str,
        replace: bool,
    ) -> Direction:
        check_direction_name(name)
        direction = Direction(
            name=name,
            model=model,
            model_version=model_version,
            vector=tuple(float(v) for v in np.asarray(vector, np.float32)),
            from_label=labels[0],
            to_label=labels[1],
            from_count=counts[0],
            to_count=counts[1],
            description=description,
            created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        )
        key = self._key(model, name)
        with self._lock:
            if not replace and self._read(key, self._records.get(KIND, key)) is not None:
                raise EmbedsvcError(
                    Reason.DIRECTION_EXISTS,
                    f"model '{model}' already has a direction '{name}' (set replace to overwrite it)",
                    field="name",
                    metadata={"model": model, "direction": name},
                )
            self._records.put(KIND, key, _encode(direction))
        return direction

    def get(self, model: str, name: str, *, version: str, field: str) -> Direction:
        check_direction_name(name, field)
        key = self._key(model, name)
        direction = self._read(key, self._records.get(KIND, key)) if _NAME.match(model) else None
        if direction is None:
            known = ", ".join(d.name for d in self.list(model)) or "none"
            raise EmbedsvcError(
                Reason.DIRECTION_NOT_FOUND,
                f"model '{model}' has no direction '{name}' (its directions: {known})",
                field=field,
                metadata={"model": model, "direction": name},
            )
        if direction.model_version != version:
            raise EmbedsvcError(
                Reason.MODEL_VERSION_CHANGED,
                f"direction '{name}' was made with {model} {direction.model_version}; the model is now {version}. "
                "Create it again from its examples",
                field=field,
                metadata={"expected": direction.model_version, "actual": version},
            )
        return direction

    def list(self, model: str = "") -> list[Direction]:
        found = [self._read(key, raw) for key, raw in self._records.list(KIND).items()]
        return sorted(
            (d for d in found if d is not None and (not model or d.model == model)), key=lambda d: (d.model, d.name)
        )

    def delete(self, model: str, name: str) -> None:
        check_direction_name(name)
        if not model:
            raise missing("model", "the model name")
        with self._lock:
            if not _NAME.match(model) or not self._records.delete(KIND, self._key(model, name)):
                raise EmbedsvcError(
                    Reason.DIRECTION_NOT_FOUND,
                    f"model '{model}' has no direction '{name}'",
                    field="name",
                    metadata={"model": model, "direction": name},
                )
