"""Mutation probe of ``src/gpupool/core/``: would the unit tests notice if a rule were written wrong?

Each mutant changes one operator or constant of one module (``<`` into ``<=``, ``+`` into ``-``,
``and`` into ``or``, ``min`` into ``max``, a ``not`` dropped, ``n`` into ``n + 1``, ``True`` into
``False``…) and runs the module's unit tests against it; a mutant they fail on is killed. The score is
killed / (killed + survived); the survivors are printed so a person can tell a missing test from an
equivalent mutant (one that changes nothing a caller can see).

Kept out of ``make test``: it runs the tests once per mutant. Each mutant runs in a forked child that
imports the mutated copy of ``src`` afresh, so the interpreter and third-party imports are paid once.

    PYTHONPATH=src python bench/mutate_core.py settlement ledger scheduling
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = {
    "settlement": ["tests/unit/test_settlement.py"],
    "ledger": ["tests/unit/test_ledger_rules.py"],
    "scheduling": ["tests/unit/test_scheduling.py"],
    "exact": ["tests/unit/test_exact.py"],
    "rewards": ["tests/unit/test_rewards.py"],
    "merkle": ["tests/unit/test_receipts.py"],
}

_COMPARE = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_BINARY = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.FloorDiv,
    ast.FloorDiv: ast.Mult,
    ast.Div: ast.Mult,
    ast.Mod: ast.FloorDiv,
}
_CALLS = {"min": "max", "max": "min"}


@dataclass(frozen=True)
class Mutant:
    line: int
    what: str
    source: str


EQUIVALENT_KEYWORDS = ("slots", "maxsize", "typed")
"""Arguments whose change no caller can see (a class's memory layout, a cache's size): not mutated."""


def _docstring_ids(tree: ast.AST) -> set[int]:
    """Docstrings, and the values of ``EQUIVALENT_KEYWORDS``: left alone."""
    ids = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.keyword) and node.arg in EQUIVALENT_KEYWORDS
    }
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            ids.add(id(first.value))
    return ids


def _points(tree: ast.AST) -> Iterator[tuple[ast.AST, str]]:
    """Every node a mutation applies to, with a word for it; in source order."""
    skip = _docstring_ids(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and type(node.ops[0]) in _COMPARE:
            yield node, "compare"
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            yield node, "binop"
        elif isinstance(node, ast.BoolOp):
            yield node, "boolop"
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield node, "not"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS:
            yield node, "call"
        elif isinstance(node, ast.Constant) and id(node) not in skip and isinstance(node.value, int | float):
            yield node, "constant"  # bool is an int: True and False are flipped


def _mutate(node: ast.AST, kind: str) -> str:
    """Change ``node`` in place; a description of the change."""
    if kind == "compare":
        assert isinstance(node, ast.Compare)
        old = node.ops[0]
        node.ops[0] = _COMPARE[type(old)]()
        return f"{type(old).__name__} -> {type(node.ops[0]).__name__}"
    if kind == "binop":
        assert isinstance(node, ast.BinOp)
        old_op = node.op
        node.op = _BINARY[type(old_op)]()
        return f"{type(old_op).__name__} -> {type(node.op).__name__}"
    if kind == "boolop":
        assert isinstance(node, ast.BoolOp)
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        return f"-> {type(node.op).__name__}"
    if kind == "not":
        assert isinstance(node, ast.UnaryOp)
        node.op = ast.UAdd()  # ``+x`` of a bool is its int: the ``not`` is gone
        return "not dropped"
    if kind == "call":
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        old_name = node.func.id
        node.func.id = _CALLS[old_name]
        return f"{old_name} -> {node.func.id}"
    assert isinstance(node, ast.Constant)
    old_value = node.value
    node.value = (not old_value) if isinstance(old_value, bool) else old_value + 1
    return f"{old_value!r} -> {node.value!r}"


def mutants(path: Path) -> list[Mutant]:
    tree = ast.parse(path.read_text())
    found = []
    for index, (_node, kind) in enumerate(list(_points(tree))):
        clone = copy.deepcopy(tree)
        target, _ = list(_points(clone))[index]
        what = _mutate(target, kind)
        line = getattr(target, "lineno", 0)
        found.append(Mutant(line, f"{kind}: {what}", ast.unparse(clone)))
    return found


def _run(copy_root: Path, tests: list[str], timeout_s: float) -> bool:
    """True when the tests fail on the mutant (killed); run in a forked child."""
    pid = os.fork()
    if pid == 0:  # the child: a fresh import of the mutated copy, then the tests
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        for name in [m for m in sys.modules if m == "gpupool" or m.startswith(("gpupool.", "tests"))]:
            del sys.modules[name]
        sys.path.insert(0, str(copy_root / "src"))
        import pytest

        code = pytest.main([*tests, "-x", "-q", "-p", "no:cacheprovider", "-W", "ignore"])
        os._exit(int(code))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) != 0
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return True  # a mutant that hangs the tests is caught by them


def probe(module: str, copy_root: Path, timeout_s: float) -> tuple[int, list[Mutant]]:
    target = copy_root / "src" / "gpupool" / "core" / f"{module}.py"
    original = target.read_text()
    found = mutants(target)
    survivors = []
    try:
        for mutant in found:
            target.write_text(mutant.source)
            if not _run(copy_root, [str(ROOT / t) for t in TESTS[module]], timeout_s):
                survivors.append(mutant)
                print(f"SURVIVED core/{module}.py:{mutant.line}  {mutant.what}", flush=True)
    finally:
        target.write_text(original)
    return len(found), survivors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=["settlement", "ledger", "scheduling"])
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per mutant")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    # Imported once here, inherited by every forked child: the hub's whole import graph is paid once.
    import pytest  # noqa: F401
    import tests.conftest  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        copy_root = Path(tmp)
        shutil.copytree(ROOT / "src", copy_root / "src")
        rows = []
        for module in args.modules:
            started = time.monotonic()
            total, survivors = probe(module, copy_root, args.timeout)
            killed = total - len(survivors)
            rows.append((module, total, killed, time.monotonic() - started))
            print(f"core/{module}.py: {killed}/{total} killed", flush=True)
        print(f"\n{'module':<12} {'mutants':>8} {'killed':>7} {'score':>7} {'seconds':>8}")
        for module, total, killed, seconds in rows:
            score = killed / total if total else 1.0
            print(f"{module:<12} {total:>8} {killed:>7} {score:>7.1%} {seconds:>8.0f}")


if __name__ == "__main__":
    main()
