"""The stage layout holds: no module imports a higher stage, no model file imports another model file.

Imports are read with ``ast`` from every module (including imports inside functions), so a lazy
import cannot hide a wrong direction.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# lowest first: a module may import its own stage and the ones before it
STAGES = (
    "data_reorg",
    "e2e.base",
    "e2e.data",
    "e2e.models",
    "e2e.training",
    "e2e.analysis",
    "e2e.reporting",
    "e2e.experiments",
    "e2e.cli",
)
BASE_MODULES = ("e2e", "e2e.compat", "e2e.config")  # what every stage may use


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage(module: str) -> int | None:
    if module in BASE_MODULES:
        return STAGES.index("e2e.base")
    for index, prefix in enumerate(STAGES):
        if module == prefix or module.startswith(prefix + "."):
            return index
    return None


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every project import in ``source``; ``from e2e.training import trainer``
    counts as ``e2e.training.trainer`` (the module it names), ``from e2e.config import X`` as ``e2e.config``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.append((node.lineno, submodule if _is_module(submodule) else node.module))
    return [(line, name) for line, name in found if stage(name) is not None]


def _is_module(dotted: str) -> bool:
    path = REPO.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def project_modules() -> list[Path]:
    return sorted([*REPO.glob("e2e/**/*.py"), *REPO.glob("data_reorg/**/*.py")])


def test_no_module_imports_a_higher_stage():
    wrong = []
    for path in project_modules():
        own = stage(module_name(path))
        for line, name in imported_modules(path.read_text(encoding="utf-8")):
            if stage(name) > own:
                wrong.append(f"{path.relative_to(REPO)}:{line} ({STAGES[own]}) imports {name} ({STAGES[stage(name)]})")
    assert not wrong, "\n".join(wrong)


def test_no_model_file_imports_another_model_file():
    models = {path.stem for path in (REPO / "e2e" / "models").glob("*.py")} - {"__init__", "fidelity", "registry"}
    wrong = []
    for path in [*(REPO / "e2e" / "models").glob("*.py"), *(REPO / "e2e" / "models" / "layers").glob("*.py")]:
        for line, name in imported_modules(path.read_text(encoding="utf-8")):
            parts = name.split(".")
            if parts[:2] == ["e2e", "models"] and len(parts) == 3 and parts[2] in models and parts[2] != path.stem:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_checks_see_a_wrong_import():
    """The walk finds imports inside functions and ``from package import module`` forms (it can fail)."""
    source = (
        "def f():\n    from e2e.training import trainer\n    import e2e.cli.main\n    from e2e.models import fe2e\n"
    )
    names = [name for _, name in imported_modules(source)]
    assert names == ["e2e.training.trainer", "e2e.cli.main", "e2e.models.fe2e"]
    assert all(stage(name) > stage("e2e.data.dataset") for name in names[:2])
