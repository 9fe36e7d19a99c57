"""The model: the layer families (dense, convolutional, recurrent) registered as layers, the
model built from a spec, and describe() (shapes, parameters, multiply-adds, receptive field).
Imports only engine.core."""
