"""Input-level shifts: eleven image corruptions, each at severities 1-5.

They follow CIFAR-10-C (Hendrycks and Dietterich, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations", ICLR 2019; code:
hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py) where it defines
the corruption: gaussian_noise, impulse_noise, gaussian_blur, motion_blur,
contrast, brightness, elastic and fog, with its parameter tables; its images
are 32x32, nearly Fashion-MNIST's 28x28, and Lee et al. (ICLR 2023) took their
input-level shifts from it. rotate and shear follow MNIST-C (Mu and Gilmer,
"MNIST-C: A Robustness Benchmark for Computer Vision", 2019; code:
google-research/mnist-c, corruptions.py) with its tables; invert is MNIST-C's
`inverse` at severity 5 and a partial inversion below. The code is ours, on
NumPy, SciPy and OpenCV (theirs needs scikit-image and ImageMagick).

Adapted to any H x W x C image: lengths of CIFAR-10-C's tables (blur sigmas,
motion-blur radius and sigma, elastic sizes) are scaled by min(H, W) / 32; the
fog's fractal is drawn at the next power of two of the longer side. docs/shifts.md
lists every parameter. A corruption is a function (x, severity, rng) -> x of
float images in [0, 1], shape [H, W, C]; `shifts.corrupt` feeds it uint8 images
and a generator drawn per example.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
from scipy import ndimage

CIFAR_SIDE = 32  # The side CIFAR-10-C's lengths are given for.

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def _scale(x: np.ndarray) -> float:
  return min(x.shape[:2]) / CIFAR_SIDE


def _warp(x: np.ndarray, inverse: np.ndarray, border: int) -> np.ndarray:
  """x resampled bilinearly at inverse @ (col, row, 1) for each output pixel."""
  h, w, _ = x.shape
  flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
  return np.stack([cv2.warpAffine(np.ascontiguousarray(x[..., c]), inverse, (w, h),
                                  flags=flags, borderMode=border, borderValue=0)
                   for c in range(x.shape[2])], axis=-1)


def _about_centre(matrix: np.ndarray, x: np.ndarray) -> np.ndarray:
  """The 2x3 inverse map of `matrix` (2x2, on (col, row)) that keeps the
  image's centre in place, as MNIST-C's translation (13.5, 13.5 at 28x28) does."""
  h, w = x.shape[:2]
  centre = np.array([(w - 1) / 2, (h - 1) / 2])
  return np.hstack([matrix, (centre - matrix @ centre)[:, None]]).astype(np.float32)


# ---------------------------------------------------------------- noise


def gaussian_noise(x, severity, rng):
  """CIFAR-10-C: additive Gaussian noise of standard deviation c (of the 0..1 range)."""
  c = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
  return x + rng.normal(size=x.shape) * c


def impulse_noise(x, severity, rng):
  """CIFAR-10-C (scikit-image's 's&p'): a fraction c of the values set to 0 or
  1, half each."""
  c = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]
  u = rng.random(x.shape)
  return np.where(u < c / 2, 1.0, np.where(u < c, 0.0, x))


# ---------------------------------------------------------------- blur


def gaussian_blur(x, severity, rng):
  """CIFAR-10-C: a Gaussian filter of sigma c pixels at 32x32 (edges repeated)."""
  del rng
  c = [0.4, 0.6, 0.7, 0.8, 1.0][severity - 1] * _scale(x)
  return ndimage.gaussian_filter(x, (c, c, 0), mode='nearest', truncate=4.0)


def motion_kernel(radius: float, sigma: float, angle: float) -> np.ndarray:
  """ImageMagick's -motion-blur kernel (CIFAR-10-C calls it through Wand): the
  half-Gaussian weights exp(-i^2 / 2 sigma^2), i = 0..2 radius, laid along a
  line at `angle` degrees from the pixel, so the image smears one way."""
  width = 2 * int(round(radius)) + 1
  weights = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
  theta = math.radians(angle)
  dy = np.rint(np.arange(width) * math.sin(theta)).astype(int)
  dx = np.rint(np.arange(width) * math.cos(theta)).astype(int)
  kernel = np.zeros((2 * width + 1, 2 * width + 1))
  np.add.at(kernel, (width + dy, width + dx), weights)
  return kernel / kernel.sum()


def motion_blur(x, severity, rng):
  """CIFAR-10-C: motion blur of (radius, sigma) pixels at 32x32, at an angle
  drawn uniformly in [-45, 45] degrees; edges repeated. CIFAR-10-C's severity
  4, (8, 2), blurs as its 3, (6, 2), does (the radius only truncates the
  kernel), so ours has sigma 2.25 there."""
  radius, sigma = [(6, 1), (6, 1.5), (6, 2), (8, 2.25), (9, 2.5)][severity - 1]
  angle = rng.uniform(-45, 45)
  kernel = motion_kernel(radius * _scale(x), sigma * _scale(x), angle).astype(np.float32)
  return np.stack([cv2.filter2D(np.ascontiguousarray(x[..., c]), -1, kernel,
                                borderType=cv2.BORDER_REPLICATE)
                   for c in range(x.shape[2])], axis=-1)


# ---------------------------------------------------------------- photometric


def contrast(x, severity, rng):
  """CIFAR-10-C: each channel pulled towards its mean, keeping a fraction c."""
  del rng
  c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
  means = x.mean(axis=(0, 1), keepdims=True)
  return (x - means) * c + means


def brightness(x, severity, rng):
  """CIFAR-10-C: c added to HSV's value, hue and saturation kept. As V is the
  largest channel, that scales each pixel by V'/V (a black pixel becomes grey
  V'); on a grey image it is x + c."""
  del rng
  c = [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]
  value = x.max(axis=-1, keepdims=True)
  brighter = np.minimum(value + c, 1.0)
  return np.where(value > 0, x * brighter / np.maximum(value, 1e-12), brighter)


def invert(x, severity, rng):
  """MNIST-C's `inverse` (1 - x) at severity 5; below it, a blend that inverts
  with weight a: (1 - a) x + a (1 - x), a = 0.8..1. Ours: MNIST-C has no
  severities for it."""
  del rng
  a = [0.8, 0.85, 0.9, 0.95, 1.0][severity - 1]
  return (1 - a) * x + a * (1 - x)


def plasma_fractal(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
  """A size x size height map in [0, 1] by the diamond-square algorithm, as
  CIFAR-10-C's `plasma_fractal` (after FLHerne/mapgen); size a power of two.
  The roughness shrinks by `decay` at each halving of the step."""
  out = np.zeros((size, size))
  step, wibble = size, 100.0

  def wibbled_mean(total):
    return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

  while step >= 2:
    half = step // 2
    corners = out[0:size:step, 0:size:step]  # Squares: their centres.
    total = corners + np.roll(corners, -1, axis=0)
    total = total + np.roll(total, -1, axis=1)
    out[half:size:step, half:size:step] = wibbled_mean(total)
    centres = out[half:size:step, half:size:step]  # Diamonds: edge midpoints.
    corners = out[0:size:step, 0:size:step]
    total = (centres + np.roll(centres, 1, axis=0)) + (corners + np.roll(corners, -1, axis=1))
    out[0:size:step, half:size:step] = wibbled_mean(total)
    total = (centres + np.roll(centres, 1, axis=1)) + (corners + np.roll(corners, -1, axis=0))
    out[half:size:step, 0:size:step] = wibbled_mean(total)
    step, wibble = half, wibble / decay
  out -= out.min()
  return out / out.max()


def fog(x, severity, rng):
  """CIFAR-10-C: a plasma fractal of roughness decay d added with weight c,
  then rescaled so the image's maximum stays where it was: x' = (x + c f) *
  max / (max + c)."""
  c, decay = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]
  h, w = x.shape[:2]
  size = 1 << max(1, (max(h, w) - 1).bit_length())
  top = x.max()
  layer = plasma_fractal(size, decay, rng)[:h, :w, None]
  return (x + c * layer) * top / (top + c)


# ---------------------------------------------------------------- geometric


def rotate(x, severity, rng):
  """MNIST-C: a rotation by c radians (0.2 = 11.5 degrees .. 1 = 57), either
  way at random, about the centre; bilinear, zeros outside."""
  c = [0.2, 0.4, 0.6, 0.8, 1.0][severity - 1] * rng.choice([-1, 1])
  matrix = np.array([[math.cos(c), -math.sin(c)], [math.sin(c), math.cos(c)]])
  return _warp(x, _about_centre(matrix, x), cv2.BORDER_CONSTANT)


def shear(x, severity, rng):
  """MNIST-C: scikit-image's (2018) AffineTransform(shear=c) about the centre,
  either way at random: the source pixel of (col, row) is (col - sin(c) row,
  cos(c) row); bilinear, zeros outside."""
  c = [0.2, 0.4, 0.6, 0.8, 1.0][severity - 1] * rng.choice([-1, 1])
  matrix = np.array([[1.0, -math.sin(c)], [0.0, math.cos(c)]])
  return _warp(x, _about_centre(matrix, x), cv2.BORDER_CONSTANT)


def elastic(x, severity, rng):
  """CIFAR-10-C's elastic_transform (after Simard et al. 2003): a random affine
  map moving three points by up to a pixels, then a displacement field of
  uniform noise smoothed by a Gaussian of sigma s and scaled by alpha; edges
  reflected. CIFAR-10-C's table is not ordered (its severity 1 moves pixels
  most), so ours takes its severity 3, (alpha, s, a) = (0.08, 0.06, 0.06) of
  the side, and scales the displacements (alpha, a) by severity / 3."""
  alpha, sigma, jitter = (0.08 * severity / 3, 0.06, 0.06 * severity / 3)
  h, w = x.shape[:2]
  side = min(h, w)
  centre = np.float32([w // 2, h // 2])
  third = side // 3
  points = np.float32([centre + third, [centre[0] + third, centre[1] - third],
                       centre - third])
  # Draws of unit size, scaled: an example moves the same way at every severity.
  moved = points + rng.uniform(-1, 1, points.shape).astype(np.float32) * jitter * side
  forward = cv2.getAffineTransform(points, moved)  # Forward, as CIFAR-10-C's warpAffine.
  inverse = cv2.invertAffineTransform(forward)
  field = rng.uniform(-1, 1, (2, h, w)).astype(np.float32)
  dx, dy = (ndimage.gaussian_filter(f, sigma * side, mode='reflect', truncate=3)
            * (alpha * side) for f in field)
  rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
  # The displacement field samples the affine-warped image at (col + dx, row + dy):
  # composed into one map of the original image.
  u, v = cols + dx, rows + dy
  map_x = inverse[0, 0] * u + inverse[0, 1] * v + inverse[0, 2]
  map_y = inverse[1, 0] * u + inverse[1, 1] * v + inverse[1, 2]
  map_x, map_y = map_x.astype(np.float32), map_y.astype(np.float32)
  return np.stack([cv2.remap(np.ascontiguousarray(x[..., c]), map_x, map_y, cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101)
                   for c in range(x.shape[2])], axis=-1)


CORRUPTIONS: dict[str, Corruption] = {
    'gaussian_noise': gaussian_noise,
    'impulse_noise': impulse_noise,
    'gaussian_blur': gaussian_blur,
    'motion_blur': motion_blur,
    'contrast': contrast,
    'brightness': brightness,
    'invert': invert,
    'rotate': rotate,
    'shear': shear,
    'elastic': elastic,
    'fog': fog,
}
SEVERITIES = (1, 2, 3, 4, 5)
