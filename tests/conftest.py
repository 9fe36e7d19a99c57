import os
import pathlib
import sys
import tempfile

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# One intra-op thread: the tiny models here gain nothing from two, and on a loaded 2-core
# machine OpenMP threads spinning against each other made runs up to 50x slower (measured).
torch.set_num_threads(1)

# The run store (engine/runs/store.py) of every test and every process a test starts: a folder of
# this test process's own, never the user's ~/.netlab.
os.environ["NETLAB_HOME"] = tempfile.mkdtemp(prefix="netlab_home_")
os.environ.pop("NETLAB_STORE", None)  # a store URL of the environment's is not the tests'
# Runs train in threads of the test process (or of a test's server) unless a test asks for worker
# processes (serve/workers.py): tests/test_workers.py and the browser suite's server do.
os.environ["NETLAB_WORKERS"] = "0"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """Where a run store lives, once per backend: a SQLite file, and a fresh schema in the
    PostgreSQL database NETLAB_TEST_POSTGRES names (.ci/run starts one; elsewhere the
    PostgreSQL case is skipped without it, in CI it fails)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.sqlite'}"
        return
    url = os.environ.get("NETLAB_TEST_POSTGRES")
    if not url:
        message = ("NETLAB_TEST_POSTGRES is not set: the PostgreSQL run store needs a server "
                   "(.ci/run starts one)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    psycopg = pytest.importorskip("psycopg")
    import uuid
    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    yield f"{url}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(url) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
