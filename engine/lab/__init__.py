"""Experiments around a run, each answering one question: loss surfaces and optimizer walks,
the LR range test, batch sizes, side-by-side comparisons, feature maps and occlusion, the
network view, int8 weights, decoding, a classifier's report. Imports the rooms below it."""
