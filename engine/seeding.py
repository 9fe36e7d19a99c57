"""One seeded torch.Generator per purpose of a run.

Separate streams keep the experiment comparable when one part changes: adding dropout must not
reshuffle the data, and a different batch size must not change the initial weights.
"""
import torch

STREAMS = {"data": 0, "init": 1, "batches": 2, "dropout": 3}


def generator(seed: int, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * len(STREAMS) + STREAMS[stream])
