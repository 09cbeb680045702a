"""The package's layers: no import cycle between its parts, the bottom (the loose modules of
``src/siamese/``) imports nothing above it, and the stages' folders are all there is besides."""

import ast
from collections import defaultdict

from helpers import ROOT

PACKAGE = ROOT / "src" / "siamese"
BOTTOM = {"siamese.errors", "siamese.precision", "siamese.distance", "siamese.verdict", "siamese.files", "siamese.tables",
          "siamese.progress"}
STAGES = {"data", "models", "training", "metrics", "use", "serving", "commands"}


def part(module: str) -> str:
    """``siamese.data.pairs`` -> ``siamese.data``; ``siamese.metrics.knn`` -> itself."""
    return ".".join(module.split(".")[:2])


def import_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(("siamese", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("siamese."):
                if part(node.module) != part(module):
                    edges[part(module)].add(part(node.module))
    return edges


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for other in edges[todo.pop()]:
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return seen


def test_no_part_of_the_package_imports_one_that_imports_it():
    edges = import_graph()
    cycles = sorted((a, b) for a in list(edges) for b in edges[a] if a in reachable(edges, b))
    assert cycles == []


def test_the_bottom_imports_only_the_bottom():
    edges = import_graph()
    assert {module: edges[module] - BOTTOM for module in BOTTOM if edges[module] - BOTTOM} == {}
    assert edges["siamese.metrics"] <= BOTTOM  # the metrics need no model, no data


def test_the_package_is_the_bottom_and_one_folder_per_stage():
    # config (the resolvers that read a trunk's normalisation) and entry (what every entry script does
    # around its work) are loose too, above the bottom
    loose = {f"siamese.{path.stem}" for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    folders = {path.name for path in PACKAGE.iterdir() if path.is_dir() and (path / "__init__.py").exists()}
    assert loose == BOTTOM | {"siamese.config", "siamese.entry"} and folders == STAGES
