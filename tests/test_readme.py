"""README.md's examples run and their output is compared with the one shown (issue 36): a README that drifts fails.

One real server (`embedsvc serve`, as the README's tour starts it, with the embedded models) serves the whole README
in its order; the blocks run one test each, `README.md:LINE`, sharing a working directory, shell variables and a
Python namespace, so a later block sees what an earlier one made. Rules, directives and masks: tests/readme_check.py
and docs/architecture.md ("How the README is checked"). A failure names the README line of the command or example and
shows a unified diff (- README, + real output): fix the code, or paste the real output into the README.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
import traceback
from collections.abc import Iterator
from doctest import DocTestParser
from pathlib import Path

import pytest
from sybil import Example

from tests import readme_check as rc
from tests.conftest import server_data_dir

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENT = rc.parse(README)
EXAMPLES: list[Example] = list(DOCUMENT)
# The ports the README shows, and what the test's own server listens on instead.
README_PORTS = {"grpc": "localhost:50051", "http": "localhost:8080", "metrics": "localhost:9464"}
COMMAND_TIMEOUT_S = 600
READY = "all models ready and collections recovered; serving"


class ReadmeServer:
    """`embedsvc serve` in a subprocess, on free ports (gRPC, HTTP/JSON, metrics), in the README's home directory."""

    def __init__(self, home: Path, work: Path, env: dict[str, str]) -> None:
        self.home, self.work, self.env = home, work, env
        self.proc: subprocess.Popen[str] | None = None
        self.ports: dict[str, str] = {}
        self.log: list[str] = []

    def start(self, *flags: str) -> None:
        args = [sys.executable, "-m", "embedsvc", "serve", "--port", "0", "--http-port", "0", "--metrics-port", "0"]
        proc = subprocess.Popen(
            [*args, *flags], cwd=self.work, env=self.env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        assert proc.stderr is not None
        wanted = {
            "grpc": re.compile(r"listening on [\d.]+:(\d+)"),
            "http": re.compile(r"HTTP/JSON API on https?://[\d.]+:(\d+)"),
            "metrics": re.compile(r"metrics on http://[\d.]+:(\d+)/metrics"),
        }
        ports: dict[str, str] = {}
        # Ready once the log says so: polling health would add calls the README's metrics do not show.
        for line in proc.stderr:
            self.log.append(line)
            for name, pattern in wanted.items():
                match = pattern.search(line)
                if match:
                    ports[name] = f"localhost:{match.group(1)}"
            if READY in line:
                break
        else:
            raise RuntimeError(f"embedsvc serve {' '.join(flags)} exited with {proc.wait()}:\n{''.join(self.log)}")
        assert len(ports) == len(wanted), ports
        threading.Thread(target=self._drain, args=(proc,), daemon=True).start()
        self.proc, self.ports = proc, ports

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.log.append(line)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class Session:
    """What the README's reader has: a shell (working directory, exported variables), a Python prompt, a server."""

    def __init__(self, work: Path, home: Path) -> None:
        self.work, self.home = work, home
        bin_dir = str(Path(sys.executable).parent)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBEDSVC_", "XDG_DATA_HOME"))}
        env.update(
            HOME=str(home),
            PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
            PYTHONUNBUFFERED="1",
            COLUMNS="80",
        )
        self.env = env
        self.server = ReadmeServer(home, work, env)
        self.namespace: dict[str, object] = {}
        self.raised = False
        self.last_output = ""  # a plain Python block's, for an `output` block after it

    def substitute(self, text: str) -> str:
        """The README's ports replaced by the test server's (a port is what truly varies)."""
        for name, shown in README_PORTS.items():
            text = text.replace(shown, self.server.ports[name])
        return text

    def restart(self, flags: str) -> None:
        self.server.stop()
        self.server.start(*shlex.split(flags))
        self.env["EMBEDSVC_TARGET"] = self.server.ports["grpc"]

    def shell(self, command: str) -> tuple[str, int]:
        """Run one command in bash as the reader would, and keep the variables it exports."""
        env_file = self.work.parent / "readme-env"
        script = f"{self.substitute(command)}\n__rc=$?\nenv -0 > {shlex.quote(str(env_file))}\nexit $__rc\n"
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=self.work,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        if env_file.exists():
            pairs = (entry.partition("=") for entry in env_file.read_text().split("\0") if "=" in entry)
            self.env = {k: v for k, _, v in pairs if k not in ("_", "SHLVL", "OLDPWD", "__rc")}
            env_file.unlink()
        # Bytes, not text mode: universal newlines would turn a progress bar's carriage returns into lines.
        return result.stdout.decode("utf-8", "replace"), result.returncode

    def python(self, source: str, where: str, mode: str = "exec") -> str:
        """Run Python in the README's namespace, in its working directory; what it printed (or the exception)."""
        out = io.StringIO()
        self.raised = False
        with contextlib.chdir(self.work), contextlib.redirect_stdout(out):
            try:
                exec(compile(self.substitute(source), where, mode), self.namespace)
            except Exception as exc:
                self.raised = True
                out.write("".join(traceback.format_exception_only(exc)))
        return out.getvalue()


def evaluate(block: rc.Block, session: Session) -> str | None:
    """Run one block; None when its real output agrees with the README, else what differs."""
    for directive in block.directives:
        if directive.verb not in rc.VERBS:
            return f"README.md:{directive.line}: unknown directive readme-check: {directive.verb} (known: {rc.VERBS})"
    for directive in block.directives:
        if directive.verb == "write-file":
            (session.work / directive.argument).write_text(directive.body)
        elif directive.verb == "run":
            output, code = session.shell(directive.body)
            if code:
                return f"README.md:{directive.line}: the hidden setup exited with {code}:\n{output}"
    restart = block.directive("restart-server")
    if restart is not None:
        session.restart(restart.argument)
    kind = block.kind
    failures: list[str] = []
    if kind == "save":
        save = block.directive("save-as")
        assert save is not None
        (session.work / save.argument).write_text(session.substitute(block.source))
    elif kind == "console":
        for command in rc.commands(block):
            found = rc.diff(command.shown, session.shell(command.text)[0], f"README.md:{command.line}")
            if found:
                failures.append(f"README.md:{command.line}: $ {command.text}\n{found}")
    elif kind == "script":
        output, code = session.shell(block.source)
        if code:
            failures.append(f"README.md:{block.first_line}: the script exited with {code}:\n{output}")
    elif kind == "doctest":
        for example in DocTestParser().get_examples(block.source):
            line = block.first_line + example.lineno
            real = session.python(example.source, f"README.md:{line}", "single")
            found = rc.diff(example.want, real, f"README.md:{line}")
            if found:
                failures.append(f"README.md:{line}: >>> {example.source.strip()}\n{found}")
    elif kind == "python":
        real = session.python(block.source, f"README.md:{block.first_line}")
        session.last_output = real
        shown = rc.print_comments(block.source)
        found = rc.diff(shown or "", real, f"README.md:{block.first_line}")
        if shown is not None and found:
            failures.append(f"README.md:{block.first_line}: the block's printed output (its # comments)\n{found}")
        elif shown is None and session.raised:
            failures.append(f"README.md:{block.first_line}: the block raised:\n{real}")
    elif kind == "output":
        found = rc.diff(block.source, session.last_output, f"README.md:{block.first_line}")
        if found:
            failures.append(f"README.md:{block.first_line}: the output of the Python block before it\n{found}")
    elif kind == "toml":
        tomllib.loads(block.source)
    else:
        return (
            f"README.md:{block.line}: a ```{block.language or ''} block with no rule to check it: give it one "
            "(console, sh, python, toml) or a <!-- readme-check: skip (reason) --> before it"
        )
    return "\n\n".join(failures) or None


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, minilm: object) -> Iterator[Session]:
    """The README's reader: a home (whose default data directory shares the session's distilled minilm-static:
    asking for `minilm` distils it there once per session), a working directory and the server of the tour."""
    base = tmp_path_factory.mktemp("readme")
    home, work = base / "home", base / "work"
    work.mkdir()
    server_data_dir(home / ".local" / "share" / "embedsvc", data_dir)
    reader = Session(work, home)
    reader.restart("")
    try:
        yield reader
    finally:
        reader.server.stop()


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"README.md:{e.parsed.line}" for e in EXAMPLES])
def test_readme_block(example: Example, session: Session) -> None:
    block: rc.Block = example.parsed
    if block.kind == "skip":
        pytest.skip(f"README.md:{block.line}: {block.skip_reason}")
    failure = evaluate(block, session)
    if failure:
        tail = "".join(session.server.log[-20:])
        pytest.fail(
            f"{failure}\n\nFix the code, or, if the real output is right, put the + lines into README.md's block "
            f"(docs/architecture.md, 'How the README is checked').\n(the server's last log lines:)\n{tail}",
            pytrace=False,
        )


def test_every_skip_says_why() -> None:
    """A block left unchecked is marked in the README source with its reason; none is skipped by a pattern."""
    blocks = [e.parsed for e in EXAMPLES]
    skipped = [b for b in blocks if b.kind == "skip"]
    print(f"{len(blocks)} blocks, {len(skipped)} skipped:")
    print("\n".join(f"README.md:{b.line}: {b.skip_reason}" for b in skipped))
    assert all(b.skip_reason for b in skipped), [b.line for b in skipped if not b.skip_reason]
    unknown = [b for b in blocks if b.kind == "unknown"]
    assert not unknown, f"blocks with no rule and no directive:\n{rc.describe(unknown)}"
    assert all(d.verb in rc.VERBS for b in blocks for d in b.directives)


# ---- the checker itself ----------------------------------------------------------------------------------------------


def test_numbers_agree_to_their_printed_digits() -> None:
    assert rc.diff("queen      0.4973", "queen      0.4975", "x") is None  # 2 units of the last printed digit
    assert rc.diff("queen      0.4973", "queen      0.4977", "x") is not None  # 4 units: drift
    assert rc.diff("score 0.49733099341392517", "score 0.4973310232162476", "x") is None  # float32 noise
    assert rc.diff("score 0.49733099341392517", "score 0.4974", "x") is not None
    assert rc.diff("count 503", "count 504", "x") is not None  # integers are exact
    assert rc.diff("sha256:8537745b9ce5559b", "sha256:87330988546066f2", "x") is not None  # versions are not masked


def test_ellipsis_and_masks() -> None:
    shown = 'usage: embedsvc arith [-h] ...\n...\nerror: --topm\n{"vectors": [[0.0565, ...]], ...}'
    real = 'usage: embedsvc arith [-h] [--json]\n  more\n  usage\nerror: --topm\n{"vectors": [[0.0566, 0.1]], "x": 1}'
    assert rc.diff(shown, real, "x") is None
    bar = "\r  0%|  | 0/3 [00:00<?, ?item/s]\r100%|##| 3/3 [00:02<00:00, 1.5item/s]"  # as a terminal shows it
    assert rc.diff("100%|##| 3/3 [00:00<00:00, 5485.61item/s]", bar, "x") is None
    assert rc.diff("operations/017-a048f1f2  rebuild docs  done", "operations/99-ffee  rebuild docs  done", "x") is None
    assert rc.diff('{"time":"2026-12-07T02:26:23.352+00:00","request_id":"' + "a" * 32 + '"}',
                   '{"time":"2027-01-01T00:00:00.000+00:00","request_id":"' + "b" * 32 + '"}', "x") is None  # fmt: skip


def test_json_objects_compare_in_any_key_order() -> None:
    shown = '{"parameters": {"top_n": "3", "keep_inputs": "false"}, "score": 0.2014}400'
    assert rc.diff(shown, '{"score": 0.2015, "parameters": {"keep_inputs": "false", "top_n": "3"}}400', "x") is None
    assert rc.diff(shown, '{"score": 0.2015, "parameters": {"keep_inputs": "true", "top_n": "3"}}400', "x") is not None


def test_a_drifted_block_names_its_line_and_shows_a_diff(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "Intro.\n\n```console\n$ printf 'a\\nb\\n'\na\nc\n```\n\n"
        "<!-- readme-check: skip (why) -->\n```\nnot run\n```\n\n```\nno rule\n```\n"
    )
    blocks = [e.parsed for e in rc.parse(readme)]
    assert [b.kind for b in blocks] == ["console", "skip", "unknown"]
    assert blocks[1].skip_reason == "why"
    (command,) = rc.commands(blocks[0])
    assert (command.line, command.text, command.shown) == (4, "printf 'a\\nb\\n'", "a\nc")
    found = rc.diff(command.shown, "a\nb\n", f"README.md:{command.line}")
    assert found is not None
    assert "--- README.md:4 (README)" in found
    assert "-c" in found.splitlines() and "+b" in found.splitlines()


def test_print_comments_are_a_blocks_output() -> None:
    source = "x = 1\nprint(x)\n# 1\n\n# an explanation, not output\nprint(2)  # inline\n"
    assert rc.print_comments(source) == "1"
    assert rc.print_comments("x = 1\n") is None
