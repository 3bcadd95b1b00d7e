"""The data: the datasets tfx_jax knows (`datasets`: presets, `digits`,
`tfds:NAME`, `folder:NAME`), the paper's class halves (`splits`), the tasks
A and B of a grid, on one dataset or two (`tasks`), stratified subsets
(`subsets`), one image's conversion (`images`), grain pipelines over them
(`input_pipeline`), distribution shifts of a dataset (`shifts`; its image
corruptions in `corruptions`), and the sources and their preparation
(`sources/`).

May import the floors below it (config, errors, files, progress,
paper_reference); never models, its sibling, nor training, the grid or the
report (tfx_jax.LAYERS).
"""


def __getattr__(name: str):
  """`tfx_jax.data.arrays`: in-memory arrays as a dataset (sources/in_memory.py),
  imported on first use."""
  if name == 'arrays':
    from tfx_jax.data.sources import in_memory  # pylint: disable=g-import-not-at-top
    return in_memory.arrays
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
