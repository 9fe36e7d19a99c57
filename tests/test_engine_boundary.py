"""The engine never imports streamlit: it must run headless (CLI, notebooks, CI workers)."""
import ast
import subprocess
import sys

from tests.conftest import ROOT


def test_no_engine_module_imports_streamlit():
    for path in (ROOT / "engine").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "streamlit" for n in names), path


def test_importing_the_engine_loads_no_streamlit():
    code = "import sys, engine, engine.export, engine.__main__; print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
