"""One seeded torch.Generator per purpose of a run (defined in portable.py, which the exported
script copies).

Separate streams keep the experiment comparable when one part changes: adding dropout must not
reshuffle the data, and a different batch size must not change the initial weights.
"""
from .portable import STREAMS, generator

__all__ = ["STREAMS", "generator"]
