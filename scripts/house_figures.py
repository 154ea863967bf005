"""The package's shape in three figures, read from the code (nothing is imported or run): its import circles, its
top-level entries, and its largest modules. docs/ARCHITECTURE.md quotes them; tests/test_layers.py holds them.

    python scripts/house_figures.py            # circles, top-level entries, the five largest modules
    python scripts/house_figures.py --json

An import is any `import` statement of the package's modules, at module level or inside a function, under
`TYPE_CHECKING` too (a circle of annotations is still a circle to a reader); `from rookworld_trl.x import y` is an
import of the module x.y when that is a module, else of x. A package's __init__.py is no node: it only hands names
on.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rookworld_trl"


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """module name -> file, every .py of the package but the __init__.py files."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        if path.name != "__init__.py" and "__pycache__" not in path.parts:
            out[".".join(path.relative_to(package.parent).with_suffix("").parts)] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules `path` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name in known:
                found.add(name)
            elif name.rsplit(".", 1)[0] in known and isinstance(node, ast.ImportFrom):
                found.add(name.rsplit(".", 1)[0])
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def top_level(package: Path = PACKAGE) -> dict[str, list[str]]:
    """The entries of the package's folder besides __init__.py: {"code": modules and packages, "data": folders
    of no Python module (the bundled assets)}."""
    code, data = [], []
    for entry in sorted(package.iterdir()):
        if entry.name in ("__init__.py", "__pycache__"):
            continue
        if entry.suffix == ".py" or (
            entry.is_dir() and any(p.name != "__init__.py" for p in entry.rglob("*.py"))
        ):
            code.append(entry.name)
        elif entry.is_dir():
            data.append(entry.name)
    return {"code": code, "data": data}


def figures() -> dict:
    known = modules()
    graph = {name: imports(path, known) for name, path in known.items()}
    sizes = sorted(((len(path.read_text().splitlines()), name) for name, path in known.items()), reverse=True)
    return {
        "circles": circles(graph),
        "top_level": top_level(),
        "largest": [{"module": name, "lines": lines} for lines, name in sizes[:5]],
        "modules": len(known),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="the figures as one JSON object")
    found = figures()
    if parser.parse_args().json:
        print(json.dumps(found, indent=1))
        return
    top = found["top_level"]
    print(
        f"import circles: {len(found['circles'])}"
        + "".join(f"\n  {' <-> '.join(c)}" for c in found["circles"])
    )
    print(f"top-level entries besides __init__.py: {len(top['code']) + len(top['data'])} "
          f"({len(top['code'])} of code: {', '.join(top['code'])}; data: {', '.join(top['data']) or 'none'})")  # fmt: skip
    print(f"modules: {found['modules']}; largest: "
          + ", ".join(f"{m['module']} {m['lines']}" for m in found["largest"]))  # fmt: skip


if __name__ == "__main__":
    main()
