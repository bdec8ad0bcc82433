"""The house rules of paris/, read from its source: layers import only downwards, no import circles, and only
the command line and the reporting layer print or draw (docs/architecture.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "paris"

# Lowest first. A module may import from its own layer and the layers before it, never from a later one.
LAYERS = [
    ("base", ["paris.errors", "paris.config", "paris.layout", "paris.run", "paris.flow", "paris.randomness",
              "paris.images", "paris.progress", "paris.precision", "paris.cache", "paris.tensor_file", "paris.outputs", "paris.prompts",
              "paris.inference.routing"]),  # pure math on probabilities, that the config checks strategies with
    ("building blocks", ["paris.models", "paris.data"]),
    ("stages", ["paris.data.prepare", "paris.data.merge", "paris.clusters", "paris.train", "paris.inference",
                "paris.evaluate", "paris.roster", "paris.launch"]),
    ("entry points", ["paris.demo", "paris.serve"]),
    ("people", ["paris.cli", "paris.__main__", "paris.report"]),
]
TALKERS = ("paris.cli", "paris.report")  # the only modules that print, draw charts or hold a console


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def imports(tree: ast.Module) -> set[str]:
    """Every paris module imported anywhere in the file, at the top or inside a function."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("paris"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from paris.data import store`
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("paris"))
    return found


def layer(module: str) -> int:
    """The layer of the most specific prefix that names the module (paris.data.prepare beats paris.data)."""
    best = max(((prefix, i) for i, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
                if module == prefix or module.startswith(prefix + ".")), key=lambda pair: len(pair[0]), default=None)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and to docs/architecture.md (Layers)")
    return best[1]


# The root package's empty __init__ is no room of its own: `from paris import progress` imports paris.progress.
MODULES = modules()  # parsed once: the graph looks every import up in it
GRAPH = {name: {m for m in imports(tree) if m in MODULES} - {name, "paris"}
         for name, tree in MODULES.items() if name != "paris"}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_only_go_down(module):
    upward = [m for m in GRAPH[module] if layer(m) > layer(module)]
    assert not upward, f"{module} ({LAYERS[layer(module)][0]}) imports {upward} from a higher layer"


def test_no_import_circle():
    state = {}

    def visit(module, path):
        if state.get(module) == "open":
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if state.get(module) == "done":
            return
        state[module] = "open"
        for other in sorted(GRAPH[module]):
            visit(other, path + [module])
        state[module] = "done"

    for module in GRAPH:
        visit(module, [])


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if not m.startswith(TALKERS)))
def test_library_code_does_not_print_or_draw(module):
    """Output goes through paris.progress; tables and charts are made by paris.report for the command line."""
    tree = MODULES[module]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "print", f"{module}:{node.lineno} prints"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            loud = [n for n in names if n.split(".")[0] in ("rich", "matplotlib", "typer")]
            assert not loud, f"{module}:{node.lineno} imports {loud}: printing and drawing belong to paris.report"


MAX_FUNCTION_LINES = 60  # a function fits on a screen: its body, without the signature and the docstring


def body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = function.body[1:] if ast.get_docstring(function) is not None else function.body
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_functions_fit_on_a_screen(module):
    """A CLI command's signature is its options (litgpt-style), so the signature is not counted."""
    long = [f"{node.name} ({body_lines(node)} lines)" for node in ast.walk(MODULES[module])
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > MAX_FUNCTION_LINES]
    assert not long, f"{module}: {', '.join(long)} longer than {MAX_FUNCTION_LINES} lines: split them"
