"""What a convolutional net has learned, as numbers a page can draw: each convolution's kernels,
and the maps every image layer makes of one input.

Both read the model without changing it: no gradient, no weight, no running statistic, no random
stream (dropout is off in eval mode, and the model's mode is put back). A caller whose model
trains in another thread holds that thread's lock meanwhile (ui/runner.py: Run.feature_maps).
"""
from __future__ import annotations

import torch
from torch import nn

MAX_FILTERS = 16  # kernels shown per layer
MAX_MAPS = 8      # channels shown per layer


def _conv(module: nn.Module) -> nn.Conv2d | None:
    return next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)


@torch.no_grad()
def conv_filters(model: nn.Module, max_filters: int = MAX_FILTERS) -> list[dict]:
    """Per convolutional layer: its name, how many filters it has, how many input channels each
    reads, and the first `max_filters` kernels as k x k lists. A kernel over several input
    channels is shown as its mean over them (`averaged`): a picture of where it looks, not of
    every weight."""
    out = []
    for name, module in model.named_children():
        conv = _conv(module)
        if conv is None:
            continue
        w = conv.weight.detach().float().cpu()  # (filters, in_channels / groups, k, k)
        out.append({"name": name, "filters": conv.out_channels, "in_channels": w.shape[1],
                    "averaged": w.shape[1] > 1,
                    "kernels": w[:max_filters].mean(1).tolist()})
    return out


@torch.no_grad()
def feature_maps(model: nn.Module, image: torch.Tensor, max_maps: int = MAX_MAPS) -> list[dict]:
    """One input image (channels, height, width) through the net in eval mode: the input and
    every layer whose output is still an image, each with its first `max_maps` channels as
    height x width lists, and the network's output for the image (`scores`)."""
    was_training = model.training
    model.eval()
    try:
        h = image[None]
        maps = [{"name": "input", "channels": image.shape[0],
                 "maps": image[:max_maps].float().cpu().tolist()}]
        for name, module in model.named_children():
            h = module(h)
            if h.dim() == 4:
                maps.append({"name": name, "channels": h.shape[1],
                             "maps": h[0, :max_maps].float().cpu().tolist()})
        return maps + [{"name": "scores", "values": h[0].float().cpu().tolist()}]
    finally:
        model.train(was_training)


def has_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())
