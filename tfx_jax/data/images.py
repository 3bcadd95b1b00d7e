"""Images one at a time: conversion to the size and channels a model takes,
and the per-channel statistics of a sample of them."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import PIL.Image

STATS_SAMPLE = 10_000  # Images the mean and std of a dataset are computed from.


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


def stats_sample(n: int) -> np.ndarray:
  """Up to STATS_SAMPLE evenly spaced positions of n."""
  return np.unique(np.linspace(0, n - 1, min(n, STATS_SAMPLE)).astype(int))


def channel_stats(images: Iterable[np.ndarray]) -> tuple[list[float], list[float]]:
  """Per-channel mean and std (0..255, 3 decimals) over every pixel of `images`."""
  total = total_sq = 0.0
  count = 0
  for image in images:
    image = image.astype(np.float64)
    total = total + image.sum((0, 1))
    total_sq = total_sq + (image ** 2).sum((0, 1))
    count += image.shape[0] * image.shape[1]
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-6))
  return [round(float(m), 3) for m in mean], [round(float(v), 3) for v in std]
