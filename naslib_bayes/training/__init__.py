"""Training loops: the one-shot search trainer and the from-scratch trainer of ``naslib-bayes train``."""
