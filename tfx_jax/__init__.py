"""tfx_jax: how transferable are features in deep neural networks? (Yosinski et al. 2014) in JAX.

A package per layer of the import graph. Data flows one way: config -> run
specs (grid) -> data, model, optimizer -> training loop -> checkpoints and
metrics -> results -> report.
"""

# The floors of the house, top first: a module imports only from its own
# package and from lower floors (tests/test_layering.py holds the code to it).
# Names on one floor are siblings and do not import each other; a top-level
# module is a room of its own. The report never imports JAX.
LAYERS = (
    ('main', 'prepare', 'slurm'),  # the CLIs
    ('report',),  # results.csv and metrics -> figures, tables, findings
    ('grid',),  # the paper's runs, checks, runner, workdir, results
    ('analysis',),  # CKA, probes and scores of trained networks
    ('training',),  # train state, steps, loop, checkpoints, metrics
    ('data', 'models'),  # datasets, splits, pipelines | networks, surgery, solver
    ('config',),  # every field and its default
    ('files', 'progress', 'paper_reference'),
    ('errors',),  # one line and exit 2 for bad input; our warnings
)
