"""A checkpoint taken at any step and loaded into a fresh Trainer goes on with exactly the
numbers of the run that never stopped: every metrics row, the final weights and the summary.
The presets cover every random stream and every callback that keeps state: batches, dropout,
augmentation, teacher forcing, BatchNorm, clipping, early stopping, the health check's memory,
schedules (one on the validation loss), a pretraining phase, a distillation teacher and a run
that diverges."""
import io
import json

import pytest
import torch

from engine import ExperimentSpec, Trainer
from engine.presets import load_preset

PRESETS = ["xor_tanh", "dropout_regularizes", "augment_shapes", "batchnorm_deep_sigmoid",
           "gradient_clipping", "early_stopping", "lr_too_high", "seq2seq_attention_reverse",
           "rnn_exploding_clipped", "schedules_side_by_side", "transfer_digits",
           "cnn_digits"]


def spec_of(name: str, steps: int, **training) -> ExperimentSpec:
    config = load_preset(name)["config"]
    config["training"] = {**config["training"], "steps": steps, **training}
    return ExperimentSpec.from_dict(config)


def same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def check_resumes(spec: ExperimentSpec, cuts=(1, 7, 23)):
    alone = Trainer(spec).run()
    expected = {k: v for k, v in alone.summary().items() if k != "seconds"}
    for cut in cuts:
        buf = io.BytesIO()
        Trainer(spec).run(cut).save(buf)
        resumed = Trainer.resume(buf.getvalue()).run()
        assert same(resumed.history.rows, alone.history.rows), f"rows differ after a cut at {cut}"
        for (k, a), b in zip(alone.model.state_dict().items(), resumed.model.state_dict().values()):
            assert torch.equal(a, b), f"{k} differs after a cut at {cut}"
        assert same({k: v for k, v in resumed.summary().items() if k != "seconds"}, expected)
    return alone


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.slow
def test_a_resumed_run_gives_the_numbers_of_one_never_stopped(name):
    check_resumes(spec_of(name, 40))


@pytest.mark.slow
def test_a_schedule_on_the_validation_loss_and_early_stopping_resume_mid_plan():
    spec = spec_of("early_stopping", 400, log_every=5, eval_every=5,
                   early_stopping={"patience": 6})
    spec = ExperimentSpec.from_dict({**spec.to_dict(), "schedule": {
        "name": "reduce_on_plateau", "patience": 1, "factor": 0.5}})
    alone = check_resumes(spec, cuts=(3, 60, 111))
    assert alone.stopped == "early_stopping" and alone.restored_step is not None
    assert len({r["lr"] for r in alone.history.rows}) > 1  # the plateau rule cut the rate


def test_a_history_that_thinned_goes_on_thinning_as_it_would_have():
    spec = ExperimentSpec.from_dict({"data": {"name": "xor", "n": 200}, "model": {"layers": [4]},
                                     "training": {"steps": 300, "log_every": 1}})
    alone = Trainer(spec)
    alone.history.max_rows = 40
    alone.run()
    half = Trainer(spec)
    half.history.max_rows = 40
    half.run(170)
    resumed = Trainer(spec)
    resumed.history.max_rows = 40
    resumed.load_state_dict(half.state_dict()).run()
    assert resumed.history.rows == alone.history.rows and len(alone.history) <= 40
    assert resumed.history.best == alone.history.best


def test_an_extended_run_resumes_too():
    spec = spec_of("xor_tanh", 30)
    alone = Trainer(spec).run()
    alone.extend(20)
    alone.run()
    first = Trainer(spec).run()
    first.extend(20)
    first.run(5)
    resumed = Trainer.resume(first.state_dict()).run()
    assert resumed.step_count == 50 and same(resumed.history.rows, alone.history.rows)
