"""Datasets, each one registry entry: 2-D toys, digits, moving shapes, sequences, text and
uploaded tables, split, scaled and seeded from the spec. Imports only engine.core."""
