"""The house rules of the source tree, checked from the source itself (ast, no imports).

Floors, bottom to top (a module may import its own floor and the floors below it):

0. ``advlab`` (the version), ``_io``, ``_check``, ``_progress``, ``stats``: files, JSON,
   validation rules, progress, statistics
1. ``threat``: norms, projections, random starts
2. ``attacks``, ``models``, ``data``: siblings that do not import one another
3. ``evaluate``: robust accuracy, the audit, torchrun sharding
4. ``train``: training, adversarial training, checkpoints
5. ``report``: rendering only (imports nothing but floor 0)
6. ``experiments``: the reproduced documents
7. ``cli``: the command line; nothing imports it
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "advlab"
MAX_LINES = 700

FLOORS: dict[str, int] = {
    "advlab": 0, "_io": 0, "_check": 0, "_progress": 0, "stats": 0, "__main__": 8,
    "threat": 1,
    "attacks": 2, "models": 2, "data": 2,
    "evaluate": 3,
    "train": 4,
    "report": 5,
    "experiments": 6,
    "cli": 7,
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(SRC.rglob("*.py")):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str, int]]:
    """``(imported module, imported name or '', line)`` for every advlab import of a module,
    function-local ones included."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "advlab" or target.startswith("advlab."):
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    if full in MODULES:  # ``from advlab.x import submodule``
                        found.append((full, "", node.lineno))
                    else:
                        found.append((target, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "advlab" or alias.name.startswith("advlab."):
                    found.append((alias.name, "", node.lineno))
    return found


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "advlab"


def _graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = collections.defaultdict(set)
    for name, path in MODULES.items():
        for target, _, _ in _imports(name, path):
            if target != name:
                g[name].add(target)
    return g


def test_every_top_level_module_has_a_floor():
    tops = {_top(m) for m in MODULES}
    assert tops <= set(FLOORS), f"modules without a floor: {sorted(tops - set(FLOORS))}"


def test_no_import_cycles():
    g = _graph()
    # package imports are edges to the package's __init__, which imports its modules
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(g.get(m, ())):
            if t not in MODULES:
                continue
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m)


def test_every_import_goes_down_or_sideways_within_its_package():
    bad = []
    for name, path in MODULES.items():
        own = _top(name)
        for target, _, line in _imports(name, path):
            other = _top(target)
            if other == own or target == "advlab":
                continue
            if FLOORS[other] >= FLOORS[own] and not (other == "advlab"):
                bad.append(f"{path.relative_to(SRC.parent)}:{line} ({own}, floor "
                           f"{FLOORS[own]}) imports {target} (floor {FLOORS[other]})")
    assert not bad, "imports that go up or sideways:\n" + "\n".join(bad)


@pytest.mark.parametrize("low", ["threat", "attacks", "models", "data"])
def test_the_core_imports_nothing_from_the_floors_above(low):
    high = {"train", "evaluate", "experiments", "report", "cli"}
    bad = [(n, t) for n, p in MODULES.items() if _top(n) == low
           for t, _, _ in _imports(n, p) if _top(t) in high]
    assert not bad


def test_nothing_but_the_cli_imports_the_cli():
    bad = [(n, t) for n, p in MODULES.items() if _top(n) not in ("cli", "__main__")
           for t, _, _ in _imports(n, p) if _top(t) == "cli"]
    assert not bad


def test_report_imports_only_the_bottom_floor():
    bad = [(n, t) for n, p in MODULES.items() if _top(n) == "report"
           for t, _, _ in _imports(n, p) if FLOORS[_top(t)] > 0 and _top(t) != "report"]
    assert not bad


def _owner(module: str) -> str:
    """The package that owns a module's private names: its parent package."""
    return module.rsplit(".", 1)[0]


def test_no_private_name_is_imported_across_packages():
    """``_x`` may be imported only by modules inside the package that owns it: a private
    module ``p._m`` by ``p.*``; a private name ``_f`` of module ``p.m`` by ``p.*``."""
    bad = []
    for name, path in MODULES.items():
        for target, alias, line in _imports(name, path):
            parts = target.split(".")
            # a private module anywhere on the path is owned by the package above it
            for i, part in enumerate(parts):
                if part.startswith("_") and not part.startswith("__"):
                    owner = ".".join(parts[:i])
                    if not (name == owner or name.startswith(owner + ".")):
                        bad.append(f"{name}:{line} imports private module {target}")
                    break
            if alias.startswith("_") and not alias.startswith("__"):
                owner = _owner(target) if target.count(".") else target
                if not (name == owner or name.startswith(owner + ".")):
                    bad.append(f"{name}:{line} imports private name {target}.{alias}")
    assert not bad, "\n".join(bad)


def test_no_module_is_over_the_line_limit():
    sizes = {str(p.relative_to(SRC.parent)): len(p.read_text().splitlines())
             for p in MODULES.values()}
    big = {k: v for k, v in sizes.items() if v > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The checks above can fail: a fake tree with a cycle and an upward import."""
    pkg = tmp_path / "advlab"
    (pkg / "attacks").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "attacks" / "__init__.py").write_text("from advlab.attacks.a import x\n")
    (pkg / "attacks" / "a.py").write_text("from advlab.attacks.b import y\nx = 1\n")
    (pkg / "attacks" / "b.py").write_text("from advlab.attacks.a import x\n"
                                         "from advlab.cli.app import main\ny = 2\n")
    (pkg / "cli").mkdir()
    (pkg / "cli" / "__init__.py").write_text("")
    (pkg / "cli" / "app.py").write_text("def main():\n    pass\n")
    monkeypatch.setattr(__import__(__name__), "SRC", pkg)
    monkeypatch.setattr(__import__(__name__), "MODULES", _modules())
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_no_import_cycles()
    with pytest.raises(AssertionError, match="imports advlab.cli.app"):
        test_every_import_goes_down_or_sideways_within_its_package()
