"""Commands over maps of a space: `map` (a PNG of a 2-D PCA projection) and `cluster` (Gaussian mixtures, k-means)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from embedsvc.cli.arguments import deprecated_alias
from embedsvc.cli.output import emit, fail


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", help="a word, text or image model (with --words, --first-words, --texts or --images)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--words",
        action="append",
        help='words separated by spaces; repeat for groups, optionally named: --words "animals: cat dog lion"',
    )
    first = source.add_argument(
        "--first-words", type=int, metavar="N", help="the first N words of the model's vocabulary"
    )
    # --top-n in 0.2; elsewhere --top-n is the number of hits (the API's top_n).
    deprecated_alias(source, "--top-n", first)
    source.add_argument("--texts", nargs="+", help="texts, for a text model")
    source.add_argument("--images", nargs="+", type=Path, help="PNG/JPEG files, for an image model")
    source.add_argument("--collection", help="every item of a collection")
    parser.add_argument("--normalize", action="store_true", help="unit-normalise the vectors first (cosine geometry)")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    m = sub.add_parser("map", parents=[common], help="draw a 2-D PCA map of words, texts, images or a collection")
    _source_arguments(m)
    colour = m.add_mutually_exclusive_group()
    colour.add_argument(
        "--color-by", default=None, help='"group" (default with --words groups), "cluster", or a metadata field'
    )
    colour.add_argument("--color-field", default="", help='a metadata field, whatever its name ("group" too)')
    clusters = m.add_argument(
        "-k", dest="clusters", type=int, default=0, help="clusters for --color-by cluster (default 0: chosen by BIC)"
    )
    deprecated_alias(m, "--clusters", clusters)  # 0.2's spelling; `cluster` says -k for the same number
    m.add_argument("--thumbnails", action="store_true", help="draw the images (or a VAE collection's decoded items)")
    m.add_argument("--no-labels", action="store_true", help="do not write each point's label")
    m.add_argument("--title", default="")
    m.add_argument("--width", type=int, default=800)
    m.add_argument("--height", type=int, default=600)
    m.add_argument("--out", required=True, type=Path)
    m.set_defaults(handler=draw_map)

    c = sub.add_parser("cluster", parents=[common], help="Gaussian-mixture (or k-means) clusters of a point set")
    _source_arguments(c)
    c.add_argument("-k", type=int, default=0, help="clusters (default 0: chosen by BIC up to --max-k)")
    c.add_argument("--max-k", type=int, default=10)
    c.add_argument("--method", choices=("gmm", "kmeans"), default="gmm")
    c.add_argument("--covariance", choices=("full", "diag", "spherical", "tied"), default="diag")
    c.add_argument("--reduce-to", type=int, default=0, help="cluster a PCA projection to this many dimensions")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(handler=cluster)


def _parse_groups(values: list[str]) -> tuple[list[str], list[str]]:
    words: list[str] = []
    groups: list[str] = []
    for n, value in enumerate(values, start=1):
        name, sep, rest = value.partition(":")
        if not sep or " " in name.strip():
            name, rest = f"group {n}", value
        for word in rest.split():
            words.append(word)
            groups.append(name.strip())
    return words, groups


def point_set(args: argparse.Namespace) -> tuple[Any, bool]:
    """The request's PointSet, and whether it carries groups."""
    from embedsvc.client import collection_points, image_points, text_points, word_points

    if args.collection:
        return collection_points(args.collection, normalize=args.normalize), False
    if not args.model:
        fail("--model is required with --words, --first-words, --texts or --images")
    if args.words:
        words, groups = _parse_groups(args.words)
        grouped = len(args.words) > 1 or any(":" in w for w in args.words)
        return word_points(args.model, words, groups=groups if grouped else (), normalize=args.normalize), grouped
    if args.first_words:
        return word_points(args.model, top_n=args.first_words, normalize=args.normalize), False
    if args.texts:
        return text_points(args.model, args.texts), False
    images = [p.read_bytes() for p in args.images]
    return image_points(args.model, images, labels=[p.stem for p in args.images]), False


def draw_map(args: argparse.Namespace, client: Any) -> None:
    points, grouped = point_set(args)
    color_by = args.color_by if args.color_by is not None else ("group" if grouped else "")
    png = client.plot(
        points,
        width=args.width,
        height=args.height,
        title=args.title,
        color_by=color_by if not args.color_field else "",
        color_field=args.color_field,
        cluster_k=args.clusters,
        annotate=not args.no_labels,
        thumbnails=args.thumbnails,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(png)
    emit(args, {"out": str(args.out), "bytes": len(png)}, f"wrote {args.out} ({args.width}x{args.height})")


def cluster(args: argparse.Namespace, client: Any) -> None:
    points, _ = point_set(args)
    result = client.cluster(
        points,
        k=args.k,
        max_k=args.max_k,
        method=args.method,
        covariance=args.covariance,
        reduce_to=args.reduce_to,
        seed=args.seed,
    )
    members: dict[int, list[str]] = {}
    for label, index in zip(result.labels, result.assignments.tolist(), strict=True):
        members.setdefault(index, []).append(label)
    payload = {
        "k": result.k,
        "assignments": dict(zip(result.labels, result.assignments.tolist(), strict=True)),
        "weights": result.weights.tolist(),
        "bic": {str(k): v for k, v in result.bic.items()},
        "mean_log_likelihood": result.mean_log_likelihood,
    }
    if args.collection:  # a collection's points come in id order ("d0 d1 d10 d100"): list them as people count
        for labels in members.values():
            labels.sort(key=_natural)
    lines = [f"k = {result.k}" + (" (lowest BIC)" if args.k == 0 and args.method == "gmm" else "")]
    for c in sorted(members):
        shown = " ".join(members[c][:12]) + (f" ... (+{len(members[c]) - 12})" if len(members[c]) > 12 else "")
        lines.append(f"{c}: {shown}")
    emit(args, payload, "\n".join(lines))


def _natural(label: str) -> list[Any]:
    """Sort key that orders digit runs by their value: d2 < d10 (the runs alternate text, number, text, ...)."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", label))]
