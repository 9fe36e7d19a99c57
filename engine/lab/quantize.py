"""Post-training int8 quantization of a trained model's weights, with its size and accuracy
before and after.

Each weight matrix or filter bank (every parameter of 2 or more dimensions) is stored as 8-bit
integers with one float32 scale per output channel (row of a linear layer, filter of a
convolution): q = round(w / s) clipped to [-127, 127], s = max|w| / 127 over that channel
(symmetric, zero point 0: torch.quantize_per_channel with qint8 gives the same integers). Biases
and normalisation parameters stay float32: they are few. The quantized model computes in
float32 with the weights s * q, so what changes is exactly the rounding of the weights
("weight-only" int8, what most deployed int8 models keep of their weights).
"""
from __future__ import annotations

import copy

import torch

QMAX = 127
FLOAT_BYTES = 4


def quantize_tensor(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, float32 scale per output channel) of a weight tensor (dim >= 2)."""
    flat = w.detach().float().reshape(w.shape[0], -1)
    scale = flat.abs().amax(1) / QMAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero channel
    q = torch.round(flat / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8)
    return q.reshape(w.shape), scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale.reshape(-1, *([1] * (q.dim() - 1)))


@torch.no_grad()
def quantize_model(model: torch.nn.Module) -> tuple[torch.nn.Module, dict]:
    """A copy of `model` with every weight of 2+ dimensions rounded to int8 per channel, and the
    sizes: {"float_bytes", "int8_bytes", "ratio", "quantized", "max_error"}."""
    qmodel = copy.deepcopy(model)
    float_bytes = int8_bytes = quantized = 0
    max_error = 0.0
    for p in qmodel.parameters():
        float_bytes += p.numel() * FLOAT_BYTES
        if p.dim() < 2:
            int8_bytes += p.numel() * FLOAT_BYTES
            continue
        q, scale = quantize_tensor(p)
        restored = dequantize(q, scale).to(p.dtype)
        max_error = max(max_error, float((restored - p).abs().max()))
        p.copy_(restored)
        int8_bytes += q.numel() + scale.numel() * FLOAT_BYTES
        quantized += p.numel()
    return qmodel, {"float_bytes": float_bytes, "int8_bytes": int8_bytes,
                    "ratio": float_bytes / max(int8_bytes, 1), "quantized": quantized,
                    "max_error": max_error}


def quantization_report(trainer, split: str = "val") -> dict:
    """Size and accuracy of the trained model before and after int8 weights, on a split (the
    test split when it has examples and `split` is "test")."""
    qmodel, sizes = quantize_model(trainer.model)
    before = trainer.evaluate(split)
    original = trainer.model
    trainer.model = qmodel  # evaluate() reads trainer.model: scored exactly like the original
    try:
        after = trainer.evaluate(split)
    finally:
        trainer.model = original
    return {**sizes, "split": split, "float_loss": before["loss"], "float_acc": before["acc"],
            "int8_loss": after["loss"], "int8_acc": after["acc"]}
