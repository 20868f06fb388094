"""The architecture check: Zixly's imports flow one way (docs/architecture.md).

Read from the source, not by importing it: every ``import`` and ``from ... import`` of a
``zixly`` module counts, at module level or inside a function (a lazy import is a
dependency too); only imports under ``if TYPE_CHECKING:`` are left out (they never run).

Rules, each a list of violations (empty when the house is in order):

1. No import cycle between modules.
2. Layers: entry points > interfaces > composition root > services > domain and adapters >
   core. A module imports only from its own layer or below (``LAYERS``).
3. Packages (``zixly.<name>``, and the subpackages of ``zixly.provisioning``) import each
   other without a cycle, so each package can be read with only what is below it.
4. Job modules (``*.jobs``) are imported by the worker's entry point alone: whoever enqueues
   names the job (``zixly.core.queue``), it never imports the job function.
5. No module over ``MAX_LINES`` lines.

``python tests/architecture.py`` prints the report; ``tests/test_architecture.py`` fails on
any violation (it runs in ``make test``).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "zixly"
MAX_LINES = 600
# Alembic's revision scripts are data for the migration runner, not part of the import graph.
EXCLUDED = ("zixly.migrations",)

# Highest first. A module's layer is the one of its longest matching prefix.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("entry", ("zixly.app", "zixly.cli", "zixly.dev", "zixly.embedded", "zixly.workers")),
    (
        "interface",
        (
            "zixly.graphql",
            "zixly.http",
            "zixly.alerts.jobs",
            "zixly.monitor.jobs",
            "zixly.provisioning.jobs",
        ),
    ),
    ("composition", ("zixly.container",)),
    (
        "service",
        (
            "zixly.alerts.service",
            "zixly.integrations",
            "zixly.keys",
            "zixly.monitor",
            "zixly.provisioning",
        ),
    ),
    (
        "domain",
        (
            "zixly.alerts",
            "zixly.domain",
            "zixly.ingest",
            "zixly.monitor.executions",
            "zixly.monitor.rules",
            "zixly.monitor.store",
            "zixly.n8n_nodes",
            "zixly.providers",
            "zixly.provisioning.instance_events",
            "zixly.provisioning.instances",
            "zixly.provisioning.lease",
            "zixly.provisioning.n8n",
            "zixly.provisioning.preconditions",
            "zixly.provisioning.runtimes",
            "zixly.provisioning.secrets",
            "zixly.security",
        ),
    ),
    ("core", ("zixly", "zixly.core", "zixly.db")),
)
# Packages with subpackages that stand as packages of their own in rule 3.
SPLIT_PACKAGES = ("zixly.provisioning",)


@dataclass
class Graph:
    modules: dict[str, Path]
    imports: dict[str, set[str]]
    lines: dict[str, int] = field(default_factory=dict)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(name: str, path: Path) -> set[str]:
    """Every dotted name the module imports (a ``from m import x`` gives ``m`` and ``m.x``)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit_node(other)
                continue
            visit_node(child)

    def visit_node(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        visit(node)

    visit(tree)
    return found


def read_graph(root: Path = ROOT) -> Graph:
    modules: dict[str, Path] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        name = _module_name(path)
        if not name.startswith(EXCLUDED):
            modules[name] = path
    imports: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for dotted in _imported_names(name, path):
            while dotted and dotted not in modules:
                dotted = dotted.rpartition(".")[0]
            if dotted and dotted != name and dotted != PACKAGE:
                targets.add(dotted)
        imports[name] = targets
    lines = {name: len(path.read_text().splitlines()) for name, path in modules.items()}
    return Graph(modules, imports, lines)


def layer_of(module: str) -> tuple[int, str]:
    """(rank, name): rank 0 is the top (entry points)."""
    best: tuple[int, int, str] | None = None  # (prefix length, rank, layer)
    for rank, (layer, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), rank, layer)
    if best is None:
        raise LookupError(f"{module} is in no layer: add it to LAYERS (tests/architecture.py)")
    return best[1], best[2]


def package_of(module: str) -> str:
    parts = module.split(".")
    for split in SPLIT_PACKAGES:
        depth = split.count(".") + 1
        if module.startswith(split + ".") and len(parts) > depth + 1:
            # a subpackage's modules (zixly.provisioning.n8n.client -> zixly.provisioning.n8n);
            # a plain module of the split package stays in it
            candidate = ".".join(parts[: depth + 1])
            if (ROOT / Path(*candidate.split(".")) / "__init__.py").exists():
                return candidate
    return ".".join(parts[:2])


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(edges.get(start, ())))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(edges.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


@dataclass
class Report:
    graph: Graph
    module_cycles: list[list[str]]
    layer_violations: list[str]
    package_cycles: list[list[str]]
    package_edges: dict[str, set[str]]
    job_imports: list[str]
    oversized: list[str]

    @property
    def ok(self) -> bool:
        return not (
            self.module_cycles
            or self.layer_violations
            or self.package_cycles
            or self.job_imports
            or self.oversized
        )

    def lines(self) -> list[str]:
        graph = self.graph
        largest = max(graph.lines, key=lambda m: graph.lines[m])
        per_layer: dict[str, int] = {}
        for module in graph.modules:
            per_layer[layer_of(module)[1]] = per_layer.get(layer_of(module)[1], 0) + 1
        arrows = sum(len(t) for t in graph.imports.values())
        out = [
            f"modules: {len(graph.modules)}, imports between them: {arrows}",
            "per layer: " + ", ".join(f"{layer} {per_layer.get(layer, 0)}" for layer, _ in LAYERS),
            f"import cycles: {len(self.module_cycles)}",
            f"imports against the layer order: {len(self.layer_violations)}",
            f"packages: {len(self.package_edges)}, package cycles: {len(self.package_cycles)}",
            f"job modules imported outside the worker: {len(self.job_imports)}",
            f"largest module: {largest} ({graph.lines[largest]} lines; limit {MAX_LINES}), "
            f"modules over the limit: {len(self.oversized)}",
        ]
        for cycle in self.module_cycles:
            out.append("  cycle: " + " -> ".join(cycle))
        out += [f"  layer: {v}" for v in self.layer_violations]
        for cycle in self.package_cycles:
            out.append("  package cycle: " + " <-> ".join(cycle))
        out += [f"  job import: {v}" for v in self.job_imports]
        out += [f"  too long: {v}" for v in self.oversized]
        return out


def check(root: Path = ROOT) -> Report:
    graph = read_graph(root)
    violations = []
    job_imports = []
    packages: dict[str, set[str]] = {}
    for module, targets in sorted(graph.imports.items()):
        rank, layer = layer_of(module)
        own = package_of(module)
        packages.setdefault(own, set())
        for target in sorted(targets):
            target_rank, target_layer = layer_of(target)
            if target_rank < rank:
                violations.append(f"{module} ({layer}) imports {target} ({target_layer})")
            other = package_of(target)
            if other != own:
                packages[own].add(other)
            if target.endswith(".jobs") and not module.startswith("zixly.workers"):
                job_imports.append(f"{module} imports {target}")
    oversized = [
        f"{module} ({count} lines)"
        for module, count in sorted(graph.lines.items())
        if count > MAX_LINES
    ]
    return Report(
        graph=graph,
        module_cycles=cycles(graph.imports),
        layer_violations=violations,
        package_cycles=cycles(packages),
        package_edges=packages,
        job_imports=job_imports,
        oversized=oversized,
    )


def main() -> int:
    report = check()
    print("architecture check (tests/architecture.py, docs/architecture.md)")
    for line in report.lines():
        print(line)
    print("OK" if report.ok else "FAILED")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
