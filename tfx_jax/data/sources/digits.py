"""UCI's handwritten digits (1,797 images of 8x8, 10 classes) as scikit-learn's
wheel ships them: a second real image dataset that needs no download.

Its 0..16 grey levels are scaled to 0..255 and the images upsampled to 28x28
(bilinear), the size of Fashion-MNIST, so the two share a network. It has no
test split: `subsets.holdout` keeps 20% of each class, always the same, for
'test'.
"""

from __future__ import annotations

import functools

import numpy as np
import PIL.Image

from tfx_jax.data import subsets

SIZE = 28
EVAL_FRACTION = 0.2
NUM_CLASSES = 10


@functools.lru_cache(maxsize=1)
def _all() -> tuple[np.ndarray, np.ndarray]:
  from sklearn import datasets  # pylint: disable=g-import-not-at-top  # Slow to import.
  digits = datasets.load_digits()
  grey = np.round(digits.images * (255 / 16)).astype(np.uint8)
  images = np.stack([np.asarray(PIL.Image.fromarray(im).resize((SIZE, SIZE),
                                                               PIL.Image.BILINEAR))
                     for im in grey])[..., None]
  return images, digits.target.astype(np.int32)


def load(split: str) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, 28, 28, 1], labels int32 [N]) of 'train' or 'test'."""
  images, labels = _all()
  held = subsets.holdout(labels, EVAL_FRACTION)
  keep = held if split == 'test' else ~held
  return images[keep], labels[keep]
