"""No private API of a dependency outside tl_research/adapters/ (one small module per dependency, each bounded in
pyproject below its next major): a private name the code reads must be one the package defines itself."""

import ast
import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).parents[1] / "tl_research"
ADAPTERS = ROOT / "adapters"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _own_private_names() -> set[str]:
    """Every private name the package defines: functions, classes, assigned attributes and variables."""
    own = set()
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
    return {n for n in own if _private(n)}


def _dependency_private_uses(path: Path, own: set[str]) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        where = f"{path.relative_to(ROOT.parent)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
            out.append(f"{where} .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and not (node.module or "").startswith("tl_research") and node.level == 0:
            if any(_private(part) for part in (node.module or "").split(".")):
                out.append(f"{where} from {node.module}")
            out += [f"{where} import {a.name}" for a in node.names if _private(a.name)]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) > 1
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and _private(node.args[1].value) and node.args[1].value not in own):
            out.append(f"{where} {node.func.id}({node.args[1].value!r})")
    return out


def test_no_private_attribute_of_a_dependency_outside_the_adapters():
    own = _own_private_names()
    uses = [u for p in sorted(ROOT.rglob("*.py")) if ADAPTERS not in p.parents
            for u in _dependency_private_uses(p, own)]
    assert uses == []


def _internal_imports(path: Path) -> list[str]:
    """Imports of a dependency's internal modules (`wandb.proto.wandb_internal_pb2`)."""
    return [n.module or "" for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)
            and "internal" in (n.module or "") + "".join(a.name for a in n.names)]


def test_the_check_sees_a_private_use_and_every_adapter_has_one():
    own = _own_private_names()
    adapters = [p for p in sorted(ADAPTERS.glob("*.py")) if p.name != "__init__.py"]
    assert adapters, "no adapters"
    for path in adapters:  # an adapter without a private access (or an internal module) would be dead weight
        assert _dependency_private_uses(path, own) or _internal_imports(path), path.name


def test_every_adapted_dependency_is_bounded_below_its_next_major():
    deps = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["project"]
    specs = deps["dependencies"] + [d for extra in deps["optional-dependencies"].values() for d in extra]
    bounded = {re.match(r"[A-Za-z0-9_.-]+", s).group(0).lower(): s for s in specs}
    for path in ADAPTERS.glob("*.py"):
        if path.name == "__init__.py":
            continue
        spec = bounded[path.stem]
        assert re.search(r"<\d+($|,)", spec.replace(" ", "")), spec
        major = re.search(r"<(\d+)", spec).group(1)
        assert f"bounded <{major}" in path.read_text(), path.name  # the adapter's doc says so
