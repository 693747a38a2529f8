"""The README checker's parts (tests/test_readme.py runs them): its blocks found with Sybil, shown output compared with
real output under masks for what truly varies, and a failure message with the block's line and a unified diff.

How a block is checked, by its fence's language (docs/architecture.md, "How the README is checked"):
- `console`, and `sh` blocks with `$ ` prompts: each `$ command` (continued while a line ends in `\\` or a quote is
  open) runs in bash, stdout and stderr together, in one working directory whose shell variables carry over
  (`export`); its output is compared with the lines shown under it.
- `sh` without prompts: run as one bash script (heredocs that write the files later blocks read); output not shown.
- `python` starting with `>>>`: doctest examples (parsed by `doctest`), each one's output compared with its own.
- other `python`: run in the README's Python namespace; the `# ...` comment lines right under a `print(...)` line are
  that print's output.
- `toml`: parsed (tomllib). Anything else must carry a directive.
Directives, in an HTML comment right before a block (invisible on GitHub): `<!-- readme-check: skip (reason) -->`,
`<!-- readme-check: save-as FILE -->` (the block is written to FILE, for a later `$ python FILE` or `--config FILE`),
`<!-- readme-check: restart-server [serve flags] -->` (the server is restarted with these flags before the block),
`<!-- readme-check: write-file FILE` + lines + `-->` (FILE gets those lines before the block: a configuration the
prose describes but does not show), `<!-- readme-check: run` + shell lines + `-->` (run before the block, likewise:
data the prose describes), `<!-- readme-check: output -->` (the block is the output of the Python block
before it).
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sybil import Document, Region
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, FencedCodeBlockLexer

# What truly varies between runs, and nothing else. Each pattern, found in a shown line, matches any text of its form
# in the real line (a lookbehind checks the context the real line already matched).
MASKS: dict[str, str] = {
    "timestamp": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)",
    "request id": r'(?<="request_id":) ?"[0-9a-f]{32}"',
    "operation id": r"(?<=operations/)\d+-[0-9a-f]+",
    "local port": r"(?<=127\.0\.0\.1:)\d+",
    "duration": r'(?<="duration_ms":) ?\d+(?:\.\d+)?',
    "progress timing": r"\[\d\d:\d\d<\d\d:\d\d, +\d+(?:\.\d+)?[a-z]+/s\]",
    "new API key": r"(?<=^key: )esk_[A-Za-z0-9_-]{43}$",
    "new key's hash": r'(?<=^sha256 = ")[0-9a-f]{64}(?="$)',
    "creation time": r'(?<="created":)\d+',
    # A new collection's files hold its creation time, whose text is a byte longer or shorter from run to run.
    "disk bytes": r'(?<="diskBytes": ")\d+',
    # The binary form of an ErrorInfo, whose metadata map protobuf serialises in no fixed order; its decoded form,
    # `debug`, is beside it and compared.
    "serialised ErrorInfo": r'(?<="google.rpc.ErrorInfo",) ?"value": ?"[A-Za-z0-9+/_-]+=*"',
}
# A decimal number, compared to the digits it is printed with: float noise below the printed precision passes.
NUMBER = r"(?<![\w.])-?\d+\.\d+(?:[eE][-+]?\d+)?(?![\w.])"
ELLIPSIS = "..."
# Units of the last printed digit a number may be off by (float32 sums in another order, another CPU's BLAS); at
# least a relative 1e-6, the noise of float32 values printed with more digits than they hold.
LAST_DIGIT_UNITS = 3
RELATIVE = 1e-6

_TOKEN = re.compile("|".join([*(f"(?P<m{i}>{p})" for i, p in enumerate(MASKS.values())), f"(?P<num>{NUMBER})"]))
_MASK_PATTERNS = list(MASKS.values())


@dataclass
class LinePattern:
    """One shown line as a regular expression, with the numbers it prints."""

    regex: re.Pattern[str]
    numbers: list[str]
    # The same line with its JSON's keys sorted: JSON objects (proto3 JSON's maps among them) in any key order.
    sorted_json: LinePattern | None = None

    @classmethod
    def of(cls, shown: str) -> LinePattern:
        pattern = cls._of(shown)
        canonical = sorted_json(shown) if ELLIPSIS not in shown else None
        if canonical is not None:
            pattern.sorted_json = cls._of(canonical)
        return pattern

    @classmethod
    def _of(cls, shown: str) -> LinePattern:
        parts, numbers = [], []
        for piece in _split_ellipsis(shown):
            if piece is None:
                parts.append(".*?")
                continue
            at = 0
            for match in _TOKEN.finditer(piece):
                parts.append(re.escape(piece[at : match.start()]))
                if match.group("num") is not None:
                    parts.append(f"({NUMBER})")
                    numbers.append(match.group("num"))
                else:
                    index = next(int(k[1:]) for k, v in match.groupdict().items() if v is not None)
                    parts.append(f"(?:{_MASK_PATTERNS[index]})")
                at = match.end()
            parts.append(re.escape(piece[at:]))
        return cls(re.compile("".join(parts)), numbers)

    def matches(self, line: str) -> bool:
        if self._matches(line):
            return True
        if self.sorted_json is None:
            return False
        canonical = sorted_json(line)
        return canonical is not None and self.sorted_json._matches(canonical)

    def _matches(self, line: str) -> bool:
        match = self.regex.fullmatch(line)
        if match is None:
            return False
        return all(close(shown, real) for shown, real in zip(self.numbers, match.groups(), strict=True))


def sorted_json(line: str) -> str | None:
    """A line that is a JSON value (and maybe a suffix, as curl's `-w '%{http_code}'` adds) with its keys sorted."""
    if not line.startswith(("{", "[")):
        return None
    try:
        value, end = json.JSONDecoder().raw_decode(line)
    except ValueError:
        return None
    return json.dumps(value, sort_keys=True, ensure_ascii=False) + line[end:]


def _split_ellipsis(line: str) -> Iterator[str | None]:
    """The literal pieces of a line, with None where `...` stands for any text."""
    pieces = line.split(ELLIPSIS)
    for i, piece in enumerate(pieces):
        if i:
            yield None
        yield piece


def close(shown: str, real: str) -> bool:
    """A real number printed as `real` agrees with the README's `shown` to the digits the README prints."""
    mantissa = shown.lower().split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    exponent = int(shown.lower().split("e")[1]) if "e" in shown.lower() else 0
    unit = 10.0 ** (exponent - decimals)
    a, b = float(shown), float(real)
    return abs(a - b) <= max(LAST_DIGIT_UNITS * unit, RELATIVE * abs(a))


def normalise_output(text: str) -> list[str]:
    """Real output as the lines a terminal shows: a carriage return moves back to the start of the line, and what is
    written next overwrites it (a progress bar shows its last state; one that clears itself, nothing); trailing spaces
    and trailing blank lines dropped."""
    lines: list[str] = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        shown: list[str] = []
        for segment in raw.split("\r"):
            shown[: len(segment)] = list(segment)
        lines.append("".join(shown).rstrip())
    while lines and not lines[-1]:
        lines.pop()
    return lines


def align(shown: list[str], real: list[str]) -> list[str]:
    """The real lines written in the README's terms: a real line that matches its shown line is replaced by it, the
    lines a `...` line stands for by that `...`; the rest stay as they are. Equal to `shown` exactly when they
    agree."""
    patterns = [None if s.strip() == ELLIPSIS else LinePattern.of(s) for s in shown]
    out: list[str] = []
    i = 0
    for j, pattern in enumerate(patterns):
        if pattern is None:
            following = next((p for p in patterns[j + 1 :] if p is not None), None)
            while i < len(real) and not (following is not None and following.matches(real[i])):
                i += 1
            out.append(shown[j])
            continue
        if i < len(real) and pattern.matches(real[i]):
            out.append(shown[j])
            i += 1
            continue
        ahead = next((k for k in range(i + 1, min(len(real), i + 40)) if pattern.matches(real[k])), None)
        if ahead is not None:  # real lines the README lacks, then this one
            out.extend(real[i:ahead])
            out.append(shown[j])
            i = ahead + 1
            continue
        following = patterns[j + 1] if j + 1 < len(patterns) else None
        if i < len(real) and following is not None and following.matches(real[i]):
            continue  # a shown line the output lacks
        if i < len(real):
            out.append(real[i])
            i += 1
    out.extend(real[i:])
    return out


def diff(shown: str, real: str, where: str) -> str | None:
    """None when `real` output agrees with the `shown` output, else a unified diff (- README, + real)."""
    shown_lines = shown.split("\n")
    while shown_lines and not shown_lines[-1].strip():
        shown_lines.pop()
    aligned = align(shown_lines, normalise_output(real))
    if aligned == shown_lines:
        return None
    return "\n".join(
        difflib.unified_diff(shown_lines, aligned, f"{where} (README)", f"{where} (real output)", lineterm="")
    )


# ---- parsing: Sybil finds the fenced blocks and the directives before them ----------------------------------------


@dataclass
class Directive:
    line: int
    verb: str
    argument: str
    body: str = ""  # the comment's lines after the directive's own (write-file's content)


@dataclass
class Block:
    """A fenced block of the README, with the directives written right before it."""

    line: int  # of the opening fence
    language: str
    source: str
    directives: list[Directive] = field(default_factory=list)

    @property
    def first_line(self) -> int:
        """The README line of the block's first line of content."""
        return self.line + 1

    def directive(self, verb: str) -> Directive | None:
        return next((d for d in self.directives if d.verb == verb), None)

    @property
    def skip_reason(self) -> str | None:
        found = self.directive("skip")
        if found is None:
            return None
        match = re.fullmatch(r"\((.*)\)", found.argument.strip(), re.DOTALL)
        return (match.group(1) if match else "").strip()

    @property
    def kind(self) -> str:
        """How it is checked: skip, save, console, script, doctest, python, toml, or unknown (no rule: an error)."""
        if self.directive("skip"):
            return "skip"
        if self.directive("save-as"):
            return "save"
        if self.directive("output"):
            return "output"
        if self.language == "console" or (self.language == "sh" and self.source.lstrip().startswith("$ ")):
            return "console"
        if self.language == "sh":
            return "script"
        if self.language == "python":
            return "doctest" if self.source.lstrip().startswith(">>>") else "python"
        if self.language == "toml":
            return "toml"
        return "unknown"


VERBS = ("skip", "save-as", "restart-server", "write-file", "run", "output")


class ReadmeParser:
    """A Sybil parser: one region per fenced block (any language, or none), carrying its directives."""

    def __init__(self) -> None:
        self.fences = FencedCodeBlockLexer(language=r"[\w+-]*", mapping={"language": "language", "source": "source"})
        self.directives = DirectiveInHTMLCommentLexer(directive="readme-check", arguments=r".*?")

    def __call__(self, document: Document) -> Iterator[Region]:
        directives = sorted(self.directives(document), key=lambda r: r.start)
        previous_end = 0
        for region in sorted(self.fences(document), key=lambda r: r.start):
            line = document.text.count("\n", 0, region.start) + 1
            mine = []
            for d in directives:
                if previous_end <= d.start < region.start:
                    verb, _, argument = str(d.lexemes["arguments"]).strip().partition(" ")
                    body = str(d.lexemes.get("source") or "")
                    mine.append(Directive(document.text.count("\n", 0, d.start) + 1, verb, argument.strip(), body))
            region.parsed = Block(line, str(region.lexemes["language"]), str(region.lexemes["source"]), mine)
            previous_end = region.end
            yield region


def parse(path: Path) -> Document:
    return Document.parse(str(path), ReadmeParser())


# ---- console blocks: commands and the output shown under each -------------------------------------------------------


@dataclass
class Command:
    line: int  # README line of the `$ `
    text: str
    shown: str


def commands(block: Block) -> list[Command]:
    """The `$ ` commands of a console block with the output shown under each."""
    lines = block.source.split("\n")
    found: list[Command] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            if lines[i].strip():
                raise ValueError(f"README.md:{block.first_line + i}: output before the first command: {lines[i]!r}")
            i += 1
            continue
        start = i
        text = lines[i][2:]
        while _continues(text) and i + 1 < len(lines):
            i += 1
            text += "\n" + lines[i]
        i += 1
        shown = []
        while i < len(lines) and not lines[i].startswith("$ "):
            shown.append(lines[i])
            i += 1
        found.append(Command(block.first_line + start, text, "\n".join(shown).rstrip("\n")))
    return found


def _continues(text: str) -> bool:
    if text.endswith("\\"):
        return True
    try:
        shlex.split(text, comments=True)
    except ValueError:  # an open quote: the command goes on on the next line
        return True
    return False


def print_comments(source: str) -> str | None:
    """The output a plain Python block shows: the `# ` comment lines right under its `print(` lines (None: none)."""
    lines = source.split("\n")
    shown: list[str] = []
    found = False
    for i, line in enumerate(lines):
        if line.strip().startswith("print("):
            k = i + 1
            while k < len(lines) and lines[k].strip().startswith("#"):
                shown.append(lines[k].strip()[1:].removeprefix(" "))
                found = True
                k += 1
    return "\n".join(shown) if found else None


def describe(blocks: list[Any]) -> str:
    return "\n".join(f"README.md:{b.line} {b.language or '(none)'}: {b.kind}" for b in blocks)
