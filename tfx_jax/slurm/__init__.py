"""A grid as SLURM jobs (`python -m tfx_jax.slurm`): which jobs the unfinished
runs need (`plan`), their batch scripts and sbatch commands (`scripts`), and
submitting and following them (`submit`).

A CLI on the top floor: imports grid, report and below, never main
(tfx_jax.LAYERS).
"""
