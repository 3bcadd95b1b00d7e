"""One run's training: the train state and the data-parallel train and eval
steps (`steps`), the loop that trains, evaluates and checkpoints one run
(`loop`), Orbax checkpoints (`checkpoints`), metrics.jsonl and TensorBoard
(`metrics`, `tensorboard`), SIGTERM handling (`preemption`) and glibc's
allocator for XLA CPU (`malloc`).

May import data, models and the floors below (in practice surgery, files,
errors, progress); never the grid or the report (tfx_jax.LAYERS).
"""
