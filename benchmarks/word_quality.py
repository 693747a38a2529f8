"""Quality of a word model on gensim's evaluation sets; the numbers in models/*.md come from here.

    python benchmarks/word_quality.py [--data-dir DIR]            # the embedded minilm-static
    python benchmarks/word_quality.py --file F --format glove      # any file the server can host

Prints analogy accuracy (questions-words.txt, 3CosAdd and 3CosMul, gensim's counting rules) and the Spearman
correlation with human judgements on WordSim353 and SimLex999 (gensim evaluate_word_pairs), with OOV rates.
--smoke: the first 600 analogy questions only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gensim

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._serve import add_smoke, cache_dir
from embedsvc.backends.base import ModelSpec
from embedsvc.backends.word_vectors import WordVectorFormat, WordVectorsOptions, load_word_vectors
from embedsvc.core.words.analogies import evaluate_analogies, parse_analogies
from embedsvc.core.words.arithmetic import Method
from embedsvc.settings import Settings

DATA = Path(gensim.__file__).parent / "test" / "test_data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--file", type=Path, help="a word-vector file (default: the embedded minilm-static)")
    parser.add_argument("--format", choices=[f.value for f in WordVectorFormat if f.value != "model2vec"])
    add_smoke(parser)
    args = parser.parse_args()
    if args.file:
        spec = ModelSpec(args.file.stem, WordVectorsOptions(WordVectorFormat(args.format), args.file))
    else:
        spec = Settings().all_models()[0]
    space = load_word_vectors(spec, cache_dir(args.data_dir))
    print(f"model {space.name} {space.version}: {space.size} words x {space.dimension}")
    lines = (DATA / "questions-words.txt").read_bytes().splitlines(keepends=True)
    questions = parse_analogies(b"".join(lines[:603] if args.smoke else lines))
    for method in Method:
        report = evaluate_analogies(space, questions, method=method)
        answered = report.total.correct + report.total.incorrect
        print(
            f"questions-words {method.value}: accuracy {report.total.accuracy:.4f} "
            f"({report.total.correct}/{answered}; {report.oov_questions} of {report.questions} OOV)"
        )
    for name in ("wordsim353.tsv", "simlex999.txt"):
        pearson, spearman, oov = space.kv.evaluate_word_pairs(str(DATA / name))
        print(f"{name}: Spearman {spearman.statistic:.4f}, Pearson {pearson.statistic:.4f}, OOV {oov:.1f}%")


if __name__ == "__main__":
    main()
