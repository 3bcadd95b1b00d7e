"""A small ILSVRC2012-like manual_dir for tests and benchmarks: the two original tars.

Images are textured (smooth colour fields, oriented gratings and noise, so they
compress like photographs, not like flat colour), of varied sizes around
500x375, JPEG quality 90, in the original layout: ILSVRC2012_img_train.tar of
per-wnid tars, and ILSVRC2012_img_val.tar of ILSVRC2012_val_NNNNNNNN.JPEG.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Sequence

import numpy as np
import PIL.Image

from tfx_jax.data.sources import ilsvrc


def textured_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """uint8 RGB [height, width, 3]."""
  small = rng.integers(0, 256, (max(2, height // 24), max(2, width // 24), 3), np.uint8)
  image = np.asarray(PIL.Image.fromarray(small).resize((width, height), PIL.Image.BICUBIC),
                     np.float32)
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  for _ in range(3):
    fy, fx = rng.uniform(0.02, 0.4, 2)
    wave = np.sin(fy * yy + fx * xx + rng.uniform(0, 2 * np.pi))
    image += rng.uniform(10, 30) * wave[..., None] * rng.uniform(0.3, 1, 3)
  image += rng.normal(0, 12, image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


def jpeg(rng: np.random.Generator, mode: str = 'RGB', size=None) -> bytes:
  """A textured JPEG of about 500x375 (or `size`, (w, h)), quality 90."""
  w, h = size or (int(rng.integers(400, 600)), int(rng.integers(300, 450)))
  image = PIL.Image.fromarray(textured_image(rng, h, w))
  if mode != 'RGB':
    image = image.convert(mode)  # 'L' (greyscale) or 'CMYK', as some of ImageNet's are.
  buf = io.BytesIO()
  image.save(buf, 'JPEG', quality=90)
  return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size, info.mtime, info.mode = len(data), 0, 0o644
  tar.addfile(info, io.BytesIO(data))


def validation_numbers(classes: Sequence[int], per_class: int) -> list[int]:
  """The first `per_class` validation file numbers (1-based) of each class."""
  wanted = {ilsvrc.wnids()[c]: per_class for c in classes}
  numbers = []
  for k, wnid in enumerate(ilsvrc.validation_wnids()):
    if wanted.get(wnid, 0):
      wanted[wnid] -= 1
      numbers.append(k + 1)
  return numbers


def write_manual_dir(path: str, classes: Sequence[int], train_per_class: int,
                     validation_per_class: int, *, seed: int = 0,
                     odd_modes: bool = True) -> dict:
  """Writes the two tars into `path`; returns {'train': {name: label}, 'validation': ...}.

  With odd_modes, one training image is greyscale and one CMYK (ImageNet has both).
  """
  os.makedirs(path, exist_ok=True)
  rng = np.random.default_rng(seed)
  truth = {'train': {}, 'validation': {}}
  modes = ['L', 'CMYK'] if odd_modes else []
  with tarfile.open(os.path.join(path, ilsvrc.TRAIN_TAR), 'w', format=tarfile.GNU_FORMAT) as outer:
    for c in classes:
      wnid = ilsvrc.wnids()[c]
      inner_buf = io.BytesIO()
      with tarfile.open(fileobj=inner_buf, mode='w', format=tarfile.GNU_FORMAT) as inner:
        for i in range(train_per_class):
          name = f'{wnid}_{1000 + i}.JPEG'
          _add(inner, name, jpeg(rng, modes.pop() if modes else 'RGB'))
          truth['train'][f'{wnid}/{name}'] = c
      _add(outer, f'{wnid}.tar', inner_buf.getvalue())
  with tarfile.open(os.path.join(path, ilsvrc.VALIDATION_TAR), 'w',
                    format=tarfile.GNU_FORMAT) as tar:
    for number in validation_numbers(classes, validation_per_class):
      name = f'ILSVRC2012_val_{number:08d}.JPEG'
      _add(tar, name, jpeg(rng))
      truth['validation'][name] = ilsvrc.wnids().index(ilsvrc.validation_wnids()[number - 1])
  return truth
