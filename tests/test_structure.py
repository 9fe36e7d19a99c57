"""The house in rooms (docs/ARCHITECTURE.md, "Layout"): read every import of the project, the
ones inside functions too, and fail on an import loop or on a room importing one above it.

    engine.core < engine.data.datasets < engine.nn < engine.train < engine.lab < engine.runs < engine.io
        < engine.presets < engine (its __init__ and the CLI)
    serve imports engine only; ui imports engine and serve; pages and app.py sit on top.
"""
import ast
import re
import subprocess
import sys

from tests.conftest import ROOT

ENGINE_ROOMS = ["core", "data", "nn", "train", "lab", "runs", "io", "presets"]
TOP_LEVEL = ["engine", "serve", "ui", "pages", "app"]  # lowest first
MAY_IMPORT = {"engine": set(), "serve": {"engine"}, "ui": {"engine", "serve"},
              "pages": {"engine", "serve", "ui"}, "app": {"engine", "serve", "ui"}}


def project_modules() -> dict[str, object]:
    """Dotted name -> path of every module of the project's packages (and app.py)."""
    found = {"app": ROOT / "app.py"}
    for top in ("engine", "serve", "ui", "pages"):
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(name: str, path, modules: dict) -> set[str]:
    """The project modules `name` imports anywhere in its file (a `from package import module`
    counts as the module)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # engine.train.trainer.Trainer -> the module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def room(name: str) -> tuple[str, int]:
    """(top-level package, rank of the engine room; the engine's own __init__/__main__ rank
    above every room)."""
    parts = name.split(".")
    if parts[0] != "engine":
        return parts[0], 0
    if len(parts) > 1 and parts[1] in ENGINE_ROOMS:
        return "engine", ENGINE_ROOMS.index(parts[1])
    return "engine", len(ENGINE_ROOMS)


def test_the_graph_sees_every_room():
    modules = project_modules()
    assert {m.split(".")[1] for m in modules if m.startswith("engine.")} >= \
        set(ENGINE_ROOMS) | {"__main__"}
    # no module of the engine sits loose beside the rooms
    loose = [m for m in modules if m.count(".") == 1 and m.startswith("engine.")
             and m.split(".")[1] not in ENGINE_ROOMS + ["__main__"]]
    assert loose == []
    assert "serve.registry" in modules and "engine.train.trainer" in graph()["engine"]


def wrong_way(g: dict[str, set[str]]) -> list[str]:
    """Imports that run from a lower room up (or out of the packages a top level may use)."""
    wrong = []
    for name, targets in g.items():
        top, rank = room(name)
        for t in sorted(targets):
            t_top, t_rank = room(t)
            if (t_top != top and t_top not in MAY_IMPORT[top]) or (t_top == top and t_rank > rank):
                wrong.append(f"{name} -> {t}")
    return wrong


def loops(g: dict[str, set[str]]) -> list[str]:
    """Every import loop a depth-first walk meets, as 'a -> b -> a'."""
    state, found = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == "open":
                found.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    return found


def test_no_room_imports_a_room_above_it():
    assert wrong_way(graph()) == []


def test_there_is_no_import_loop():
    assert loops(graph()) == []


def test_the_checks_can_fail(tmp_path):
    """A loop hidden in a function and a lower room importing a higher one are both caught."""
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from .a import y\n")
    modules = {"engine.core.a": tmp_path / "a.py", "engine.core.b": tmp_path / "b.py"}
    g = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert g == {"engine.core.a": {"engine.core.b"}, "engine.core.b": {"engine.core.a"}}
    assert loops(g) == ["engine.core.a -> engine.core.b -> engine.core.a"]
    assert wrong_way({"engine.core.spec": {"engine.train.trainer"}, "serve.runs": {"ui.state"},
                      "ui.state": {"engine.core.spec", "serve.runs"}}) == \
        ["engine.core.spec -> engine.train.trainer", "serve.runs -> ui.state"]


def test_no_engine_module_imports_streamlit():
    for path in (ROOT / "engine").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "streamlit" for n in names), path


def test_the_runtime_imports_no_streamlit():
    for path in (ROOT / "serve").rglob("*.py"):
        assert "import streamlit" not in path.read_text(), path


def test_importing_the_engine_loads_no_streamlit():
    code = ("import sys, engine, engine.io.export, engine.__main__, serve.registry, "
            "serve.workers; print('streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def documented_layout() -> set[str]:
    """The files docs/ARCHITECTURE.md's layout block names, as paths (a name ending in / opens a
    folder for the lines indented under it)."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    block = text.split("## Layout", 1)[1].split("```\n", 2)[1]
    found, folders = set(), []
    for line in block.splitlines():
        name = line.split(" ", 1)[0] if not line.startswith(" ") else line.strip().split(" ")[0]
        if not re.fullmatch(r"\w+(\.py|/)", name):
            continue  # a description's second line
        depth = (len(line) - len(line.lstrip(" "))) // 2
        folders = folders[:depth]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        else:
            found.add("/".join(folders + [name]))
    return found


def test_the_documented_layout_matches_the_files():
    """Every module is in ARCHITECTURE.md's layout, and everything there exists."""
    files = {str(p.relative_to(ROOT)) for top in ("pages", "ui", "serve", "engine")
             for p in (ROOT / top).rglob("*.py") if p.name != "__init__.py"} | {"app.py"}
    documented = documented_layout()
    assert sorted(files - documented) == [] and sorted(documented - files) == []


def test_no_long_function_without_a_reason_beside_it():
    """A function over 60 lines reads in one sitting only if it is one piece on purpose: the
    comment right above it says why."""
    unexplained = []
    for top in ("engine", "serve", "ui", "pages"):
        for path in (ROOT / top).rglob("*.py"):
            lines = path.read_text().split("\n")
            for node in ast.walk(ast.parse("\n".join(lines))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                        node.end_lineno - node.lineno + 1 > 60:
                    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                    if not lines[first - 2].strip().startswith("#"):
                        unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert unexplained == []


def test_pages_call_only_what_architecture_lists():
    """Pages reach the engine and the runtime through a documented set of names."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    block = text.split("### What pages call", 1)[1].split("```\n", 2)[1]
    listed = {line.split(": ")[0]: set(line.split(": ")[1].split(", "))
              for line in block.strip().splitlines()}
    used: dict[str, set] = {}
    for path in [*(ROOT / "pages").glob("*.py"), ROOT / "app.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.split(".")[0] in ("engine", "serve"):
                used.setdefault(node.module, set()).update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] in ("engine", "serve") for a in node.names), \
                    f"{path.name}: import names from a module, as ARCHITECTURE lists them"
    assert used == listed


def test_a_newcomer_learns_where_to_look_and_what_pip_installs():
    """The README's first screen names the address and the first load's wait; requirements.txt
    says what torch build a user gets and how to get the small one (issue 31, item 18)."""
    readme = (ROOT / "README.md").read_text()
    first_screen = readme[:readme.index("## Test it")]
    assert "http://localhost:8501" in first_screen and "first page" in first_screen
    requirements = (ROOT / "requirements.txt").read_text()
    assert "from local disk" not in requirements
    assert "--index-url https://download.pytorch.org/whl/cpu" in requirements
    assert "--index-url https://download.pytorch.org/whl/cpu" in first_screen
