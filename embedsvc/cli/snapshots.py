"""Commands over snapshots: `snapshot create|list|info|delete|restore|download|upload`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from embedsvc.cli.collections import follow, info_line, operation_dict, operation_line
from embedsvc.cli.output import emit, message_dict, warn


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    sn = sub.add_parser("snapshot", parents=[common], help="snapshots of collections: backup and restore")
    sn_sub = sn.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")
    cr = sn_sub.add_parser("create", parents=[common], help="take a snapshot of a collection (writes go on)")
    cr.add_argument("collection", help="the collection, or an alias of it")
    cr.add_argument("--no-wait", action="store_true", help="print the operation and return at once")
    cr.set_defaults(handler=create)
    ls = sn_sub.add_parser("list", parents=[common], help="snapshots, newest first")
    ls.add_argument("--collection", default="", help="only this collection's")
    ls.set_defaults(handler=list_all)
    for action, handler, text in (("info", info, "describe a snapshot"), ("delete", delete, "delete a snapshot")):
        parser = sn_sub.add_parser(action, parents=[common], help=text)
        parser.add_argument("name", help="snapshots/...")
        parser.set_defaults(handler=handler)
    rs = sn_sub.add_parser("restore", parents=[common], help="restore a snapshot into a new collection")
    rs.add_argument("name", help="snapshots/...")
    rs.add_argument("collection", help="the new collection's name")
    rs.add_argument("--replace-existing", action="store_true", help="restore over the collection of that name")
    rs.add_argument(
        "--allow-model-mismatch",
        action="store_true",
        help="restore a collection bound to a model version this server does not serve",
    )
    rs.add_argument("--backend", choices=("faiss", "milvus"), default="", help="default: the snapshot's")
    rs.add_argument("--no-wait", action="store_true", help="print the operation and return at once")
    rs.set_defaults(handler=restore)
    dl = sn_sub.add_parser("download", parents=[common], help="save a snapshot as a tar file (checked as it arrives)")
    dl.add_argument("name", help="snapshots/...")
    dl.add_argument("--output", "-o", type=Path, required=True, help="the tar file to write")
    dl.set_defaults(handler=download)
    ul = sn_sub.add_parser("upload", parents=[common], help="upload a snapshot tar file (kept under a new name)")
    ul.add_argument("file", type=Path, help="a tar file from `snapshot download`")
    ul.set_defaults(handler=upload)


def snapshot_line(s: Any) -> str:
    from embedsvc.v1 import snapshots_pb2

    kind = snapshots_pb2.SnapshotFormat.Name(s.format).removeprefix("SNAPSHOT_FORMAT_").lower()
    moment = s.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if s.HasField("create_time") else ""
    exact = f"lsn {s.position}" if kind == "faiss" else ("point in time" if s.point_in_time else "fuzzy")
    return f"{s.name}  {s.collection:<16} {s.count:>9} items  {s.size_bytes:>12} bytes  {kind} ({exact})  {moment}"


def _finish(args: argparse.Namespace, client: Any, operation: Any, unit: str) -> Any:
    if not args.no_wait:
        operation = follow(args, client, operation, unit=unit)
        if operation.error is not None:
            raise operation.error
    for warning in operation.warnings:
        warn(f"warning: {warning}")
    return operation


def create(args: argparse.Namespace, client: Any) -> None:
    operation = _finish(args, client, client.create_snapshot(args.collection), "item")
    text = snapshot_line(operation.result) if operation.result is not None else operation_line(operation)
    emit(args, operation_dict(operation), text)


def list_all(args: argparse.Namespace, client: Any) -> None:
    found = client.list_snapshots(args.collection)
    emit(args, {"snapshots": [message_dict(s) for s in found]}, "\n".join(snapshot_line(s) for s in found))


def info(args: argparse.Namespace, client: Any) -> None:
    found = client.get_snapshot(args.name)
    emit(args, message_dict(found), snapshot_line(found))


def delete(args: argparse.Namespace, client: Any) -> None:
    client.delete_snapshot(args.name)
    emit(args, {"deleted": args.name}, f"deleted {args.name}")


def restore(args: argparse.Namespace, client: Any) -> None:
    operation = client.restore_snapshot(
        args.name,
        args.collection,
        replace_existing=args.replace_existing,
        allow_model_mismatch=args.allow_model_mismatch,
        backend=args.backend,
    )
    operation = _finish(args, client, operation, "item")
    text = info_line(operation.result) if operation.result is not None else operation_line(operation)
    emit(args, operation_dict(operation), text)


def download(args: argparse.Namespace, client: Any) -> None:
    manifest = client.download_snapshot(args.name, args.output)
    size = sum(f["size_bytes"] for f in manifest["files"])
    emit(
        args,
        {"file": str(args.output), "snapshot": args.name, "count": manifest["count"], "size_bytes": size},
        f"saved {args.name} ({manifest['count']} items, {len(manifest['files'])} files, every sha256 checked) to "
        f"{args.output}",
    )


def upload(args: argparse.Namespace, client: Any) -> None:
    found = client.upload_snapshot(args.file)
    emit(args, message_dict(found), f"uploaded {args.file} as {found.name}\n{snapshot_line(found)}")
