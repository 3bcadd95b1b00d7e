"""A CIFAR-style ResNet-18 with BatchNorm, for 28-64 px inputs.

As flax's examples/imagenet ResNet18 (module names `conv_init`, `bn_init`,
`ResNetBlock_0..7`, each block `Conv_0`, `BatchNorm_0`, ...), with a 3x3
stride-1 stem and no max-pool, as for CIFAR (He et al. 2016, section 4.2).
Its transferable groups are the stem, then the eight blocks (`GROUPS`); the
head (`Dense_0`) is never transferred.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

GROUPS = ('conv_init+bn_init', *(f'ResNetBlock_{i}' for i in range(8)))
STAGES = (2, 2, 2, 2)  # Blocks per stage; widths double and strides halve.


class ResNetBlock(nn.Module):
  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5)
    residual = x
    y = nn.Conv(self.features, (3, 3), (self.strides, self.strides),
                use_bias=False)(x)
    y = nn.relu(norm()(y))
    y = nn.Conv(self.features, (3, 3), use_bias=False)(y)
    y = norm(scale_init=nn.initializers.zeros)(y)
    if residual.shape != y.shape:
      residual = nn.Conv(self.features, (1, 1), (self.strides, self.strides),
                         use_bias=False, name='conv_proj')(residual)
      residual = norm(name='norm_proj')(residual)
    return nn.relu(residual + y)


class ResNet18(nn.Module):
  """NHWC float input; `width` is the first stage's channels (64 in the paper)."""
  num_classes: int
  width: int = 64

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = nn.Conv(self.width, (3, 3), use_bias=False, name='conv_init')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     name='bn_init')(x)
    x = nn.relu(x)
    for stage, blocks in enumerate(STAGES):
      for block in range(blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = ResNetBlock(self.width * 2 ** stage, strides)(x, train=train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)
