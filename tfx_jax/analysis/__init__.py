"""What is being transferred: per-layer similarity (linear CKA, biased and
unbiased from minibatches), linear probes and transferability scores (LogME,
H-score) of a grid's trained networks, and the rank agreement (Spearman,
Kendall) of those numbers with the transfer accuracies (`measures`).

May import training, data, models, config and the floors below; never the grid
or the report (tfx_jax.LAYERS).
"""
