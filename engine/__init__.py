"""Netlab's engine: pure torch + numpy + scikit-learn, usable from the CLI, notebooks and tests.
It never imports streamlit or serve/ (tests/test_structure.py enforces it).

Read it in this order; each room imports only the rooms above it in this list:

    core      errors, bounded outside input, the registries, the experiment spec, seeding, and
              `portable` (the torch pieces the exported script copies)
    data      datasets: 2-D toys, digits, shapes, sequences, text, uploaded tables
    nn        the model: dense, convolutional and recurrent layer families, describe()
    train     the Trainer, its callbacks, diagnostics, the health verdict, History, phases
              (pretraining, distillation) and curvature
    lab       experiments around a run: loss surfaces, LR range test, batch sizes, side by side,
              feature maps, the network view, int8, decoding, classification reports
    runs      many runs: the run store, sweeps (batched), Ray Tune, TensorBoard files
    io        outside formats: a standalone PyTorch script, TensorFlow Playground links
    presets   the presets (one JSON each) and their checked claims
"""
# isort: off
# (the order matters)
from .core.errors import SpecError
# the datasets and layer families fill their registries before spec reads the entries
# tagged default
from .core import registry  # noqa: F401
from .data import datasets  # noqa: F401
from .nn import model  # noqa: F401
from .core.spec import ExperimentSpec, load_spec
from .train.history import History
from .train.callbacks import Callback, CancelFit
from .train.trainer import Trainer
from .nn.model import build_model, describe
# isort: on

__all__ = ["SpecError", "ExperimentSpec", "load_spec", "History", "Callback", "CancelFit",
           "Trainer", "build_model", "describe"]
