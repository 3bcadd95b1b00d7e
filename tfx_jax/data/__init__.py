"""The data: the datasets tfx_jax knows (`datasets`), the paper's class halves
(`splits`), grain pipelines over them (`input_pipeline`), their sources
(Fashion-MNIST from Debian's files, TFDS array_record, tfx_jax's own JPEG
shards) and ImageNet's preparation from the original tars (`ilsvrc`,
`prepare`, `synthetic_imagenet` for tests and benchmarks).

May import the floors below it (config, errors, files, progress,
paper_reference); never models, its sibling, nor training, the grid or the
report (tfx_jax.LAYERS).
"""
