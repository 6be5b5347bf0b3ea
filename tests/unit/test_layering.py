"""The import rules of ../shared/DESIGN.md ("Layout"), read from the source (nothing is imported):
evaluation/ is the ML core and imports no web, queue or database layer."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_EVALUATION = ("api", "services", "tasks", "models", "fastapi", "celery", "sqlalchemy", "starlette")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_evaluation_core_imports_no_web_queue_or_database_layer():
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / "evaluation").rglob("*.py")
        for name in imported_modules(path)
        if name.split(".")[0] in FORBIDDEN_IN_EVALUATION
    }
    assert not offenders


def test_the_evaluation_core_reads_no_settings_and_no_environment():
    """Settings are read once at the edges (CLI, worker, app factory, demo, benches) and handed to the core as
    an evaluation.runtime.Runtime: no module of the core imports them or reads an environment variable."""
    settings = {f"{path.relative_to(ROOT)}: {name}" for path in (ROOT / "evaluation").rglob("*.py")
                for name in imported_modules(path) if name == "ftgate.settings" or name.startswith("ftgate.settings.")}
    assert not settings
    environment = {str(path.relative_to(ROOT)) for path in (ROOT / "evaluation").rglob("*.py")
                   if any(isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")
                          for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))}
    assert not environment


def test_the_guard_builder_does_not_import_the_base_registry_that_calls_it():
    assert "evaluation.bases" not in imported_modules(ROOT / "evaluation" / "guard.py")
    assert "evaluation.guard" in imported_modules(ROOT / "evaluation" / "bases.py")


def test_the_file_helpers_import_nothing_of_the_project():
    """evaluation/files.py is for every layer, so it must stay at the bottom."""
    project = {"evaluation", "ftgate", *FORBIDDEN_IN_EVALUATION}
    assert not {n for n in imported_modules(ROOT / "evaluation" / "files.py") if n.split(".")[0] in project}


def test_the_judge_modules_under_the_training_code_import_no_training_code():
    """judge_training and persona_training build on the judges' labels, keyword rules and encoder; the embedded
    judge builds on the training code. The modules below it import neither, so there is no import cycle."""
    training = {"evaluation.judge_training", "evaluation.persona_training", "evaluation.judges.embedded"}
    for name in ("base", "keyword", "encoder", "llama_guard", "registry"):
        assert not imported_modules(ROOT / "evaluation" / "judges" / f"{name}.py") & training, name
    # the package imports the embedded judge in __getattr__, on the first use of EmbeddedJudge
    top = ast.parse((ROOT / "evaluation" / "judges" / "__init__.py").read_text(encoding="utf-8")).body
    assert not {n.module for n in top if isinstance(n, ast.ImportFrom)} & training
    below = tuple(f"evaluation.judges.{m}" for m in ("base", "keyword", "encoder"))
    for name in ("judge_training", "persona_training"):
        judges = {n for n in imported_modules(ROOT / "evaluation" / f"{name}.py") if n.startswith("evaluation.judges")}
        assert judges and all(n.startswith(below) for n in judges), (name, judges)
