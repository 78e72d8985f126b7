"""The DARTS search space: ops, genotypes, the one-shot search network and the evaluation network."""
