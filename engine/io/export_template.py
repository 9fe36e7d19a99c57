"""The exported script's training loop, as real Python (torch and math only, like portable.py).

`engine.io.export` copies these definitions into the script with inspect.getsource, together with
the parts of engine/core/portable.py they use. The engine does not run this loop (its Trainer adds
callbacks, diagnostics and the health check around the same update), so tests/test_export.py
holds the two to the same numbers: every logged row, the final weights, the stop reason.
"""
from __future__ import annotations

import torch

from ..core.portable import (
    Batches,
    EarlyStop,
    add_penalty_grads,
    augment_images,
    clip_gradients,
    predict_classes,
    weight_params,
)


@torch.no_grad()
def evaluate(model, loss_fn, x, y, split, classes, one_logit=False):
    """Loss (and accuracy, with classes) over a whole split in eval mode: dropout off, BatchNorm
    on its running averages."""
    if len(y) == 0:
        return {}
    model.eval()
    out = model(x)
    model.train()
    metrics = {f"{split}_loss": loss_fn(out, y).item()}
    if classes:
        metrics[f"{split}_acc"] = (predict_classes(out, one_logit) == y).float().mean().item()
    return metrics


def show(row):
    return " ".join(f"{k} {v:.4g}" for k, v in row.items())


# One piece on purpose: this is the loop a learner reads in the exported script, top to
# bottom like a textbook training loop; helpers would scatter it across the file.
def train(model, optimizer, scheduler, loss_fn, splits, *, steps, batch_size, batch_gen, device,
          log_every, eval_every, classes, one_logit=False, l1=0.0, l2=0.0, clip=None,
          early_stopping=None, schedule_on_metric=False, augment=None, objective=None,
          on_batch=None):
    """Train for `steps` gradient steps and return the summary: steps, why it stopped, the
    printed rows (history) and the test metrics.

    Each step in Netlab's order: loss, backward, penalties, clipping, the divergence check, the
    update, the schedule. A row is printed at step 1, every `log_every` steps and at the last
    step; it is validated there too every `eval_every` steps (0: on every row).
    augment: (generator, blank, settings) to change each training batch of images at random.
    objective: what the update minimises, objective(out, xb, loss), when not the loss itself
    (distillation); the printed train loss stays the loss. on_batch(xb, yb): called with each
    training batch before the forward pass (teacher forcing hands the answers to the decoder)."""
    x_train, y_train = splits["train"]
    batches = Batches(len(y_train), batch_size, batch_gen, device)
    weights = weight_params(model)
    watch = EarlyStop(**early_stopping) if early_stopping else None
    history, stopped, step = [], "completed", 0
    loss_sum, correct, seen, since = 0.0, 0, 0, 0  # running totals between printed rows
    model.train()
    for step in range(1, steps + 1):
        idx = batches.next()
        xb, yb = x_train[idx], y_train[idx]
        if augment is not None:
            augment_gen, blank, settings = augment
            xb = augment_images(xb, augment_gen, blank, **settings)
        if on_batch is not None:
            on_batch(xb, yb)
        out = model(xb)
        loss = loss_fn(out, yb)
        optimizer.zero_grad(set_to_none=True)
        (loss if objective is None else objective(out, xb, loss)).backward()
        if l1 or l2:
            add_penalty_grads(weights, l1, l2)
        if clip is not None:
            clip_gradients([p for p in model.parameters() if p.grad is not None], *clip)
        if not torch.isfinite(loss):
            print(f"step {step}: the loss is {loss.item()}; stopped before this update")
            stopped = "diverged"
            break
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        if not schedule_on_metric and step < steps:  # the last step's rate is the final one
            scheduler.step()
        loss_sum, since = loss_sum + loss.item(), since + 1
        if classes:
            correct += (predict_classes(out.detach(), one_logit) == yb).sum().item()
            seen += yb.numel()
        if not (step == 1 or step % log_every == 0 or step == steps):
            continue
        row = {"step": step, "lr": lr, "train_loss": loss_sum / since}
        if classes:
            row["train_acc"] = correct / seen
        loss_sum, correct, seen, since = 0.0, 0, 0, 0
        if eval_every == 0 or step % eval_every == 0 or step == 1 or step == steps:
            row.update(evaluate(model, loss_fn, *splits["val"], "val", classes, one_logit))
        history.append(row)
        print(show(row), flush=True)
        if schedule_on_metric:  # the plateau schedule watches the validation loss
            scheduler.step(row.get("val_loss", row["train_loss"]))
        if watch is not None and "val_loss" in row and watch.update(row["val_loss"], step, model):
            stopped = "early_stopping"
            break
    steps_done = step - 1 if stopped == "diverged" else step
    restored_step = None
    if watch is not None and watch.best_state is not None and stopped != "diverged":
        model.load_state_dict(watch.best_state)  # the weights of the best evaluation
        restored_step = watch.best_step
        print(f"restored the weights from step {restored_step} (val_loss {watch.best_loss:.4g})")
    test = {} if stopped == "diverged" else evaluate(model, loss_fn, *splits["test"], "test",
                                                     classes, one_logit)
    if test:
        print(show(test))
    print(f"{stopped} after {steps_done} steps")
    return {"steps": steps_done, "stopped": stopped, "restored_step": restored_step,
            "test": test, "history": history}
