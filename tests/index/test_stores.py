"""Opening the collection storage from plain options (index/stores.py), and the options the settings ask for."""

from pathlib import Path

import pytest

from embedsvc.index.aliases import AliasStore
from embedsvc.index.faiss.store import CollectionStore
from embedsvc.index.milvus.aliases import MilvusAliasStore
from embedsvc.index.milvus.client import MilvusOptions
from embedsvc.index.milvus.store import MilvusStore
from embedsvc.index.stores import StorageOptions, open_aliases, open_stores
from embedsvc.index.types import Backend
from embedsvc.settings import Settings


def test_faiss_alone_with_aliases_in_the_data_directory(tmp_path):
    options = StorageOptions(tmp_path, 1 << 20)
    stores = open_stores(options)
    assert list(stores.backends) == [Backend.FAISS] and stores.default is Backend.FAISS
    faiss = stores.backends[Backend.FAISS]
    assert isinstance(faiss, CollectionStore) and faiss.root == tmp_path / "collections"
    assert faiss.checkpoint_bytes == 1 << 20
    assert isinstance(open_aliases(options), AliasStore)


def test_milvus_beside_faiss_shares_aliases_only_when_it_is_the_default(tmp_path):
    milvus = MilvusOptions(str(tmp_path / "m.db"))
    beside = StorageOptions(tmp_path, 1 << 20, Backend.FAISS, milvus, max_id_bytes=100)
    stores = open_stores(beside)  # nothing connects until a collection call
    assert set(stores.backends) == {Backend.FAISS, Backend.MILVUS} and stores.default is Backend.FAISS
    store = stores.backends[Backend.MILVUS]
    assert isinstance(store, MilvusStore) and store.options == milvus and store.max_id_bytes == 100
    assert isinstance(open_aliases(beside), AliasStore)
    default = StorageOptions(tmp_path, 1 << 20, Backend.MILVUS, milvus)
    assert open_stores(default).default is Backend.MILVUS
    assert isinstance(open_aliases(default), MilvusAliasStore)


def test_a_default_backend_that_is_not_configured_is_refused(tmp_path):
    with pytest.raises(ValueError, match="milvus is not configured"):
        open_stores(StorageOptions(tmp_path, 1 << 20, Backend.MILVUS))


def test_settings_ask_for_their_storage(tmp_path):
    plain = Settings.from_config({"server": {"checkpoint_bytes": 4096}}, data_dir=str(tmp_path))
    assert plain.storage_options() == StorageOptions(tmp_path, 4096, Backend.FAISS, None, max_id_bytes=256)
    config = {
        "limits": {"max_id_bytes": 64},
        "storage": {"backend": "milvus", "milvus": {"uri": "lite.db", "token": "u:p", "retries": 1}},
    }
    lite = Settings.from_config(config, data_dir=str(tmp_path)).storage_options()
    assert lite.default is Backend.MILVUS and lite.max_id_bytes == 64
    assert lite.milvus == MilvusOptions(str(tmp_path / "lite.db"), "u:p", "", "Strong", 30.0, 1)  # Lite: in data_dir
    remote = {"storage": {"milvus": {"uri": "http://milvus:19530"}}}
    server = Settings.from_config(remote, data_dir=str(tmp_path)).storage_options()
    assert server.default is Backend.FAISS and server.milvus is not None
    assert server.milvus.uri == "http://milvus:19530" and Path(server.data_dir) == tmp_path
