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


ABOVE = {"config", "pipeline"}  # the root modules above the components: every other root module is part of the base


def _part(module: str) -> str:
    """A module's part: its subpackage or root module (`tl_research` for the package's own __init__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _parts() -> tuple[set[str], set[str]]:
    """(the subpackages, the base: adapters, the package's __init__ and every root module but config and pipeline)."""
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    return packages, {"adapters", "tl_research"} | {p.stem for p in ROOT.glob("*.py") if p.stem != "__init__"} - ABOVE


def _declared(doc: str, base: set[str]) -> set[str] | None:
    """The parts a docstring's `May import:` line allows (up to its first period; None: everything)."""
    head = doc.split("May import:", 1)[1].split(".", 1)[0].strip()
    if head == "everything":
        return None
    if head.startswith("nothing of the package"):
        return set()
    items = {x.strip() for x in head.split(",")}
    return (items - {"the base"}) | (base if "the base" in items else set())


def _rules() -> dict[str, set[str] | None]:
    """Part -> the parts it may import: each subpackage's and config's and pipeline's `May import:` line; every other
    root module the base only; the package's __init__ (the public API, loading on first use) everything."""
    packages, base = _parts()
    rules: dict[str, set[str] | None] = {"tl_research": None, **{m: base for m in base - {"adapters", "tl_research"}}}
    sources = {**{p: ROOT / p / "__init__.py" for p in packages}, **{m: ROOT / f"{m}.py" for m in ABOVE}}
    for part, path in sources.items():
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "May import:" in doc, part
        rules[part] = _declared(doc, base)
        unknown = (rules[part] or set()) - packages - base - ABOVE
        assert not unknown, (part, unknown)  # a declaration names real parts
    return rules


def _violations(graph: dict[str, set[str]], rules: dict[str, set[str] | None]) -> list[str]:
    """Every import of a part its rule does not allow."""
    out = []
    for module, targets in sorted(graph.items()):
        allowed = rules[_part(module)]
        for target in sorted(targets):
            if allowed is not None and _part(target) not in allowed | {_part(module)}:
                out.append(f"{module} imports {target}")
    return out


def test_the_root_is_small_and_every_part_keeps_to_what_it_may_import():
    root_modules = [p for p in ROOT.glob("*.py")]
    assert len(root_modules) <= 13, sorted(p.name for p in root_modules)
    assert _violations(_imports(_modules()), _rules()) == []


def test_the_import_rules_refuse_a_violating_import():
    fed = {"tl_research.data.splits": {"tl_research.backbones.base", "tl_research.errors"},
           "tl_research.training.module": {"tl_research.config", "tl_research.strategies.freeze_plan"},
           "tl_research.schema": {"tl_research.pipeline"}, "tl_research.adapters.wandb": {"tl_research.errors"},
           "tl_research.cli.main": {"tl_research.findings.claims"}}
    assert _violations(fed, _rules()) == [
        "tl_research.adapters.wandb imports tl_research.errors",
        "tl_research.data.splits imports tl_research.backbones.base",
        "tl_research.schema imports tl_research.pipeline",
        "tl_research.training.module imports tl_research.config"]


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
    for path in (ROOT / "pipeline.py", ROOT / "cache" / "feature_plan.py", ROOT / "training" / "module.py"):
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


def _strings(tree: ast.AST) -> list[str]:
    """The string constants of a module, its docstrings left out (prose may name a file)."""
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs]


def test_only_the_run_folder_module_names_a_run_folders_files():
    from tl_research import run_folder

    names = {run_folder.CONFIG, run_folder.SPLIT, run_folder.RECORD, run_folder.METRICS, run_folder.CONFUSION,
             run_folder.SHIFTED_PREDICTIONS, f"{run_folder.BEST}.ckpt", f"{run_folder.LAST}.ckpt"}
    assert names == {"config.yaml", "split.json", "run.json", "metrics.json", "confusion.csv",
                     "predictions_shifted.npz", "best.ckpt", "last.ckpt"}  # what every committed run folder holds
    found = {}
    for path in ROOT.rglob("*.py"):
        if path.name != "run_folder.py":
            hits = {s for s in _strings(ast.parse(path.read_text())) for name in names if name in s}
            if hits:
                found[path.name] = hits
    assert found == {}


def test_no_study_kind_is_branched_on_outside_its_own_module():
    """A study kind's behaviour lives in its module (studies/grid.py, search.py, tuned.py): nothing else compares
    a `kind` with a kind's name."""
    from tl_research.studies.kinds import MODULES

    names = set(MODULES)
    own = {ROOT / "studies" / f"{m.rsplit('.', 1)[1]}.py" for m in MODULES.values()}
    found = []
    for path in set(ROOT.rglob("*.py")) - own:
        for node in ast.walk(ast.parse(path.read_text())):
            sides = [node.left, *node.comparators] if isinstance(node, ast.Compare) else []
            if any(isinstance(c, ast.Attribute) and c.attr == "kind" or isinstance(c, ast.Name) and c.id == "kind"
                   for c in sides):
                values = [c for c in [node.left, *node.comparators] if isinstance(c, (ast.Constant, ast.Tuple))]
                consts = {e.value for c in values for e in (c.elts if isinstance(c, ast.Tuple) else [c])
                          if isinstance(e, ast.Constant)}
                if consts & names:
                    found.append(f"{path.name}:{node.lineno}")
    assert found == []
    assert sorted(names) == ["grid", "search", "tuned"]
