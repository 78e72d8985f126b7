"""Performance predictors (surrogates) for model-based optimizers: the TNAS deep-kernel GP, its
encoders, meta-training, a NASLib predictor, and the BANANAS MLP ensemble.

Heavy imports (gpytorch, torch-geometric) live in the submodules, so importing this package
is cheap.
"""
