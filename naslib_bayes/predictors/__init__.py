"""Surrogate models: the TNAS deep-kernel GP, its encoders, meta-training and a NASLib predictor.

Heavy imports (gpytorch, torch-geometric) live in the submodules, so importing this package
is cheap.
"""
