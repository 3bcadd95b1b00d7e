"""Where images come from, read by example index without TensorFlow:
Fashion-MNIST's IDX files (`fashion_mnist`), UCI's digits from scikit-learn
(`digits`), TFDS array_record (`tfds_source`), tfx_jax's own JPEG shards
(`jpeg_shards`); and how those shards are written: ImageNet from its original
tars (`ilsvrc`, `prepare`; `synthetic_imagenet` for tests and benchmarks) and
image folders (`folders`).

Part of the data room: may import the rest of tfx_jax.data that does not
import it back (subsets, images) and the floors below (tfx_jax.LAYERS).
"""
