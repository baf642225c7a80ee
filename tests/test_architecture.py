"""The package's shape, checked by walking its source: layers that only point down, no
import cycles (function-level imports counted), modes compared in one module only."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "stepdistill"

STAGES = {
    "annotate",
    "train",
    "evaluate",
    "predict",
    "serve",
    "bootstrap",
    "sweep",
    "report",
    "run",
    "export",
}
ORCHESTRATORS = {"run", "sweep"}
"""Stages that chain other stages; every other stage imports helper modules only."""
COMMAND = "cli"
"""The command line: it parses arguments and calls the stages."""
PUBLIC = "stepdistill"
"""The package itself: it re-exports the public API (stages included); nothing imports it."""
LAZY_ALLOWED = {("cli", "serve")}
"""Function-level imports of project modules allowed: the CLI imports the server (and with
it FastAPI) only for ``stepdistill serve``."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, list[tuple[str, bool]]]:
    """module -> [(imported project module, at top level?)], function-level ones included."""
    found: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(node) for node in tree.body}
        edges = found.setdefault(name, [])
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target]
                if node.module is None or target in ("stepdistill", "stepdistill.teachers"):
                    # ``from . import x``: x may be a module of that package
                    targets = [
                        f"{target}.{alias.name}"
                        if (PACKAGE.parent / f"{target}.{alias.name}".replace(".", "/"))
                        .with_suffix(".py")
                        .is_file()
                        else target
                        for alias in node.names
                    ]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                if target.startswith("stepdistill") and target != name:
                    edges.append((target, id(node) in top))
    return found


def short(name: str) -> str:
    return name.removeprefix("stepdistill.")


def test_no_import_cycles_function_level_imports_included():
    graph = {module: {target for target, _ in edges} for module, edges in imports().items()}
    cycles = []
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target in graph and not state.get(target):
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [module])
    assert cycles == []


def test_stages_import_helpers_only_and_helpers_never_import_stages():
    wrong = []
    for module, edges in imports().items():
        source = short(module)
        for target, _ in edges:
            target = short(target)
            if target not in STAGES or source in (COMMAND, PUBLIC):
                continue
            if source in STAGES and source in ORCHESTRATORS:
                continue
            wrong.append(f"{source} -> {target}")
    assert wrong == []


def test_no_hidden_imports_of_project_modules():
    hidden = [
        f"{short(module)} -> {short(target)}"
        for module, edges in imports().items()
        for target, at_top in edges
        if not at_top and (short(module), short(target)) not in LAZY_ALLOWED
    ]
    assert hidden == []


def test_mode_names_are_compared_in_modes_py_only():
    from stepdistill.modes import MODES

    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "modes.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare):
                continue
            for side in [node.left, *node.comparators]:
                values = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
                for value in values:
                    if isinstance(value, ast.Constant) and value.value in MODES:
                        found.append(f"{path.name}:{node.lineno} compares {value.value!r}")
    assert found == []


def test_importing_the_cli_and_the_stages_pulls_in_no_heavy_library():
    code = (
        "import sys, stepdistill.cli, stepdistill.train, stepdistill.evaluate, stepdistill.student\n"
        "from stepdistill import Student, TrainConfig, annotate, train\n"
        "print(sorted(m for m in ('torch', 'transformers', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_dotted_overrides_and_resume_with_other_settings_are_refused(tmp_path, capsys):
    import pytest

    from stepdistill.cli import main
    from stepdistill.config import ConfigError, make_config, parse_overrides

    with pytest.raises(ConfigError, match="the config is flat, write epochs=3"):
        parse_overrides(["train.epochs=3"])
    assert make_config(parse_overrides(["epochs=3", "learning-rate=1e-3"])).learning_rate == 1e-3
    code = main(["train", "--resume", str(tmp_path), "--epochs", "5", "seed=2"])
    error = capsys.readouterr().err
    assert code == 2 and "--resume continues a run with its saved config" in error
    assert "--epochs" in error and "seed=2" in error


def test_run_loads_the_task_once_and_evaluate_never_calls_a_teacher(tmp_path, monkeypatch):
    import pytest
    from test_pinned import students, write_task

    from stepdistill.config import make_config
    from stepdistill.evaluate import evaluate

    # The modules: on the package, ``stepdistill.run`` and ``.train`` are the functions.
    run_module = importlib.import_module("stepdistill.run")
    train_module = importlib.import_module("stepdistill.train")

    made = students(tmp_path / "students")
    task = write_task(tmp_path / "task")
    loads = []
    real = run_module.load_task
    monkeypatch.setattr(run_module, "load_task", lambda name: loads.append(name) or real(name))
    monkeypatch.setattr(train_module, "load_task", lambda name: pytest.fail("reloaded"))
    config = make_config(
        {
            "task": str(task),
            "mode": "rationale-input",
            "student": str(made["causal"]),
            "annotations": str(tmp_path / "task" / "annotations"),
            "max_steps": 1,
            "batch_size": 4,
            "bf16": False,
            "output_dir": str(tmp_path / "runs"),
            "run_name": "run",
        }
    )
    metrics = run_module.run(config)
    assert loads == [str(task)] and metrics["requires_teacher_rationales"]
    # Without its rationale dataset, evaluating it is a clear error, not a teacher call.
    monkeypatch.setattr(
        importlib.import_module("stepdistill.annotate"),
        "annotate",
        lambda *a, **k: pytest.fail("asked"),
    )
    (tmp_path / "task" / "annotations" / "train.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="stepdistill annotate"):
        evaluate(tmp_path / "runs" / "run")


def test_no_module_imports_the_package_root():
    """The root re-exports the stages: a module importing it would close a cycle."""
    wrong = [
        f"{short(module)} -> stepdistill"
        for module, edges in imports().items()
        for target, _ in edges
        if target == PUBLIC and module != PUBLIC
    ]
    assert wrong == []
