"""The package's shape, as docs/ARCHITECTURE.md draws it: a small root, subpackages that say what they own, no
import circle between modules or between subpackages (imports inside functions included), and a run path that
knows no strategy by name."""

import ast
import collections
from pathlib import Path

from tl_research.strategies import STRATEGIES

ROOT = Path(__file__).parents[1] / "tl_research"


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in its body."""
    graph = collections.defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tl_research"):
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    graph[name].add(target if target in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name.startswith("tl_research")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_the_root_is_small_and_every_subpackage_says_what_it_owns_and_may_import():
    root_modules = [p for p in ROOT.glob("*.py")]
    assert len(root_modules) <= 12, sorted(p.name for p in root_modules)
    for package in (p for p in ROOT.iterdir() if (p / "__init__.py").is_file()):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
        assert "May import:" in doc, package.name


def test_no_import_circles_between_modules_or_subpackages():
    modules = _modules()
    graph = _imports(modules)
    assert _cycles({m: {t for t in ts if t in modules} for m, ts in graph.items()}) == []

    def package(name: str) -> str:
        parts = name.split(".")
        return parts[1] if len(parts) > 1 else name

    packages = collections.defaultdict(set)
    for m, targets in graph.items():
        packages[package(m)] |= {package(t) for t in targets if t in modules and package(t) != package(m)}
    assert _cycles(packages) == [], dict(packages)


def test_the_run_path_names_no_strategy_and_training_optimises_automatically():
    names = set(STRATEGIES.names())
    for path in (ROOT / "run.py", ROOT / "cache" / "plan.py", ROOT / "training" / "module.py"):
        literals = {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)}
        assert not literals & names, (path.name, literals & names)
    # Lightning optimises automatically unless a module turns it off; none does, and none steps by hand
    for path in ROOT.rglob("*.py"):
        source = path.read_text()
        assert "automatic_optimization" not in source and "manual_backward" not in source, path
    assert "optimizers()" not in (ROOT / "training" / "module.py").read_text()


def test_training_and_the_components_never_import_the_experiment_config():
    modules = _modules()
    graph = _imports(modules)
    for m, targets in graph.items():
        if m.startswith(("tl_research.training", "tl_research.data", "tl_research.backbones",
                         "tl_research.strategies")):
            assert "tl_research.config" not in targets, m


def test_the_adapters_import_nothing_of_the_package():
    """adapters/ sits under everything: any part may use it, so it may import no part (a circle otherwise)."""
    graph = _imports(_modules())
    for module, targets in graph.items():
        if module.startswith("tl_research.adapters"):
            assert not targets, (module, targets)
