"""Performance predictors (surrogates) used by model-based optimizers."""
