"""One image at a time: conversion to the size and channels a model takes."""

from __future__ import annotations

import numpy as np
import PIL.Image


def fit(image: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
  """uint8 [H, W, C] image -> [size, channels]: bilinear resize, grey to RGB by
  copying, RGB to grey by luma (PIL's 'L')."""
  if image.ndim == 2:
    image = image[..., None]
  if image.shape == (*size, channels):
    return image
  if image.shape[-1] == 4:  # A TFDS image with alpha: dropped.
    image = image[..., :3]
  pil = PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  if image.shape[:2] != tuple(size):
    pil = pil.resize((size[1], size[0]), PIL.Image.BILINEAR)
  if channels != image.shape[-1]:
    pil = pil.convert('L' if channels == 1 else 'RGB')
  return np.asarray(pil).reshape(*size, channels)
