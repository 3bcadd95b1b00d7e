"""The report of a workdir: paired comparisons of runs (`comparisons`), the six
findings' rules (`findings`), the findings over training time (`over_time`),
Figures 2 and 3 (`figures`), Table 1, generality and findings.md (`tables`),
and W/report/ written whole (`writer`; `python -m tfx_jax.report`).

May import every floor below it (tfx_jax.LAYERS) but never JAX, directly or
through another module: in practice the grid's results and experiments'
labels, files, errors and paper_reference.
"""
