"""What a convolutional net has learned, as numbers a page can draw: each convolution's kernels,
and the maps every image layer makes of one input.

Both read the model without changing it: no gradient, no weight, no running statistic, no random
stream (dropout is off in eval mode, and the model's mode is put back). A caller whose model
trains in another thread holds that thread's lock meanwhile (serve/runs.py: Run.feature_maps).
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


@torch.no_grad()
def occlusion_map(model: nn.Module, image: torch.Tensor, target: int, patch: int = 3,
                  fill: float | torch.Tensor = 0.0, chunk: int = 256) -> list[list[float]]:
    """How much the probability of class `target` falls when a patch x patch square of the
    image is covered with `fill`, for the square centred on every pixel: high where the net
    looks. `fill` is a value or an image of values: blank canvas is the model input of a raw 0
    pixel, (0 - shift) / scale per pixel after standardising. All placements go through the
    net in batches of `chunk`, in eval mode (the model's mode is put back)."""
    if patch < 1 or patch % 2 == 0:
        raise ValueError(f"patch={patch}: an odd size (1, 3, 5, ...) has a centre pixel")
    _, height, width = image.shape
    half = patch // 2
    fill = torch.as_tensor(fill, dtype=image.dtype, device=image.device).expand_as(image)
    rows = torch.arange(height)[:, None]
    cols = torch.arange(width)[None, :]
    covered = []
    for r in range(height):
        for c in range(width):
            mask = ((rows - r).abs() <= half) & ((cols - c).abs() <= half)
            covered.append(torch.where(mask.to(image.device), fill, image))
    was_training = model.training
    model.eval()
    try:
        base = _probability(model(image[None]), target)
        covered = torch.stack(covered)
        drop = base - torch.cat([_probability(model(covered[i:i + chunk]), target)
                                 for i in range(0, len(covered), chunk)])
    finally:
        model.train(was_training)
    return drop.reshape(height, width).float().cpu().tolist()


def _probability(out: torch.Tensor, target: int) -> torch.Tensor:
    """The probability of class `target` from the net's outputs (one logit: class 1's)."""
    if out.shape[1] == 1:
        p = torch.sigmoid(out[:, 0])
        return p if target == 1 else 1 - p
    return torch.softmax(out, 1)[:, target]


def has_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def inspect_cnn(model: nn.Module, data, split: str, index: int, patch: int,
                chunk: int = 256) -> tuple:
    """What the page's Filters view draws for example `index` of a split of `data` (a Dataset):
    (conv_filters, feature_maps, occlusion map for the example's label). Covered pixels become
    blank canvas (Dataset.blank). chunk: images per forward
    pass (Trainer.eval_chunk keeps a wide net's memory bounded)."""
    image = getattr(data, f"x_{split}")[index]
    label = int(getattr(data, f"y_{split}")[index])
    return (conv_filters(model), feature_maps(model, image),
            occlusion_map(model, image, label, patch, data.blank, chunk))
