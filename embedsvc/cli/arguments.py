"""How the CLI reads its arguments: one vocabulary, deprecated spellings, and "did you mean" on a mistyped flag.

The vocabulary: a flag is the API field it sets, in kebab case (`top_n` / `topN` is `--top-n`, `k` is `-k`,
`restrict_vocab` is `--restrict-vocab`), and one idea has one flag in every command. A renamed flag keeps its old
spelling for one release, hidden from the help, with a deprecation note on stderr (`deprecated_alias`).

argparse (Python 3.11) answers a mistyped flag with the top-level usage and no suggestion; `Parser` answers with the
usage of the subcommand that was typed and the closest of its flags (difflib), and suggests the closest command for a
mistyped command.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

# Renamed flags keep their old spelling until the release after the one that renamed them; the README's tour lists
# them (after 0.2: --topn of arith and nearest, --top-n of map and cluster, --clusters of map).
DEPRECATED = "{old} is deprecated and will be removed in the next release: use {new}"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors suggest the closest command or flag."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # argparse's own check, with a suggestion (Python 3.14's suggest_on_error does the same).
        if action.choices is not None and value not in action.choices:
            choices = [str(c) for c in action.choices]
            close = difflib.get_close_matches(str(value), choices, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "choose from " + ", ".join(map(repr, choices))
            raise argparse.ArgumentError(action, f"invalid choice: {value!r} ({hint})")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            innermost = self.innermost(parsed)
            innermost.unrecognized(extras)
        return parsed

    def innermost(self, parsed: argparse.Namespace) -> Parser:
        """The parser of the (sub)command that was typed: `embedsvc collections create` -> create's parser."""
        parser: Parser = self
        while True:
            found = None
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    chosen = getattr(parsed, action.dest, None) if action.dest != argparse.SUPPRESS else None
                    if chosen in action.choices:
                        found = action.choices[chosen]
            if not isinstance(found, Parser):
                return parser
            parser = found

    def visible_options(self) -> list[str]:
        return [
            option for action in self._actions if action.help != argparse.SUPPRESS for option in action.option_strings
        ]

    def unrecognized(self, extras: list[str]) -> NoReturn:
        options = self.visible_options()
        parts = []
        for extra in extras:
            flag = extra.split("=", 1)[0]
            close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6) if flag.startswith("-") else []
            parts.append(f"{extra} (did you mean {close[0]}?)" if close else extra)
        self.error("unrecognized arguments: " + " ".join(parts))


class _Deprecated(argparse.Action):
    """A renamed flag's old spelling: stores into the new flag's destination and says it is deprecated."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        print(f"{parser.prog}: " + DEPRECATED.format(old=option, new=self.new), file=sys.stderr)
        setattr(namespace, self.dest, values)


def deprecated_alias(group: Any, old: str, new: argparse.Action) -> None:
    """Accept `old` for the flag `new` (hidden from the help, with a note on stderr when used). `group` is the parser or
    mutually exclusive group that holds `new`."""
    group.add_argument(
        old,
        action=_Deprecated,
        new=new.option_strings[-1],
        dest=new.dest,
        type=new.type,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
        metavar=new.metavar,
    )
