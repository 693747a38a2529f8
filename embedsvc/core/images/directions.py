"""Named latent directions: the difference of two example sets' mean latents, stored durably per model.

One JSON file per direction under `<data_dir>/directions/<model>/<name>.json`, written atomically (temp file, fsync,
rename, directory fsync) before CreateDirection answers; deleting removes the file and fsyncs the directory.
A direction remembers the model version it was made with; using it with another version fails
(MODEL_VERSION_CHANGED), because its vector would point somewhere else in a retrained model's space.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from embedsvc.durable import fsync_dir, write_atomic
from embedsvc.errors import EmbedsvcError, Reason, missing

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


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


class DirectionStore:
    """Thread-safe; every file is read at start, so a corrupt one is reported then (and skipped), not mid-request."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._lock = threading.Lock()
        self._directions: dict[tuple[str, str], Direction] = {}
        root.mkdir(parents=True, exist_ok=True)
        for path in sorted(root.glob("*/*.json")):
            try:
                data = json.loads(path.read_text())
                direction = Direction(**{**data, "vector": tuple(float(v) for v in data["vector"])})
            except (ValueError, TypeError, KeyError) as exc:
                log.error("direction file %s is unreadable and was skipped: %s", path, exc)
                continue
            self._directions[(direction.model, direction.name)] = direction

    def _path(self, model: str, name: str) -> Path:
        return self._root / model / f"{name}.json"

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
            vector=tuple(float(v) for v in vector),
            from_label=labels[0],
            to_label=labels[1],
            from_count=counts[0],
            to_count=counts[1],
            description=description,
            created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        )
        with self._lock:
            if (model, name) in self._directions and not replace:
                raise EmbedsvcError(
                    Reason.DIRECTION_EXISTS,
                    f"model '{model}' already has a direction '{name}' (set replace to overwrite it)",
                    field="name",
                    metadata={"model": model, "direction": name},
                )
            write_atomic(self._path(model, name), (json.dumps(asdict(direction)) + "\n").encode())
            self._directions[(model, name)] = direction
        return direction

    def get(self, model: str, name: str, *, version: str, field: str) -> Direction:
        check_direction_name(name, field)
        with self._lock:
            direction = self._directions.get((model, name))
        if direction is None:
            known = ", ".join(sorted(n for m, n in self._directions if m == model)) or "none"
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
        with self._lock:
            found = [d for (m, _), d in self._directions.items() if not model or m == model]
        return sorted(found, key=lambda d: (d.model, d.name))

    def delete(self, model: str, name: str) -> None:
        check_direction_name(name)
        if not model:
            raise missing("model", "the model name")
        with self._lock:
            if (model, name) not in self._directions:
                raise EmbedsvcError(
                    Reason.DIRECTION_NOT_FOUND,
                    f"model '{model}' has no direction '{name}'",
                    field="name",
                    metadata={"model": model, "direction": name},
                )
            path = self._path(model, name)
            os.unlink(path)
            fsync_dir(path.parent)
            del self._directions[(model, name)]
