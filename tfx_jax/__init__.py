"""tfx_jax: how transferable are features in deep neural networks? (Yosinski et al. 2014) in JAX.

A package per layer of the import graph. Data flows one way: config -> run
specs (grid) -> data, model, optimizer -> training loop -> checkpoints and
metrics -> results -> report.

From Python (a notebook): `tfx_jax.Study(workdir, config, model=..., data=...)`
and its `run()`, `tfx_jax.load(workdir)`, `tfx_jax.data.arrays(...)`,
`tfx_jax.errors.UserError`. They are imported on first use, so that
`import tfx_jax` stays light (no JAX) for the CLIs and the report.
"""

import importlib

# The floors of the house, top first: a module imports only from its own
# package and from lower floors (tests/test_layering.py holds the code to it).
# Names on one floor are siblings and do not import each other; a top-level
# module is a room of its own. The report never imports JAX.
LAYERS = (
    ('main', 'prepare', 'slurm', 'study'),  # the CLIs; the front door from Python
    ('report',),  # results.csv and metrics -> figures, tables, findings
    ('grid',),  # the paper's runs, checks, runner, workdir, results
    ('analysis',),  # CKA, probes and scores of trained networks
    ('training',),  # train state, steps, loop, checkpoints, metrics
    ('data', 'models'),  # datasets, splits, pipelines | networks, surgery, solver
    ('config',),  # every field and its default
    ('files', 'progress', 'paper_reference'),
    ('errors',),  # one line and exit 2 for bad input; our warnings
)

# The front door's names: attribute -> (module, its attribute; None: the module).
FRONT_DOOR = {'Study': ('tfx_jax.study', 'Study'), 'load': ('tfx_jax.report.frames', 'load'),
              'Results': ('tfx_jax.report.frames', 'Results'), 'data': ('tfx_jax.data', None),
              'errors': ('tfx_jax.errors', None)}


def __getattr__(name: str):
  if name not in FRONT_DOOR:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  module, attr = FRONT_DOOR[name]
  loaded = importlib.import_module(module)
  return loaded if attr is None else getattr(loaded, attr)


def __dir__():
  return sorted({*globals(), *FRONT_DOOR})
