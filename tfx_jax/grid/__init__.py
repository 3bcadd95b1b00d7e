"""The paper's grid of runs: the experiments as run specs (`experiments`),
every check of a job before anything is written (`checks`; each field's own
range, before JAX is imported: `fields`), the runner that
trains the grid with bases shared between transplants (`runner`), the
workdir's layout (`workdir`), the result records behind result.json and
results.csv (`results`), the grid as one pinned process a core
(`local_shards`), and one job per workdir and sweep shard (`lock`).

May import training, data, models, config and the bottom floor; never the
report (tfx_jax.LAYERS).
"""
