"""The paper's eight-layer convnet (the Caffe reference net, CaffeNet) and its
small variants for 28-64 px inputs, as flax.linen Modules.

Every preset has the same eight parameterised layers, named as in the paper,
so the params tree's top-level keys are exactly `LAYERS` and "the first n
layers" is a plain slice of that tuple.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

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


def max_pool(x: jax.Array, window: int) -> jax.Array:
  """Max-pool with stride 2, flooring odd sizes (Caffe's sizes for its net).

  On CPU, 2x2 windows take _max_pool_2x2's backward; GPUs and TPUs keep XLA's.
  """
  if window == 2 and jax.default_backend() == 'cpu':
    n, h, w, c = x.shape
    return _max_pool_2x2(x[:, :h // 2 * 2, :w // 2 * 2])
  return nn.max_pool(x, (window, window), strides=(2, 2), padding='VALID')


# Non-overlapping 2x2 pooling with a hand-written backward over the reshaped
# windows, which XLA CPU compiles far better than reduce_window's
# select_and_scatter (full step 108 -> 67 ms, docs/benchmarks.md). The gradient
# goes to the first maximum of each window, as nn.max_pool's does (jnp.max's
# own rule splits it among ties and costs a compare, a count and a divide over
# the full-size input).
@jax.custom_vjp
def _max_pool_2x2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (2, 2), strides=(2, 2))


def _max_pool_2x2_fwd(x):
  y = _max_pool_2x2(x)
  return y, (x, y)


def _max_pool_2x2_bwd(res, dy):
  x, y = res
  n, h, w, c = x.shape
  x = x.reshape(n, h // 2, 2, w // 2, 2, c)
  y, dy = y[:, :, None, :, None], dy[:, :, None, :, None]
  # Window order (0,0), (0,1), (1,0), (1,1); `taken` marks a maximum seen earlier.
  grads, taken = [], False
  for i in (0, 1):
    row = []
    for j in (0, 1):
      hit = x[:, :, i:i + 1, :, j:j + 1] == y
      row.append(jnp.where(hit & ~taken, dy, 0.0))
      taken = taken | hit
    grads.append(jnp.concatenate(row, axis=4))
  return (jnp.concatenate(grads, axis=2).reshape(n, h, w, c),)


_max_pool_2x2.defvjp(_max_pool_2x2_fwd, _max_pool_2x2_bwd)


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
