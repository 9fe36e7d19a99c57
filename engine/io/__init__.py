"""Outside formats: a standalone PyTorch training script exported from the engine's own code,
and TensorFlow Playground links read into a spec. Imports the rooms below it."""
