"""Opening the server's collection storage: every configured collection backend behind one `Stores`, and the alias
store that goes with them. The only module outside a backend's package that names the backends.

It takes plain `StorageOptions`, not Settings: `index` sits below the settings (which read files, the environment and
the model kinds table), so it stays testable and usable without them; `Settings.storage_options()` builds these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from embedsvc.index.aliases import Aliases, AliasStore
from embedsvc.index.backend import CollectionBackend, Stores
from embedsvc.index.faiss.store import CollectionStore
from embedsvc.index.milvus.client import MilvusOptions
from embedsvc.index.types import Backend


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
    if options.default is not Backend.MILVUS or options.milvus is None:
        return AliasStore(options.data_dir)
    from embedsvc.index.milvus.aliases import MilvusAliasStore

    return MilvusAliasStore(options.milvus)
