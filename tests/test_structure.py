"""The package's shape (README, "Layout"): layers import downwards only, no import cycles, and no
module or function grows past the sizes the README allows.  Read from the source with ast, every
import counted, those inside functions too."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "wim2vhd"

# From the top down.  A module may import its own layer and the layers below it.
LAYERS = [
    ("cli", ("wim2vhd.cli", "wim2vhd.__main__", "wim2vhd.demo", "wim2vhd.build.worker")),  # entry points
    ("api", ("wim2vhd.api",)),
    ("pipelines", ("wim2vhd.pipeline", "wim2vhd.verify", "wim2vhd.build")),
    ("parts", ("wim2vhd.boot", "wim2vhd.fs", "wim2vhd.ntfs", "wim2vhd.registry", "wim2vhd.wim",
               "wim2vhd.disk", "wim2vhd.partition", "wim2vhd.options", "wim2vhd.versions")),
    ("base", ("wim2vhd.errors", "wim2vhd.units", "wim2vhd.ondisk", "wim2vhd.repro", "wim2vhd.atomic", "wim2vhd.hooks",
              "wim2vhd.security", "wim2vhd.hooks", "wim2vhd._lib", "wim2vhd._native", "wim2vhd")),
]
# Modules longer than this say why in the README's layout section, as do these functions.
MAX_LINES = 600
LONG_MODULES = {"wim2vhd.partition", "wim2vhd.boot.devices"}
# Functions outside the CLI take at most this many parameters (typer commands take one per flag).
MAX_PARAMS = 8
WIDE_FUNCTIONS = {"wim2vhd.fs.fat32.make_fat32", "wim2vhd.fs.ntfs.make_ntfs", "wim2vhd.fs.format_layout",
                  "wim2vhd.disk.vhdx.create"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The wim2vhd modules `name` imports (a name imported from a package counts as its module)."""
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")
                base = ".".join(up[:len(up) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in found if m in known and m != name}


def _layer(module: str) -> int:
    best, rank = None, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for pre in prefixes:
            if (module == pre or module.startswith(pre + ".")) and (best is None or len(pre) > len(best)):
                best, rank = pre, i
    assert rank is not None, f"{module} is in no layer: add it to LAYERS and the README"
    return rank


def test_layers_import_downwards_only():
    mods = _modules()
    bad = []
    for name, path in mods.items():
        for dep in _imports(name, path, set(mods)):
            if _layer(dep) < _layer(name):
                bad.append(f"{name} ({LAYERS[_layer(name)][0]}) imports {dep} ({LAYERS[_layer(dep)][0]})")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles():
    mods = _modules()
    graph = {n: _imports(n, p, set(mods)) for n, p in mods.items()}
    cycles, state = [], {}

    def visit(n, stack):
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                cyc = stack[stack.index(d):] + [d]
                if not all(m.startswith("wim2vhd.cli") for m in cyc):  # typer's own pattern in cli/
                    cycles.append(" -> ".join(cyc))
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [])
    assert not cycles, "\n".join(cycles)


def test_module_and_function_sizes():
    long_modules, wide = [], []
    for name, path in _modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_LINES and name not in LONG_MODULES:
            long_modules.append(f"{name}: {text.count(chr(10))} lines")
        if name.startswith("wim2vhd.cli"):
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
                n -= bool(a.args and a.args[0].arg in ("self", "cls"))
                if n > MAX_PARAMS and f"{name}.{node.name}" not in WIDE_FUNCTIONS:
                    wide.append(f"{name}.{node.name}: {n} parameters")
    assert not long_modules and not wide, "\n".join(long_modules + wide)
