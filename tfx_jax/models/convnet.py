"""The paper's eight-layer convnet (the Caffe reference net, CaffeNet) and its
small variants for 28-64 px inputs, as flax.linen Modules.

Every preset has the same eight parameterised layers, named as in the paper,
so the params tree's top-level keys are exactly `LAYERS` and "the first n
layers" is a plain slice of that tuple.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from tfx_jax import paper_reference

LAYERS = paper_reference.LAYER_NAMES


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  features: int
  kernel: int
  stride: int = 1
  padding: int | str = 'SAME'
  groups: int = 1
  pool: bool = False  # Max-pool after the ReLU.
  lrn: bool = False  # Local response normalisation after the pool.
  init_std: float | None = 0.01  # Gaussian std; None: He-normal.
  bias: float = 0.0


@dataclasses.dataclass(frozen=True)
class DenseSpec:
  features: int
  dropout: float = 0.5
  init_std: float | None = 0.01
  bias: float = 0.0


@dataclasses.dataclass(frozen=True)
class Preset:
  convs: tuple[ConvSpec, ...]  # conv1..conv5
  dense: tuple[DenseSpec, DenseSpec]  # fc6, fc7
  fc8_init_std: float | None
  pool_window: int  # Max-pool window; stride is always 2.


# PAPER.md's table: Caffe's init (Gaussian 0.01 / 0.005, biases 0 or 1),
# overlapping 3x3/2 pooling, LRN after conv1 and conv2, groups 2 in conv2/4/5.
CAFFENET = Preset(
    convs=(
        ConvSpec(96, 11, stride=4, padding='VALID', pool=True, lrn=True),
        ConvSpec(256, 5, padding=2, groups=2, pool=True, lrn=True, bias=1.0),
        ConvSpec(384, 3, padding=1),
        ConvSpec(384, 3, padding=1, groups=2, bias=1.0),
        ConvSpec(256, 3, padding=1, groups=2, pool=True, bias=1.0),
    ),
    dense=(DenseSpec(4096, init_std=0.005, bias=1.0),
           DenseSpec(4096, init_std=0.005, bias=1.0)),
    fc8_init_std=0.01,
    pool_window=3,
)

# The same eight-layer structure for 28x28 / 32x32 inputs. He-normal init
# instead of Caffe's Gaussian 0.01: without LRN tuning and with 8 narrow layers
# the Caffe init trains far too slowly for a laptop-sized study (docs/paper.md).
SMALL = Preset(
    convs=(
        ConvSpec(32, 3, pool=True, init_std=None),
        ConvSpec(64, 3, pool=True, init_std=None),
        ConvSpec(96, 3, init_std=None),
        ConvSpec(96, 3, init_std=None),
        ConvSpec(64, 3, pool=True, init_std=None),
    ),
    dense=(DenseSpec(256, init_std=None), DenseSpec(256, init_std=None)),
    fc8_init_std=None,
    pool_window=2,
)

# `small` at half width: a third of the time per train step on a 2-core CPU;
# the offline default's net, whose bases train to convergence there
# (docs/solver/).
NARROW = dataclasses.replace(
    SMALL,
    convs=tuple(dataclasses.replace(c, features=c.features // 2) for c in SMALL.convs),
    dense=tuple(dataclasses.replace(d, features=d.features // 2) for d in SMALL.dense),
)

PRESETS = {'caffenet': CAFFENET, 'small': SMALL, 'narrow': NARROW}


def _kernel_init(std: float | None) -> Callable:
  if std is None:
    return nn.initializers.he_normal()
  return nn.initializers.normal(stddev=std)


def max_pool(x: jax.Array, window: int, stride: int = 2) -> jax.Array:
  """Max-pool, VALID, so odd sizes are floored (Caffe's sizes for its net).

  nn.max_pool's values and gradient (each window's to its first maximum), with
  the backward built from masks and shifts instead of XLA's select-and-scatter,
  on every backend: deterministic on GPUs too, and faster on CPU.
  """
  return _max_pool(x, window, stride)


# XLA's select-and-scatter, nn.max_pool's backward, takes 3x (CaffeNet's 3x3/2
# pools) to 10-16x (2x2/2) the time of these masks on XLA CPU
# (benchmarks/pooling.py), and XLA GPU has no deterministic implementation of
# it, so --xla_gpu_deterministic_ops refuses it (flax issue 4233). GPUs and
# TPUs take the masks too, unmeasured. jnp.max's rule would split the gradient
# among ties.
@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
  return nn.max_pool(x, (window, window), strides=(stride, stride), padding='VALID')


def _max_pool_fwd(x, window, stride):
  y = _max_pool(x, window, stride)
  return y, (x, y)


def _max_pool_bwd(window, stride, res, dy):
  x, y = res
  n, h, w, c = x.shape
  oh, ow = y.shape[1:3]
  # Input row stride * b + p is phase p of block b; window offset i of output
  # row o lands in phase i % stride, block o + i // stride. So each offset's
  # share is a shift of dy's shape into one phase, and dx is the phases
  # interleaved by a reshape: no scatter, no interior padding.
  bh, bw = oh + (window - 1) // stride, ow + (window - 1) // stride
  zero = jnp.zeros((), dy.dtype)
  taken, shares = False, []
  for i in range(window):  # Row-major, as select-and-scatter scans a window.
    for j in range(window):
      xs = lax.slice(x, (0, i, j, 0),
                     (n, i + (oh - 1) * stride + 1, j + (ow - 1) * stride + 1, c),
                     (1, stride, stride, 1))
      hit = xs == y
      share = jnp.where(hit & ~taken, dy, zero)  # Only the first maximum.
      taken = taken | hit
      shares.append(((i % stride, j % stride), lax.pad(share, zero, (
          (0, 0, 0), (i // stride, bh - oh - i // stride, 0),
          (j // stride, bw - ow - j // stride, 0), (0, 0, 0)))))
  # Where windows overlap, the shares are added in the order of their output
  # positions, as XLA CPU's select-and-scatter adds them: bitwise its result.
  phases = {}
  for phase, share in reversed(shares):
    phases[phase] = phases[phase] + share if phase in phases else share
  empty = jnp.zeros((n, bh, bw, c), dy.dtype)
  dx = jnp.stack([jnp.stack([phases.get((p, q), empty) for q in range(stride)], axis=3)
                  for p in range(stride)], axis=2).reshape(n, bh * stride, bw * stride, c)
  # Cut to x's size, or pad with the rows and columns no window reached.
  return (lax.pad(dx, zero, ((0, 0, 0), (0, h - bh * stride, 0), (0, w - bw * stride, 0),
                             (0, 0, 0))),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def local_response_norm(x: jax.Array, size: int = 5, alpha: float = 1e-4,
                        beta: float = 0.75, k: float = 1.0) -> jax.Array:
  """Caffe's ACROSS_CHANNELS LRN: x / (k + alpha/size * sum_window x^2)^beta."""
  sq = jax.lax.reduce_window(x * x, 0.0, jax.lax.add, (1, 1, 1, size),
                             (1, 1, 1, 1), 'SAME')
  return x / (k + alpha / size * sq) ** beta


class ConvNet(nn.Module):
  """conv1..conv5, fc6, fc7, fc8 as named submodules; NHWC float input."""
  preset: Preset
  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    for i, spec in enumerate(self.preset.convs, start=1):
      pad = spec.padding
      if isinstance(pad, int):
        pad = ((pad, pad), (pad, pad))
      x = nn.Conv(spec.features, (spec.kernel, spec.kernel),
                  strides=(spec.stride, spec.stride), padding=pad,
                  feature_group_count=spec.groups,
                  kernel_init=_kernel_init(spec.init_std),
                  bias_init=nn.initializers.constant(spec.bias),
                  name=f'conv{i}')(x)
      x = nn.relu(x)
      if spec.pool:
        x = max_pool(x, self.preset.pool_window)
      if spec.lrn:
        x = local_response_norm(x)
    x = x.reshape(x.shape[0], -1)
    for i, spec in enumerate(self.preset.dense, start=6):
      x = nn.Dense(spec.features, kernel_init=_kernel_init(spec.init_std),
                   bias_init=nn.initializers.constant(spec.bias),
                   name=f'fc{i}')(x)
      x = nn.relu(x)
      x = nn.Dropout(spec.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes,
                    kernel_init=_kernel_init(self.preset.fc8_init_std),
                    name='fc8')(x)
