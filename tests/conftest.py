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

# The run store (engine/store.py) of every test and every process a test starts: a folder of
# this test process's own, never the user's ~/.netlab.
os.environ["NETLAB_HOME"] = tempfile.mkdtemp(prefix="netlab_home_")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
