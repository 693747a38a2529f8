"""Every supported format loads with gensim's vectors; bad files give one-line errors; the embedded cache heals."""

from pathlib import Path

import numpy as np
import pytest

from embedsvc.backends.base import ModelSpec
from embedsvc.backends.word_vectors import ModelLoadError, WordVectorFormat, WordVectorsOptions, load_word_vectors
from tests.conftest import REAL_FILES, gensim_reference, planted_vectors


def spec(path: Path, fmt: WordVectorFormat, name: str = "m", allow_pickle: bool = False) -> ModelSpec:
    return ModelSpec(name, WordVectorsOptions(fmt, path, allow_pickle=allow_pickle))


@pytest.mark.parametrize("name", list(REAL_FILES))
def test_real_files_load_as_gensim_does(spaces, name):
    kv = gensim_reference(name)
    space = spaces[name]
    assert space.words == kv.index_to_key
    np.testing.assert_array_equal(space.vectors, kv.vectors)
    assert space.has_subwords is (name == "lee-fasttext")
    assert space.version.startswith("sha256:") and len(space.version) == 23
    assert space.space == f"model:{name}@{space.version}"


def test_unit_rows_equal_gensim_normalised_vectors(spaces):
    kv = gensim_reference("glove")
    np.testing.assert_array_equal(spaces["glove"].unit, kv.get_normed_vectors())
    assert not spaces["glove"].unit.flags.writeable


def test_binary_round_trip_and_gensim_native(tmp_path):
    from gensim.models import KeyedVectors

    words, vectors = planted_vectors()
    kv = KeyedVectors(vector_size=vectors.shape[1], count=0, dtype=np.float32)
    kv.add_vectors(words, vectors)
    kv.save_word2vec_format(str(tmp_path / "m.bin"), binary=True)
    kv.save(str(tmp_path / "m.kv"))
    binary = load_word_vectors(spec(tmp_path / "m.bin", WordVectorFormat.WORD2VEC_BINARY), tmp_path)
    native = load_word_vectors(spec(tmp_path / "m.kv", WordVectorFormat.GENSIM, allow_pickle=True), tmp_path)
    for space in (binary, native):
        assert space.words == words
        np.testing.assert_array_equal(space.vectors, vectors)
    assert binary.version == native.version  # the version is the content, not the file


@pytest.mark.parametrize(
    ("content", "fmt"),
    [
        (b"2 3\nking 1 2 3\nqueen 1 2\n", WordVectorFormat.WORD2VEC_TEXT),
        (b"king 1 2 three\n", WordVectorFormat.GLOVE),
        (b"not a binary file", WordVectorFormat.WORD2VEC_BINARY),
        (b"\x00\x01garbage", WordVectorFormat.FASTTEXT),
        (b"1 2\nking nan 1\n", WordVectorFormat.WORD2VEC_TEXT),
    ],
)
def test_unparseable_files_give_one_line_errors(tmp_path, content, fmt):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError) as info:
        load_word_vectors(spec(path, fmt, name="broken"), tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"model 'broken': cannot read {path} as {fmt.value}: ")


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_word_vectors(spec(tmp_path / "nope.txt", WordVectorFormat.GLOVE), tmp_path)
