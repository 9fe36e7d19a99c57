"""CUDA: the engine trains on the GPU when one exists (skipped elsewhere; see conftest.py)."""
import pytest
import torch

from engine import ExperimentSpec, SpecError, Trainer

SPEC = {"data": {"name": "spiral"}, "model": {"layers": [64, {"type": "dropout", "p": 0.2}, 64]},
        "training": {"steps": 200}, "diagnostics": {"every": 50}}


@pytest.mark.gpu
def test_auto_picks_cuda_and_trains_with_diagnostics():
    trainer = Trainer(ExperimentSpec.from_dict(SPEC)).run()
    assert trainer.device.type == "cuda"
    assert next(trainer.model.parameters()).is_cuda and trainer.data.x_train.is_cuda
    assert trainer.stopped == "completed"
    last = trainer.history.last
    assert last["health"]["status"] in ("ok", "plateau")
    assert all(layer["act_grad_norm"] is not None for layer in last["layers"])


@pytest.mark.gpu
def test_cuda_matches_cpu_closely_without_dropout():
    spec = {**SPEC, "model": {"layers": [64, 64]}}
    gpu = Trainer(ExperimentSpec.from_dict({**spec, "device": "cuda"})).run(50)
    cpu = Trainer(ExperimentSpec.from_dict({**spec, "device": "cpu"})).run(50)
    assert gpu.history.rows[0]["train_loss"] == pytest.approx(cpu.history.rows[0]["train_loss"],
                                                              rel=1e-4)
    assert gpu.history.last["train_loss"] == pytest.approx(cpu.history.last["train_loss"], rel=0.05)


@pytest.mark.gpu
def test_cuda_divergence_keeps_the_last_finite_weights():
    spec = {"model": {"init": {"name": "normal", "std": 1.0}, "layers": [64, 64, 64]},
            "optimizer": {"name": "sgd", "lr": 5.0, "momentum": 0.9}, "device": "cuda",
            "training": {"steps": 300}}
    trainer = Trainer(ExperimentSpec.from_dict(spec)).run()
    assert trainer.stopped == "diverged"
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_cuda_requested_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SpecError, match="no CUDA GPU"):
        Trainer(ExperimentSpec.from_dict({**SPEC, "device": "cuda"}))


@pytest.mark.gpu
@pytest.mark.parametrize("config", [
    {"data": {"name": "adding", "n": 400, "length": 12},
     "model": {"layers": [{"type": "lstm", "units": 16, "bidirectional": True},
                          {"type": "last_step"}]}},
    {"data": {"name": "reber", "n": 300}, "model": {"layers": [{"type": "gru", "units": 16},
                                                               {"type": "last_step"}]}},
    {"data": {"name": "reverse", "n": 300, "length": 5},
     "model": {"layers": [{"type": "seq2seq", "units": 16}]}},
    {"data": {"name": "chars", "length": 16, "stride": 8},
     "model": {"layers": [{"type": "embedding", "dim": 8}, {"type": "gru", "units": 16}]}},
    {"data": {"name": "digits", "n": 300, "subset": [7, 8, 9]},
     "model": {"layers": [{"type": "conv2d", "filters": 4}, 16]},
     "pretrain": {"classes": [0, 1, 2], "steps": 10, "freeze": [0]}},
])
def test_sequence_and_transfer_runs_on_cuda_match_the_cpu(config):
    """The sequence lab's layers (unrolled step by step, masked, an encoder-decoder with teacher
    forcing) and pretraining give the CPU's first rows on the GPU, with per-step statistics."""
    spec = {**config, "training": {"steps": 10, "log_every": 5}}
    gpu = Trainer(ExperimentSpec.from_dict({**spec, "device": "cuda"})).run()
    cpu = Trainer(ExperimentSpec.from_dict({**spec, "device": "cpu"})).run()
    assert next(gpu.model.parameters()).is_cuda and gpu.stopped == "completed"
    assert gpu.history.rows[0]["train_loss"] == pytest.approx(cpu.history.rows[0]["train_loss"],
                                                              rel=1e-3)
    for mine, theirs in zip(gpu.history.rows[0]["layers"], cpu.history.rows[0]["layers"]):
        if theirs.get("time_grad"):
            assert mine["time_grad"] == pytest.approx(theirs["time_grad"], rel=1e-2, abs=1e-6)
