"""Imports point down the layers (docs/ARCHITECTURE.md), and no modules import each other in a circle.

Every ``import`` and ``from ... import`` of every module of ``faro_core/`` and ``dashboard/`` counts, at module
level and inside functions alike (a function-level import hides a loop, it does not remove it), read from the
syntax tree. No module imports one of a higher layer; a module of ``faro_core`` that no layer names fails too,
so a new module has to be placed. Within a layer, the modules of ``faro_core`` form no import cycle (the
layer check cannot see one between modules of one package).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Collection
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Low to high. A module belongs to the first layer one of whose prefixes is the module or a package above it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("faro_core.errors", "faro_core.paths", "faro_core.io", "faro_core.intervals")),
    ("data", ("faro_core.data",)),
    ("models", ("faro_core.models",)),
    ("fairness", ("faro_core.fairness",)),
    ("store", ("faro_core.store",)),
    ("train", ("faro_core.train",)),
    ("evaluate", ("faro_core.evaluate",)),
    ("policy", ("faro_core.policy",)),
    ("results", ("faro_core.results",)),
    ("studies", ("faro_core.studies",)),
    ("integrations", ("faro_core.integrations",)),
    ("cli", ("faro_core.cli", "faro_core.__main__")),
    ("dashboard", ("dashboard",)),
]
PACKAGE_ROOT = "faro_core"  # the package's own __init__: the base layer (it re-exports FaroError only)


def layer_of(module: str) -> int | None:
    """Index into :data:`LAYERS` of ``module`` (None: no layer names it)."""
    if module == PACKAGE_ROOT:
        return 0
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) for every import in ``tree``, function-level ones included; ``from X import y`` gives
    ``X.y`` (a submodule or a name in X: either way X's layer or below), relative imports resolved."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            out += [(node.lineno, f"{base}.{a.name}" if a.name != "*" else base) for a in node.names]
    return out


def violations(root: Path) -> list[str]:
    """Every upward import (and every unplaced faro_core module) under ``root``."""
    problems = []
    files = sorted((root / "faro_core").rglob("*.py")) + sorted((root / "dashboard").rglob("*.py"))
    for path in files:
        module = module_name(path, root)
        if path.parts[-2:-1] == ("pages",) or module.startswith("dashboard"):
            module = "dashboard." + path.stem  # pages are scripts: they belong to the dashboard layer
        own = layer_of(module)
        if own is None:
            problems.append(f"{path.relative_to(root)}: module {module} is in no layer (place it in LAYERS)")
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, target in imported_modules(tree, module, path.name == "__init__.py"):
            if not (target == PACKAGE_ROOT or target.startswith(PACKAGE_ROOT + ".")):
                continue  # third-party, standard library, or the dashboard's own helpers
            theirs = layer_of(target)
            if theirs is None:
                theirs = layer_of(target.rpartition(".")[0])  # ``from faro_core import X``: X's own layer
            if theirs is not None and theirs > own:
                problems.append(f"{path.relative_to(root)}:{line}: {module} ({LAYERS[own][0]}) imports {target} "
                                f"({LAYERS[theirs][0]})")
    return problems


def test_imports_point_down_the_layers() -> None:
    problems = violations(REPO)
    assert not problems, "upward imports:\n" + "\n".join(problems)


# Cycles waiting for their modules' owners, each with what would break it. A test fails when one is gone, so the
# list only shrinks; a cycle not on it fails at once.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def module_graph(root: Path) -> dict[str, dict[str, int]]:
    """{module: {imported module: line}} over the modules of ``faro_core`` under ``root``: each import resolved
    to the module it loads (``from X import y`` is ``X.y`` when that is a module, else ``X``'s own module);
    imports of a module by itself and of anything outside ``faro_core`` are left out."""
    paths = {module_name(p, root): p for p in sorted((root / PACKAGE_ROOT).rglob("*.py"))}
    graph: dict[str, dict[str, int]] = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: dict[str, int] = {}
        for line, target in imported_modules(tree, module, path.name == "__init__.py"):
            if target not in paths:
                target = target.rpartition(".")[0]
            if target in paths and target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def import_cycles(graph: dict[str, dict[str, int]]) -> list[frozenset[str]]:
    """The strongly connected components of ``graph`` with more than one module (Tarjan's algorithm): each is a
    set of modules every one of which imports, directly or not, every other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def cycle_problems(root: Path, known: dict[frozenset[str], str] | None = None) -> list[str]:
    """One line per import cycle under ``root`` that ``known`` does not list, naming each import in it."""
    graph = module_graph(root)
    problems = []
    for comp in import_cycles(graph):
        if comp in (known or {}):
            continue
        edges = [f"{a} -> {b} (line {graph[a][b]})" for a in sorted(comp) for b in sorted(graph[a]) if b in comp]
        problems.append("import cycle: " + "; ".join(edges))
    return problems


def test_no_import_cycles() -> None:
    problems = cycle_problems(REPO, KNOWN_CYCLES)
    assert not problems, "\n".join(problems)


def test_known_cycles_are_still_there() -> None:
    """An entry of :data:`KNOWN_CYCLES` that was broken comes off the list."""
    gone = set(KNOWN_CYCLES) - set(import_cycles(module_graph(REPO)))
    assert not gone, f"no longer cycles, remove them from KNOWN_CYCLES: {[sorted(c) for c in gone]}"


def _plant(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


@pytest.mark.parametrize("importer, text", [
    ("faro_core/fairness/pairs.py", "from faro_core.train.config import FaroConfig\n"),  # module level
    ("faro_core/data/loaders.py", "def f():\n    import faro_core.results.table\n"),  # inside a function
    ("faro_core/store/runs.py", "from faro_core import studies\n"),  # a package, by name
    ("faro_core/evaluate/metrics.py", "from ..studies import sweep\n"),  # relative
])
def test_a_planted_upward_import_is_caught(tmp_path: Path, importer: str, text: str) -> None:
    files = {"faro_core/__init__.py": "", "faro_core/errors.py": "", importer: text,
             "faro_core/train/config.py": "", "faro_core/results/table.py": "", "faro_core/studies/sweep.py": ""}
    problems = violations(_plant(tmp_path, files))
    assert len(problems) == 1 and importer in problems[0], problems


def test_downward_imports_and_unplaced_modules(tmp_path: Path) -> None:
    files = {"faro_core/__init__.py": "from faro_core.errors import FaroError\n", "faro_core/errors.py": "",
             "faro_core/studies/sweep.py": "from faro_core.train import loop\nimport numpy\n",
             "faro_core/train/loop.py": "from faro_core.fairness.pairs import PairBatch\n",
             "dashboard/pages/1_Data.py": "from faro_core.studies import sweep\nfrom common import page\n"}
    assert violations(_plant(tmp_path, files)) == []
    (tmp_path / "faro_core" / "misc.py").write_text("")
    (problem,) = violations(tmp_path)
    assert "faro_core.misc is in no layer" in problem


def test_architecture_page_names_every_module() -> None:
    """docs/ARCHITECTURE.md lists every module (``pkg/name.py``) of every layer but the CLI's subcommands, and
    every layer of :data:`LAYERS`, so the page cannot fall behind the code."""
    page = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = [str(p.relative_to(REPO / "faro_core")) for p in sorted((REPO / "faro_core").rglob("*.py"))
               if p.name != "__init__.py" and p.parent.name != "cli" and p.name != "__main__.py"
               and f"`{p.relative_to(REPO / 'faro_core')}`" not in page]
    assert not missing, f"docs/ARCHITECTURE.md does not list: {missing}"
    assert all(f"| {name} |" in page for name, _ in LAYERS), "a layer of LAYERS is missing from the page's table"


@pytest.mark.parametrize("files, cycle", [
    ({"faro_core/train/a.py": "from faro_core.train.b import x\n", "faro_core/train/b.py": "from . import a\n"},
     {"faro_core.train.a", "faro_core.train.b"}),  # module level, one of them relative
    ({"faro_core/fairness/a.py": "import faro_core.fairness.b\n", "faro_core/fairness/b.py": "from faro_core.fairness import c\n",
      "faro_core/fairness/c.py": "def f():\n    from faro_core.fairness.a import g\n"},
     {"faro_core.fairness.a", "faro_core.fairness.b", "faro_core.fairness.c"}),  # closed by a lazy import
    ({"faro_core/data/__init__.py": "from faro_core.data.x import load\n", "faro_core/data/x.py":
      "def f():\n    from faro_core.data import thing\n"}, {"faro_core.data", "faro_core.data.x"}),  # via __init__
])
def test_a_planted_cycle_inside_a_package_is_caught(tmp_path: Path, files: dict[str, str], cycle: set[str]) -> None:
    _plant(tmp_path, {"faro_core/__init__.py": "", **files})
    (problem,) = cycle_problems(tmp_path)
    assert all(m + " ->" in problem for m in cycle), problem
    assert import_cycles(module_graph(tmp_path)) == [frozenset(cycle)]


def test_one_way_imports_are_no_cycle(tmp_path: Path) -> None:
    _plant(tmp_path, {"faro_core/__init__.py": "", "faro_core/train/a.py": "from faro_core.train.b import x\n",
                      "faro_core/train/b.py": "def f():\n    from faro_core.train import c\nimport faro_core.train.b\n",
                      "faro_core/train/c.py": "import numpy\nfrom faro_core.errors import FaroError\n",
                      "faro_core/errors.py": ""})
    assert cycle_problems(tmp_path) == []


# --- method names are the registry's: no module compares one to a string literal ---------------------------
# Which method a run is, its label and its colour come from faro_core.train.method_spec (identity,
# is_reference, display_label, ...); a comparison such as ``cfg["method"] == "bt"`` elsewhere is a second
# definition of a method. Only the registry modules may spell the names.
METHOD_REGISTRY_MODULES = ("faro_core/train/method_spec.py", "faro_core/train/methods.py")


def method_names() -> set[str]:
    """The names a comparison may not spell: the registry's keys and its ``FaroConfig.method`` values."""
    from faro_core.train.method_spec import SPECS

    return set(SPECS) | {m.method for m in SPECS.values()}


def _literals(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def literal_comparisons(tree: ast.AST, names: set[str] | frozenset[str],
                        about: Callable[[ast.AST], bool] | None = None) -> list[tuple[int, str]]:
    """(line, name) for each comparison in ``tree`` of anything to a string literal in ``names``, in either
    order: ``x == "n"``, ``"n" != x`` (``.get(...) == "n"`` included), ``x in ("n", ...)`` / ``not in`` a
    tuple, list or set literal, and ``"n" in x``. Each link of a chained comparison counts. With ``about``,
    only comparisons whose other operand it accepts (an expression about the attribute, say)."""
    out = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        left = node.left
        for op, right in zip(node.ops, node.comparators):
            pairs: list[tuple[list[str], ast.AST]] = []  # (literals on one side, the other operand)
            if isinstance(op, (ast.Eq, ast.NotEq)):
                pairs = [(_literals(x), y) for x, y in ((left, right), (right, left)) if isinstance(x, ast.Constant)]
            elif isinstance(op, (ast.In, ast.NotIn)):
                if isinstance(left, ast.Constant):
                    pairs.append((_literals(left), right))
                if isinstance(right, (ast.Tuple, ast.List, ast.Set)):
                    pairs.append((_literals(right), left))
            out |= {(node.lineno, v) for found, other in pairs if about is None or about(other)
                    for v in found if v in names}
            left = right
    return sorted(out)


def literal_problems(root: Path, names: set[str] | frozenset[str], skip: Collection[str], what: str,
                     about: Callable[[ast.AST], bool] | None = None) -> list[str]:
    """One line per line with :func:`literal_comparisons` hits in ``faro_core/``, ``dashboard/`` and ``bench/`` under
    ``root``, the modules ``skip`` (repository-relative) left out; ``what`` says whose name and where to ask."""
    problems = []
    for top in ("faro_core", "dashboard", "bench"):
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel in skip:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            by_line: dict[int, list[str]] = {}
            for line, name in literal_comparisons(tree, names, about):
                by_line.setdefault(line, []).append(repr(name))
            problems += [f"{rel}:{line}: compares {what.format(name=', '.join(found))}"
                         for line, found in by_line.items()]
    return problems


def method_literal_problems(root: Path, names: set[str]) -> list[str]:
    """One line per comparison of a method name to a literal, the registry modules left out."""
    return literal_problems(root, names, METHOD_REGISTRY_MODULES,
                            "method name {name} to a literal (ask faro_core.train.method_spec)")


def test_no_method_name_is_compared_to_a_literal() -> None:
    problems = method_literal_problems(REPO, method_names())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("text", [
    'if cfg["method"] == "bt":\n    pass\n',
    'ok = "faro" != method\n',
    'ok = cfg.get("method") == "posthoc"\n',
    'ok = m in ("reweight", "other")\n',
    'ok = m not in ["fixed_lambda"]\n',
    'ok = "expgrad" in kinds\n',
    'ok = 0 < x == "bt"\n',
])
def test_a_planted_method_literal_is_caught(tmp_path: Path, text: str) -> None:
    _plant(tmp_path, {"bench/planted.py": text, "faro_core/train/method_spec.py": 'x = m == "bt"\n'})
    (problem,) = method_literal_problems(tmp_path, method_names())
    assert problem.startswith("bench/planted.py:"), problem


def test_method_names_elsewhere_are_no_comparison() -> None:
    tree = ast.parse('d = {"bt": 1}\nm = "faro"\nf(method="bt")\nok = kind == "dp"\nok = m == REFERENCE\n'
                     'ok = x in kinds\n')
    assert literal_comparisons(tree, method_names()) == []


# ---------------------------------------------------------------------------------------------------------------
# Attribute names are not compared outside the attribute strategies: a caller asks the strategy
# (faro_core.fairness.attributes) what it needs instead of testing ``attribute == "role"``. Self-contained.
# ---------------------------------------------------------------------------------------------------------------
ATTRIBUTE_STRATEGY_MODULES = frozenset({  # where an attribute's own name may be spelled and compared
    "faro_core/fairness/attributes.py", "faro_core/fairness/role.py", "faro_core/fairness/role_columns.py",
    "faro_core/fairness/role_stats.py", "faro_core/fairness/role_constraint.py"})


def attribute_literal_names() -> frozenset[str]:
    """The names a comparison may not test: the built-in attributes and every registered strategy's."""
    from faro_core.fairness.attributes import attribute_names

    return frozenset({"group", "role", *attribute_names()})


def _about_attribute(node: ast.AST) -> bool:
    """An expression about the attribute: a name, attribute, subscript or call whose text says ``attribute``
    (``index.attribute``, ``cfg.get("attribute")``, ``table["attribute"]``, ``args.attribute``)."""
    return isinstance(node, (ast.Name, ast.Attribute, ast.Subscript, ast.Call)) and "attribute" in ast.unparse(node)


def attribute_branches(root: Path, names: frozenset[str]) -> list[str]:
    """``path:line: ...`` of every comparison of an expression about the attribute with one of ``names``, outside
    :data:`ATTRIBUTE_STRATEGY_MODULES`."""
    return literal_problems(root, names, ATTRIBUTE_STRATEGY_MODULES,
                            "attribute name {name} to an expression about the attribute", about=_about_attribute)


def test_no_attribute_name_is_compared_outside_the_strategies() -> None:
    problems = attribute_branches(REPO, attribute_literal_names())
    assert not problems, ("ask the attribute's strategy (faro_core.fairness.attributes) instead of comparing "
                          "its name:\n" + "\n".join(problems))


@pytest.mark.parametrize("text", [
    'if index.attribute == "role":\n    pass\n',
    'role = "role" == args.attribute\n',  # the name first
    'x = cfg.get("attribute") == "role"\n',
    'x = cfg.get("attribute") != "group"\n',
    'if self.attribute not in ("group", "role"):\n    pass\n',
    'x = config.attribute in ["role"]\n',
    'x = (table["attribute"] == "role").any()\n',
    'x = "role" in run_attributes\n',
    'x = 0 < 1 and attribute == "group"\n',
])
def test_a_planted_attribute_comparison_is_caught(tmp_path: Path, text: str) -> None:
    _plant(tmp_path, {"faro_core/evaluate/planted.py": text, "bench/fine.py": 'x = {"role": "user"}\n'})
    (problem,) = attribute_branches(tmp_path, attribute_literal_names())
    assert problem.startswith("faro_core/evaluate/planted.py:"), problem


def test_what_is_no_attribute_branch(tmp_path: Path) -> None:
    """Chat roles, dict keys, other names' literals, comparisons with the registry and the strategy modules
    themselves pass; a user's registered name counts like the built-in ones."""
    fine = ('msgs = [{"role": "user"}]\nok = m.get("role") == "assistant"\nby = "group"\nok = by == "group"\n'
            'ok = kind == "dp"\nok = index.attribute in attribute_names()\nok = story["role"] == "biased"\n'
            'ok = "attribute" in table\n')
    _plant(tmp_path, {"dashboard/pages/fine.py": fine, "bench/fine.py": 'ok = args.attribute == "mine"\n',
                      "faro_core/fairness/attributes.py": 'ok = self.attribute == "role"\n'})
    assert attribute_branches(tmp_path, attribute_literal_names()) == []
    (problem,) = attribute_branches(tmp_path, attribute_literal_names() | {"mine"})
    assert problem.startswith("bench/fine.py:1:"), problem
