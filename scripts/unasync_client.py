"""Write the blocking client, `embedsvc/client/sync.py`, from the asyncio one, `embedsvc/client/aio.py`.

    python scripts/unasync_client.py           # regenerate sync.py
    python scripts/unasync_client.py --check   # exit 1 when sync.py is not what aio.py gives (.ci/run)

The way httpcore keeps its two clients: one source, the other generated. The `unasync` package drops `async` and
`await` and renames tokens by the table below (Python's tokenizer, so strings and comments are left alone); then the
module docstring becomes the header below, and ruff sorts the imports, drops the ones the blocking client does not
use (asyncio) and formats the result, so that it passes the same checks as hand-written code.
"""

from __future__ import annotations

import argparse
import difflib
import subprocess
import sys
import tempfile
from pathlib import Path

import unasync

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "embedsvc" / "client" / "aio.py"
TARGET = ROOT / "embedsvc" / "client" / "sync.py"
# Beyond unasync's own (__aenter__, __anext__, AsyncIterator, StopAsyncIteration, ...).
RENAMES = {
    "AsyncClient": "Client",
    "AsyncExport": "Export",
    "aio_channel": "channel",
    "anext": "next",
    "asyncio": "time",  # asyncio.sleep -> time.sleep (time is imported already; the duplicate import goes)
}
HEADER = '''"""The blocking client: every RPC of the API as a method, numpy in and numpy out.

Generated from aio.py by scripts/unasync_client.py; do not edit: edit aio.py, then run the script.
"""
'''


def blocking(source: str) -> str:
    """The blocking client's source, from the asyncio client's."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "aio").mkdir()
        (Path(folder) / "aio" / "client.py").write_text(source, encoding="utf-8")
        unasync.unasync_files(
            [str(Path(folder) / "aio" / "client.py")],
            [unasync.Rule("/aio/", "/sync/", additional_replacements=RENAMES)],
        )
        text = (Path(folder) / "sync" / "client.py").read_text(encoding="utf-8")
    text = HEADER + _without_docstring(text)
    text = _ruff(["check", "--fix-only", "--select", "I,F401,F811"], text)
    return _ruff(["format"], text)


def _without_docstring(text: str) -> str:
    if not text.startswith('"""'):
        raise SystemExit(f"{SOURCE} must open with a docstring (the generated file replaces it with its header)")
    return text[text.index('"""', 3) + 3 :].lstrip("\n")


def _ruff(arguments: list[str], text: str) -> str:
    """ruff on the text as if it were sync.py (so the project's settings apply)."""
    command = [sys.executable, "-m", "ruff", *arguments, "--quiet", "--stdin-filename", str(TARGET), "-"]
    done = subprocess.run(command, input=text, capture_output=True, text=True, cwd=ROOT, check=False)  # noqa: S603
    if done.returncode != 0:
        raise SystemExit(f"ruff {' '.join(arguments)} failed on the generated client:\n{done.stderr}")
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if sync.py is not what aio.py gives")
    args = parser.parse_args()
    expected = blocking(SOURCE.read_text(encoding="utf-8"))
    if not args.check:
        TARGET.write_text(expected, encoding="utf-8")
        return 0
    actual = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
    if actual == expected:
        return 0
    diff = difflib.unified_diff(actual.splitlines(True), expected.splitlines(True), "sync.py", "from aio.py")
    sys.stdout.writelines(diff)
    print(f"{TARGET.relative_to(ROOT)} is stale: run python scripts/unasync_client.py and commit it", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
