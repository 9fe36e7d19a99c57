"""The ground floor: errors, bounded reading of outside input, one registry per kind of
choice, the experiment spec (JSON <-> dataclasses, validated), seeding, and `portable`, the torch
pieces shared with the exported script. Imports nothing else of the engine."""
