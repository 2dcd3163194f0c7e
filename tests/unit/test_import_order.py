"""The house's shape: no import circles, and imports only run down the declared order.

``bench.LAYERS`` lists bench's packages in import order; a module may import its own
package, the packages before its own, and echo_tts. echo_tts never imports bench.
"""

from __future__ import annotations

import bench
from tests.import_graph import cycles, import_graph, module_files

MAX_MODULE_LINES = 600


def _layer(module: str) -> int | None:
    """Position of a bench module's package in bench.LAYERS; None for bench/bench.cli."""
    parts = module.split(".")
    if len(parts) < 3 and parts[-1] in ("bench", "cli"):
        return None
    return bench.LAYERS.index(parts[1])


def test_every_bench_package_has_a_declared_place() -> None:
    packages = {name.split(".")[1] for name in module_files()
                if name.startswith("bench.") and name != "bench.cli"}
    assert packages == set(bench.LAYERS)


def test_the_root_of_bench_holds_only_the_cli_and_packages() -> None:
    root_modules = sorted(name for name in module_files()
                          if name.startswith("bench.") and name.count(".") == 1
                          and name.split(".")[1] not in bench.LAYERS)
    assert root_modules == ["bench.cli"]


def test_no_import_circles() -> None:
    assert cycles(import_graph()) == []


def test_imports_run_down_the_declared_order() -> None:
    against: list[str] = []
    for module, targets in import_graph().items():
        for target in targets:
            if module.startswith("echo_tts"):
                if target.startswith("bench"):
                    against.append(f"{module} -> {target} (echo_tts never imports bench)")
                continue
            if not target.startswith("bench"):
                continue
            own, theirs = _layer(module), _layer(target)
            if theirs is None and target != "bench":
                against.append(f"{module} -> {target} (nothing imports the CLI)")
            elif own is not None and theirs is not None and theirs > own:
                against.append(f"{module} -> {target} ({bench.LAYERS[own]} may not import "
                               f"{bench.LAYERS[theirs]})")
    assert sorted(against) == []


def test_the_checker_sees_a_circle_and_an_arrow_back_up() -> None:
    # The two checks above must be able to fail: feed them a graph with both faults.
    graph = {"bench.run.a": {"bench.run.b"}, "bench.run.b": {"bench.run.a"},
             "bench.spec.c": {"bench.report.d"}, "bench.report.d": set()}
    assert cycles(graph) == [["bench.run.a", "bench.run.b"]]
    assert _layer("bench.report.d") > _layer("bench.spec.c")  # type: ignore[operator]


def test_no_module_over_600_lines() -> None:
    long = sorted(f"{name} ({n} lines)" for name, path in module_files().items()
                  if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES)
    assert long == []
