"""A user's ResNet, written the way flax's examples/imagenet writes its ResNet18
(not imported from it): BatchNorm with axis_name='batch', as written for pmap,
modules named conv_init, bn_init and ResNetBlock_k, and a factory that is a
functools.partial of the module class taking num_classes by keyword."""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp


class ResNetBlock(nn.Module):
  filters: int
  conv: Any
  norm: Any
  act: Callable
  strides: tuple = (1, 1)

  @nn.compact
  def __call__(self, x):
    shortcut = x
    x = self.act(self.norm()(self.conv(self.filters, (3, 3), self.strides)(x)))
    x = self.norm(scale_init=nn.initializers.zeros_init())(self.conv(self.filters, (3, 3))(x))
    if shortcut.shape != x.shape:
      shortcut = self.conv(self.filters, (1, 1), self.strides, name='conv_proj')(shortcut)
      shortcut = self.norm(name='norm_proj')(shortcut)
    return self.act(shortcut + x)


class ResNet(nn.Module):
  stage_sizes: Sequence[int]
  block_cls: Any
  num_classes: int
  num_filters: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype, axis_name='batch')
    x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name='conv_init')(x)
    x = nn.relu(norm(name='bn_init')(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        x = self.block_cls(self.num_filters * 2 ** i, conv=conv, norm=norm, act=nn.relu,
                           strides=(2, 2) if i > 0 and j == 0 else (1, 1))(x)
    x = jnp.mean(x, axis=(1, 2))
    return jnp.asarray(nn.Dense(self.num_classes, dtype=self.dtype)(x), self.dtype)


ResNet18 = functools.partial(ResNet, stage_sizes=[2, 2, 2, 2], block_cls=ResNetBlock)
# The same at a width that trains in seconds on a CPU (the tests').
ResNet18Narrow = functools.partial(ResNet18, num_filters=8)
GROUPS = ('conv_init+bn_init', *(f'ResNetBlock_{k}' for k in range(8)))
