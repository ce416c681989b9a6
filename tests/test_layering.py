"""The import rules docs/architecture.md states, checked on the source (imports inside
functions and under TYPE_CHECKING count too): a change that breaks one fails here rather than
in a review."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import catbot

PACKAGE = Path(catbot.__file__).parent


def _module(path: Path) -> str:
    parts = ["catbot", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> Iterator[tuple[str, str]]:
    """(importing module, imported module) for every import in catbot/."""
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = _module(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield importer, node.module
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield importer, alias.name


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_emulator_imports_nothing_of_the_daemon_but_signing() -> None:
    reaching = sorted(
        (importer, imported) for importer, imported in _imports()
        if _within(importer, "catbot.emulator") and _within(imported, "catbot")
        and not _within(imported, "catbot.emulator") and imported != "catbot.signing"
    )
    assert reaching == []


def test_only_the_command_line_imports_the_commands() -> None:
    reaching = sorted(
        (importer, imported) for importer, imported in _imports()
        if _within(imported, "catbot.commands")
        and not _within(importer, "catbot.commands") and importer != "catbot.__main__"
    )
    assert reaching == []


def test_only_the_commands_import_the_daemon() -> None:
    reaching = sorted(
        (importer, imported) for importer, imported in _imports()
        if imported == "catbot.app" and not _within(importer, "catbot.commands")
    )
    assert reaching == []


def test_the_brain_does_no_io() -> None:
    allowed = {"catbot.models", "catbot.textfit", "catbot.config"}
    brain = {imported for importer, imported in _imports() if importer == "catbot.brain"}
    assert {m for m in brain if _within(m, "catbot")} <= allowed
    io = {"asyncio", "aiohttp", "aiosqlite", "redis", "socket", "sqlite3", "tweepy", "os"}
    assert {m.split(".")[0] for m in brain} & io == set()


def test_the_store_knows_nothing_above_it() -> None:
    above = ("catbot.app", "catbot.webhook", "catbot.outbox", "catbot.brain",
             "catbot.commands", "catbot.x", "catbot.xchat")
    reaching = sorted(
        (importer, imported) for importer, imported in _imports()
        if _within(importer, "catbot.store") and any(_within(imported, a) for a in above)
    )
    assert reaching == []
