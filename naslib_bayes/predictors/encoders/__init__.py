"""Encoders feeding the deep kernel: architectures (DAG GRU) and datasets (Set Transformer)."""
