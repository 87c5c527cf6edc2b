"""The package's layers hold: a module imports only from its own layer or lower ones (parsed with ast,
imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import physdiff

ROOT = Path(physdiff.__file__).resolve().parent

#: layer of each top-level part of the package (lower imports nothing higher)
LAYERS = {
    "_version": 0,
    "config": 0,  # typed dataclass ⇄ YAML machinery, no physics
    "presets": 0,
    "progress": 0,  # progress bars as lines off a terminal
    "outputs": 0,  # the one place that writes files
    "physics": 1,
    "systems": 2,
    "data": 3,
    "diffusion": 4,
    "models": 4,
    "priors": 5,
    "training": 6,
    "evaluation": 7,
    "testing": 7,
    "experiments": 8,
    "api": 9,
    "cli": 10,
    "__init__": 11,  # the package root may expose the public API lazily
}


def _part(module: str) -> str | None:
    """``physdiff.a.b`` → ``a``; ``None`` for other packages."""
    parts = module.split(".")
    if parts[0] != "physdiff":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _own_part(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.name != "__init__.py" else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if node.module == "physdiff"]
    return out


def upward_imports() -> list[str]:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        own = _own_part(path)
        assert own in LAYERS, f"{path}: unknown part {own!r}; add it to LAYERS"
        for line, module in _imports(path):
            part = _part(module)
            if part is None or part == own:
                continue
            assert part in LAYERS, f"{path}:{line}: import of unknown part {module!r}"
            if LAYERS[part] > LAYERS[own]:
                bad.append(
                    f"{path.relative_to(ROOT.parent)}:{line}: {own} (layer {LAYERS[own]}) imports {module} "
                    f"(layer {LAYERS[part]})"
                )
    return bad


def test_no_module_imports_a_higher_layer():
    bad = upward_imports()
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch):
    """The test can fail: a physics module importing experiments is reported."""
    fake = tmp_path / "physdiff"
    (fake / "physics").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "physics" / "bad.py").write_text("def f():\n    from physdiff.experiments import harness\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", fake)
    bad = upward_imports()
    assert len(bad) == 1 and "physics (layer 1) imports physdiff.experiments" in bad[0]
