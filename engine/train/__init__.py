"""Training one run: the Trainer, its callbacks (regularization, clipping, early stopping),
the diagnostics hooks, the health verdict and its fixes, History, the phases trained before a run
(pretraining, a distillation teacher) and curvature (the sharpness the verdict reads).
Imports engine.core, engine.data and engine.nn."""
