"""Netlab's engine: pure torch + numpy, usable from the CLI, notebooks and tests.
It never imports streamlit (tests/test_engine_boundary.py enforces it)."""
from .errors import SpecError
# data and model fill their registries before spec reads the entries tagged default
from . import registry, data, model  # noqa: F401
from .spec import ExperimentSpec, load_spec
from .history import History
from .callbacks import Callback, CancelFit
from .trainer import Trainer
from .model import build_model, describe

__all__ = ["SpecError", "ExperimentSpec", "load_spec", "History", "Callback", "CancelFit",
           "Trainer", "build_model", "describe"]
