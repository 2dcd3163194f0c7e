"""Every path, module and function the README and docs/ name exists: a newcomer follows
them to the code, and a renamed module must not leave the map pointing at nothing."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Top folders of the repository: a word starting with one of them is a repository path.
TOP = r"(?:\.github|\.ci|bench|echo_tts|tests|results|notebooks|docs)"
PATH = re.compile(rf"(?<![\w./~$-]){TOP}/[\w./*-]*")
#: ``folder/module.py::name``: a function or class in a module.
DEFINED = re.compile(rf"(?<![\w./~-])({TOP}/[\w/]+\.py)::(\w+)")
#: A bare function name after a ``::`` reference in the same table cell (``, `name```).
SIBLING = re.compile(r"`(\w+)`")
#: ``bench.pkg.module.Name``: a dotted module path, optionally ending in attributes.
DOTTED = re.compile(r"(?<![\w./-])((?:bench|echo_tts)(?:\.\w+)+)")
#: A bare file name in backticks: it must exist somewhere in the tree.
BARE = re.compile(r"`([\w-]+\.(?:py|toml|lock|ipynb|sh))`")
#: Markdown links to files in the repository.
LINK = re.compile(r"\]\((?!https?:|#)([^)#\s]+)")
#: Run outputs (git-ignored, made by running a sweep or the dashboard), not files of the
#: repository.
RUN_OUTPUT = ("results/runs", "results/dashboard")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@cache
def _top_level_names(module: Path) -> frozenset[str]:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return frozenset(names)


@cache
def _all_files() -> frozenset[str]:
    skip = {".git", ".venv", ".cache", "node_modules", "__pycache__"}
    return frozenset(p.name for p in ROOT.rglob("*")
                     if p.is_file() and not skip.intersection(p.relative_to(ROOT).parts))


def missing_paths(text: str) -> list[str]:
    out = []
    for raw in PATH.findall(text):
        path = raw.rstrip(".")
        if "<" in path or path.startswith(RUN_OUTPUT):
            continue
        found = list(ROOT.glob(path.rstrip("/"))) if "*" in path else [ROOT / path]
        if not any(p.exists() for p in found):
            out.append(path)
    return out


def missing_definitions(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        for cell in line.split("|"):
            refs = DEFINED.findall(cell)
            for module, name in refs:
                file = ROOT / module
                if not file.is_file():
                    out.append(f"{module} (no such module)")
                    continue
                # `module::a`, `b`: the names after it in the same cell are its too.
                tail = cell[cell.index(f"{module}::{name}") + len(module) + 2:]
                names = [name, *(n for n in SIBLING.findall(tail.split(TOP_SPLIT)[0]))]
                out += [f"{module}::{n}" for n in names if n not in _top_level_names(file)]
    return out


#: Where the names belonging to one ``module::name`` reference end: the next path.
TOP_SPLIT = "bench/"


def missing_modules(text: str) -> list[str]:
    out = []
    for dotted in DOTTED.findall(text):
        parts = dotted.rstrip(".").split(".")
        for cut in range(len(parts), 0, -1):
            base = ROOT.joinpath(*parts[:cut])
            module = base.with_suffix(".py") if not base.is_dir() else base / "__init__.py"
            if module.is_file():
                rest = parts[cut:]
                if rest and rest[0] not in _top_level_names(module):
                    out.append(dotted)
                break
        else:
            out.append(dotted)
    return out


def missing_files(text: str) -> list[str]:
    return [name for name in BARE.findall(text) if name not in _all_files()]


def broken_links(text: str, where: Path) -> list[str]:
    return [link for link in LINK.findall(text) if not (where.parent / link).exists()]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_named_path_exists(doc: Path) -> None:
    text = _text(doc)
    problems = (missing_paths(text) + missing_definitions(text) + missing_modules(text)
                + missing_files(text) + broken_links(text, doc))
    assert not problems, f"{doc.name} names what does not exist: {problems}"


def test_the_checks_catch_a_wrong_path() -> None:
    # The map once named bench/schedule.py after it moved to bench/run/schedule.py.
    text = ("see `bench/schedule.py` and `bench/run/schedule.py`; "
            "| x | `bench/analysis/headline.py::_pair_ratios`, `choose_baselines` |; "
            "`bench.analysis.noise.NO_SUCH` and `bench.analysis.nowhere`; `nope.toml`; "
            "[docs](docs/nothing.md)")
    assert missing_paths(text) == ["bench/schedule.py", "docs/nothing.md"]
    assert missing_definitions(text) == ["bench/analysis/headline.py::_pair_ratios"]
    assert missing_modules(text) == ["bench.analysis.noise.NO_SUCH", "bench.analysis.nowhere"]
    assert missing_files(text) == ["nope.toml"]
    assert broken_links(text, ROOT / "README.md") == ["docs/nothing.md"]


def test_docs_are_linked_from_the_readme() -> None:
    readme = _text(ROOT / "README.md")
    unlinked = [p.name for p in DOCS[1:] if f"(docs/{p.name})" not in readme]
    assert not unlinked, f"docs not linked from the README: {unlinked}"
