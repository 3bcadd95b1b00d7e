"""A user's Vision Transformer in flax.linen, named the way
google-research/big_vision names its ViT's parts (not imported from it): a
patchifying Conv `embedding`, bare parameters `pos_embedding` and `cls`, the
encoder `Transformer` holding `encoderblock_0..3` and `encoder_norm`, and a
`head`. Like big_vision's, it returns `(logits, out)`, out holding what it
computed on the way."""

import flax.linen as nn
import jax.numpy as jnp


class Block(nn.Module):
  """Pre-norm self-attention, then a two-layer MLP, each with a residual."""
  heads: int
  mlp: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train):
    y = nn.MultiHeadDotProductAttention(num_heads=self.heads)(nn.LayerNorm()(x))
    x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
    y = nn.LayerNorm()(x)
    y = nn.Dense(x.shape[-1])(nn.gelu(nn.Dense(self.mlp)(y)))
    return x + nn.Dropout(self.dropout, deterministic=not train)(y)


class Transformer(nn.Module):
  depth: int
  heads: int
  mlp: int

  @nn.compact
  def __call__(self, x, train):
    for i in range(self.depth):
      x = Block(self.heads, self.mlp, name=f'encoderblock_{i}')(x, train)
    return nn.LayerNorm(name='encoder_norm')(x)


class ViT(nn.Module):
  num_classes: int
  patch: int = 7
  width: int = 32
  depth: int = 4
  heads: int = 2
  mlp: int = 64

  @nn.compact
  def __call__(self, images, *, train=False):
    out = {}
    x = nn.Conv(self.width, (self.patch, self.patch), strides=self.patch, padding='VALID',
                name='embedding')(images)
    n, h, w, c = x.shape
    x = x.reshape(n, h * w, c)
    x = x + self.param('pos_embedding', nn.initializers.normal(0.02), (1, h * w, c))
    cls = self.param('cls', nn.initializers.zeros, (1, 1, c))
    x = jnp.concatenate([jnp.tile(cls, (n, 1, 1)), x], axis=1)
    x = out['encoded'] = Transformer(self.depth, self.heads, self.mlp,
                                     name='Transformer')(x, train)
    out['pre_logits'] = x[:, 0]
    out['logits'] = nn.Dense(self.num_classes, name='head')(x[:, 0])
    return out['logits'], out


def make(num_classes):
  return ViT(num_classes)


class WrongShape(nn.Module):
  """Returns its logits transposed: [classes, batch]."""
  num_classes: int

  @nn.compact
  def __call__(self, images, *, train=False):
    return nn.Dense(self.num_classes, name='head')(images.reshape(images.shape[0], -1)).T


class DictOut(nn.Module):
  """Returns a dict without a 'logits' entry."""
  num_classes: int

  @nn.compact
  def __call__(self, images, *, train=False):
    return {'scores': nn.Dense(self.num_classes)(images.reshape(images.shape[0], -1))}
