"""Every Python block of README.md runs as written.

The README's convention (stated at its top): a ```python block is a whole program, unless its
first line is a comment starting with ``# fragment:``, which makes it a piece of the program
before it. Here:

- every block compiles as it stands: a program as a module (so a top-level ``await`` or
  ``async with`` fails), a fragment with top-level ``await`` allowed;
- a fragment uses only names that it binds itself, builtins, or names bound somewhere in the
  program before it (so a fragment cannot lean on an undefined ``on_user``);
- every program runs in a fresh interpreter, with the repository root as working directory
  (``settings.toml`` is found), and must exit 0 with nothing on stderr;
- a line ``print(...)  # text`` promises that ``text`` is one line of the output: it is
  checked, and every program has at least one.

A program containing ``redis://127.0.0.1:6379`` runs against that Redis, with its
``"readme:"`` channel prefix replaced by a unique one, so that parallel runs cannot see each
other's events. Redis being down fails it.

Every ```toml block is a settings file the bus accepts: its engines are built at ``init()``.
"""

from __future__ import annotations

import ast
import builtins
import io
import os
import re
import subprocess
import sys
import tokenize
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from modular import Application
from modules.eventbus import EventBusModule

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FRAGMENT_MARK = "# fragment:"
PYTHON_LANGUAGES = {"python", "py", "python3"}
REDIS_ADDRESS = "redis://127.0.0.1:6379"
REDIS_PREFIX = '"readme:"'
FENCE = re.compile(r"^```(\S*)\s*$")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    code: str

    @property
    def is_fragment(self) -> bool:
        return self.code.lstrip().startswith(FRAGMENT_MARK)

    @property
    def uses_redis(self) -> bool:
        return REDIS_ADDRESS in self.code


def code_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"README.md:{i + 1}: a code block is never closed"
        language = opening.group(1).lower()
        blocks.append(Block(i + 1, language, "\n".join(lines[i + 1 : end]) + "\n"))
        i = end + 1
    return blocks


ALL_BLOCKS = code_blocks(README.read_text(encoding="utf-8"))
BLOCKS = [block for block in ALL_BLOCKS if block.language in PYTHON_LANGUAGES]
PROGRAMS = [block for block in BLOCKS if not block.is_fragment]
SETTINGS = [block for block in ALL_BLOCKS if block.language == "toml"]


def block_id(block: Block) -> str:
    return f"README.md:{block.line}"


def program_before(block: Block) -> Block | None:
    earlier = [b for b in PROGRAMS if b.line < block.line]
    return earlier[-1] if earlier else None


def bound_names(tree: ast.AST) -> set[str]:
    """Every name the code binds anywhere: assignments, defs, classes, imports, parameters."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


def used_names(tree: ast.AST) -> set[str]:
    return {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
    }


def promised_output(code: str) -> list[str]:
    """The ``text`` of each ``print(...)  # text`` line."""
    promised = []
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type == tokenize.COMMENT:
            before = token.line[: token.start[1]].strip()
            if before.startswith("print("):
                promised.append(token.string.removeprefix("#").strip())
    return promised


def redis_must_answer() -> None:
    client = redis.Redis.from_url(REDIS_ADDRESS, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS_ADDRESS} does not answer ({exc}); start it: make services")
    finally:
        client.close()


def test_the_readme_has_its_programs() -> None:
    # Guards the extraction itself: a broken fence parser must not make every test vanish.
    assert len(PROGRAMS) >= 6, [block_id(b) for b in BLOCKS]
    assert len(SETTINGS) >= 2, [block_id(b) for b in ALL_BLOCKS]
    assert not BLOCKS[0].is_fragment
    assert any(b.uses_redis for b in PROGRAMS)
    assert any(b.is_fragment for b in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=block_id)
def test_every_block_is_a_program_or_a_marked_fragment(block: Block) -> None:
    where = block_id(block)
    if not block.is_fragment:
        try:
            compile(block.code, where, "exec")
        except SyntaxError as exc:
            pytest.fail(
                f"{where} is neither a whole program nor marked '{FRAGMENT_MARK} ...' on its "
                f"first line: {exc}"
            )
        return
    previous = program_before(block)
    assert previous is not None, f"{where}: a fragment needs a program before it"
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = compile(block.code, where, "exec", flags=flags)
    known = bound_names(tree) | bound_names(ast.parse(previous.code)) | set(dir(builtins))
    unknown = sorted(used_names(tree) - known)
    assert not unknown, f"{where} uses names the program at {block_id(previous)} never binds"


@pytest.mark.parametrize("block", PROGRAMS, ids=block_id)
def test_every_program_runs_and_prints_what_it_promises(block: Block, tmp_path: Path) -> None:
    code = block.code
    if block.uses_redis:
        assert REDIS_PREFIX in code, f"{block_id(block)}: a Redis program sets {REDIS_PREFIX}"
        redis_must_answer()
        code = code.replace(REDIS_PREFIX, f'"readme-{uuid.uuid4().hex[:12]}:"')
    script = tmp_path / f"readme_{block.line}.py"
    script.write_text(code, encoding="utf-8")
    environment = {k: v for k, v in os.environ.items() if not k.upper().startswith("MODULAR_")}
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    where = block_id(block)
    assert result.returncode == 0, f"{where} exited {result.returncode}:\n{result.stderr}"
    assert result.stderr == "", f"{where} wrote to stderr:\n{result.stderr}"
    promised = promised_output(block.code)
    assert promised, f"{where}: no 'print(...)  # expected output' line to check"
    lines = result.stdout.splitlines()
    missing = [text for text in promised if text not in lines]
    assert not missing, f"{where} did not print {missing}; it printed:\n{result.stdout}"


@pytest.mark.parametrize("block", SETTINGS, ids=block_id)
async def test_every_settings_block_is_accepted_by_the_bus(block: Block, tmp_path: Path) -> None:
    settings = tomllib.loads(block.code)
    names = [engine["name"] for engine in settings["default"]["eventbus"]["engines"]]
    path = tmp_path / "settings.toml"
    path.write_text(block.code, encoding="utf-8")
    app = Application(settings_files=[path], envvar_prefix=None)
    bus = EventBusModule()
    app.register_module(bus)
    await app.init()  # validates the section and builds every engine, connecting to nothing
    try:
        assert [bus.engine(name).name for name in names] == names
        assert sorted(bus.per_engine_stats()) == sorted(names)
    finally:
        await app.stop()
