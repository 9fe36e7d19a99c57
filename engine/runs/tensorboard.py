"""A run's metrics as TensorBoard event files, for those who already live in TensorBoard.

    TensorBoardWriter(logdir)           # a callback: every logged row as it is logged
    write_events(rows, logdir)          # a stored run's rows, after the fact

Scalars, by step: loss/train, loss/val, accuracy/train, accuracy/val (and the eval-mode train
figures where dropout or BatchNorm make them differ), lr, grad_norm, clip_frac, and each layer's
gradient norm and dead/saturated shares under layers/<name>/. The files are written by torch's
own SummaryWriter (torch.utils.tensorboard, which needs the tensorboard package), so TensorBoard
reads them as it reads any PyTorch run's: `tensorboard --logdir DIR`.
"""
from __future__ import annotations

from ..core.errors import SpecError
from ..train.callbacks import Callback

SCALARS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_eval_loss":
           "loss/train_eval_mode", "train_acc": "accuracy/train", "val_acc": "accuracy/val",
           "train_eval_acc": "accuracy/train_eval_mode", "lr": "lr", "grad_norm": "grad_norm",
           "clip_frac": "clip_frac"}
LAYER_SCALARS = ("act_grad_norm", "weight_grad_norm", "update_ratio", "dead_frac", "saturated_frac")


def _writer(logdir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the tensorboard package
        raise SpecError("writing TensorBoard files needs the tensorboard package: "
                        "pip install tensorboard") from None
    try:
        return SummaryWriter(log_dir=str(logdir))
    except OSError as e:
        raise SpecError(f"cannot write TensorBoard files to {logdir}: {e.strerror or e}") \
            from None


def add_row(writer, row: dict) -> None:
    """One metrics row's scalars at its step (None and non-numbers left out)."""
    step = row.get("step")
    if step is None:
        return
    for key, tag in SCALARS.items():
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(tag, value, step)
    for layer in row.get("layers") or ():
        for key in LAYER_SCALARS:
            value = layer.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(f"layers/{layer['name']}/{key}", value, step)


def write_events(rows: list[dict], logdir) -> None:
    """A finished run's rows as one event file in `logdir`."""
    writer = _writer(logdir)
    try:
        for row in rows:
            add_row(writer, row)
    finally:
        writer.close()


class TensorBoardWriter(Callback):
    """Writes every logged row to TensorBoard event files in `logdir` as the run trains."""
    name = "tensorboard"

    def __init__(self, logdir):
        self.logdir = logdir
        self._writer = None

    def on_fit_start(self, trainer):
        self._writer = _writer(self.logdir)

    def on_log(self, trainer, row):
        if self._writer is not None:
            add_row(self._writer, trainer.history.last)
            self._writer.flush()

    def on_fit_end(self, trainer):
        if self._writer is not None:
            self._writer.close()
