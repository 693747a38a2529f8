"""Opening the server's storage: every configured collection backend behind one `Stores`, the alias store that goes
with them, and the records of the state replicas share (directions, operations, the snapshot catalogue). The only
module outside a backend's package that names the backends.

It takes plain `StorageOptions`, not Settings: `index` sits below the settings (which read files, the environment and
the model kinds table), so it stays testable and usable without them; `Settings.storage_options()` builds these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from embedsvc.index import snapshot_files
from embedsvc.index.aliases import Aliases, AliasStore
from embedsvc.index.backend import CollectionBackend, Stores
from embedsvc.index.faiss import snapshots as faiss_snapshots
from embedsvc.index.faiss.store import CollectionStore
from embedsvc.index.milvus.client import MilvusOptions
from embedsvc.index.state import LocalRecords, Records
from embedsvc.index.types import Backend, StoredItem


@dataclass(frozen=True)
class StorageOptions:
    """Where and how collections are stored."""

    # The server's data directory: FAISS collections under collections/, aliases in aliases.json.
    data_dir: Path
    # A FAISS collection checkpoints (and empties its log) once its log is larger than this.
    checkpoint_bytes: int
    # Where a collection that names no backend is created.
    default: Backend = Backend.FAISS
    # Milvus, when configured (a Milvus Lite path already resolved against data_dir).
    milvus: MilvusOptions | None = None
    # The longest item id, in bytes (Milvus declares its primary key's length with it).
    max_id_bytes: int = 256
    # Where snapshots' files are kept (None: <data_dir>/snapshot-files). Replicas that share state through Milvus
    # share this directory too (a network file system), so that a snapshot made through one restores through another.
    snapshot_dir: Path | None = None

    @property
    def shared(self) -> bool:
        """Whether the state replicas share lives in Milvus (collections default to Milvus)."""
        return self.default is Backend.MILVUS and self.milvus is not None

    @property
    def snapshots(self) -> Path:
        return self.snapshot_dir if self.snapshot_dir is not None else self.data_dir / "snapshot-files"


def open_stores(options: StorageOptions) -> Stores:
    """The collection backends: the embedded FAISS one always, Milvus when it is configured. Nothing is read yet:
    `Stores.recover_all()` opens the collections."""
    backends: dict[Backend, CollectionBackend] = {
        Backend.FAISS: CollectionStore(options.data_dir, options.checkpoint_bytes)
    }
    if options.milvus is not None:
        # pymilvus is the `milvus` extra's: imported only when Milvus is configured.
        from embedsvc.index.milvus.store import MilvusStore

        backends[Backend.MILVUS] = MilvusStore(options.milvus, max_id_bytes=options.max_id_bytes)
    return Stores(backends, options.default)


def open_aliases(options: StorageOptions) -> Aliases:
    """Aliases in the data directory; in Milvus when collections default to Milvus, so that replicas share them."""
    if not options.shared or options.milvus is None:
        return AliasStore(options.data_dir)
    from embedsvc.index.milvus.aliases import MilvusAliasStore

    return MilvusAliasStore(options.milvus)


def open_state(options: StorageOptions) -> Records:
    """The records of the state replicas share: files in the data directory; in Milvus when collections default to
    Milvus (where the aliases are too), so that any replica answers for any direction, operation or snapshot."""
    if not options.shared or options.milvus is None:
        return LocalRecords(options.data_dir)
    from embedsvc.index.milvus.state import MilvusRecords

    return MilvusRecords(options.milvus)


def snapshot_items(
    snapshot: str, source: Path, manifest: snapshot_files.Manifest, check: Callable[[], None]
) -> Callable[[], Iterator[list[StoredItem]]]:
    """A reader of a snapshot's items, whatever its format (each call a fresh iterator, checking the files first)."""
    if manifest.format == snapshot_files.FAISS:
        return lambda: faiss_snapshots.read_items(snapshot, source, manifest, check)
    return lambda: snapshot_files.read_items(snapshot, source, manifest, check)
