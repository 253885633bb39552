"""The package rules the README's Layout section states, read from the source: dependencies point one way."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "converter", "fleet")


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function (lazy imports count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules_of(package: str) -> list[Path]:
    found = sorted((ROOT / package).rglob("*.py"))
    assert found, f"no modules under {package}/"
    return found


def importers(package: str, prefix: str) -> set[str]:
    """The modules of `package` (as paths relative to the repo) that import `prefix` or a submodule of it."""
    return {
        str(path.relative_to(ROOT))
        for path in modules_of(package)
        if any(name == prefix or name.startswith(prefix + ".") for name in imported_modules(path))
    }


def test_paho_is_imported_in_agent_transport_only() -> None:
    users = set().union(*(importers(package, "paho") for package in PACKAGES))
    assert users, "nothing imports paho: the check would pass for the wrong reason"
    assert {user for user in users if not user.startswith("agent/transport/")} == set()


def test_the_agent_imports_neither_the_converter_nor_fleet_but_for_the_alias() -> None:
    assert importers("agent", "converter") == set()
    assert importers("agent", "fleet") == {"agent/cli.py"}


def test_fleet_does_not_import_the_converter() -> None:
    assert importers("fleet", "converter") == set()


@pytest.mark.parametrize("heavy", ["torch", "ultralytics", "onnx"])
def test_the_agent_never_imports_the_converters_dependencies(heavy: str) -> None:
    # onnxruntime is the agent's; `onnx` (the protobuf library) is the converter's alone.
    assert importers("agent", heavy) == set()


def loaded_after_import(module: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after `import module`."""
    code = f"import sys, {module}; print(' '.join(sorted({{name.split('.')[0] for name in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return set(out.split())


def test_the_agent_command_loads_neither_paho_nor_fleet_until_asked() -> None:
    # A dry run and `bench` go through agent.cli alone; the `fleet` alias imports fleet/ when it is used.
    loaded = loaded_after_import("agent.cli")
    assert "agent" in loaded, "the probe did not import the agent: it would pass for the wrong reason"
    assert {"paho", "fleet"} & loaded == set()
    assert {"paho", "fleet"} <= loaded_after_import("fleet.cli"), "the probe cannot see paho or fleet loaded"


# Inside the agent, dependencies point down: runtime wires the others; pipeline is the leaf of the
# loop; the bundle format, config, urls and system sit below them all. Each row: a package, and the
# agent packages it must never import (lazily or not).
AGENT_RULES = [
    ("pipeline", ("scene", "control", "transport", "runtime")),
    ("scene", ("transport", "control", "runtime")),
    ("transport", ("pipeline", "scene", "control", "runtime")),
    ("control", ("scene", "runtime")),
    ("config", ("pipeline", "scene", "transport", "control", "runtime", "system")),
    ("system", ("pipeline", "scene", "transport", "control", "runtime", "config")),
]


def imports_within(package: str, forbidden: tuple[str, ...]) -> dict[str, set[str]]:
    """Modules of agent/<package>/ and the forbidden agent packages each imports."""
    found: dict[str, set[str]] = {}
    for path in modules_of(f"agent/{package}"):
        hits = {
            name.split(".")[1]
            for name in imported_modules(path)
            if name.startswith("agent.") and name.split(".")[1] in forbidden
        }
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    return found


@pytest.mark.parametrize(("package", "forbidden"), AGENT_RULES, ids=[rule[0] for rule in AGENT_RULES])
def test_agent_packages_import_only_downwards(package: str, forbidden: tuple[str, ...]) -> None:
    assert imports_within(package, forbidden) == {}


def test_the_layout_rules_can_fail() -> None:
    # runtime imports all of them: the same check turned on it must find each.
    assert set().union(*imports_within("runtime", ("pipeline", "scene", "transport", "control")).values()) == {
        "pipeline",
        "scene",
        "transport",
        "control",
    }


def test_only_the_command_line_imports_the_runtime() -> None:
    users = {user for user in importers("agent", "agent.runtime") if not user.startswith("agent/runtime/")}
    assert users == {"agent/cli.py"}


def test_the_bundle_format_and_urls_sit_below_the_pipeline() -> None:
    for module in ("bundle.py", "urls.py"):
        below = {name for name in imported_modules(ROOT / "agent" / module) if name.startswith("agent.")}
        assert below == set(), f"agent/{module} imports {below}"


def test_fleet_reads_the_agent_through_config_transport_and_urls_only() -> None:
    used = {
        name.split(".")[1]
        for path in modules_of("fleet")
        for name in imported_modules(path)
        if name.startswith("agent.") and name.count(".") >= 1
    }
    assert used, "fleet imports nothing of the agent: the check would pass for the wrong reason"
    assert used <= {"config", "transport", "urls"}
