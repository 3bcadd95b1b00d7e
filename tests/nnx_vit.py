"""A user's Vision Transformer in Flax NNX, as the NNX guides build models (not
imported from them): a patch embedding, a class token and position embedding
as bare nnx.Params, encoder blocks with nnx.MultiHeadAttention held in an
nnx.List (`ViT`) or an nnx.Sequential (`SequentialViT`), a final norm and a
head, built from `rngs`."""

import jax.numpy as jnp
from flax import nnx


class EncoderBlock(nnx.Module):
  def __init__(self, width: int, heads: int, mlp: int, *, rngs: nnx.Rngs):
    self.norm1 = nnx.LayerNorm(width, rngs=rngs)
    self.attention = nnx.MultiHeadAttention(num_heads=heads, in_features=width,
                                            decode=False, rngs=rngs)
    self.norm2 = nnx.LayerNorm(width, rngs=rngs)
    self.up = nnx.Linear(width, mlp, rngs=rngs)
    self.down = nnx.Linear(mlp, width, rngs=rngs)
    self.dropout = nnx.Dropout(0.1, rngs=rngs)

  def __call__(self, x):
    x = x + self.attention(self.norm1(x))
    return x + self.dropout(self.down(nnx.gelu(self.up(self.norm2(x)))))


class ViT(nnx.Module):
  def __init__(self, num_classes: int, *, rngs: nnx.Rngs, channels: int = 1,
               patch: int = 7, tokens: int = 16, width: int = 32, depth: int = 3,
               sequential: bool = False):
    self.patch_embed = nnx.Conv(channels, width, kernel_size=(patch, patch),
                                strides=(patch, patch), padding='VALID', rngs=rngs)
    self.cls_token = nnx.Param(jnp.zeros((1, 1, width)))
    self.pos_embed = nnx.Param(0.02 * nnx.initializers.normal()(rngs.params(),
                                                                (1, tokens + 1, width)))
    blocks = [EncoderBlock(width, 2, 2 * width, rngs=rngs) for _ in range(depth)]
    self.blocks = nnx.Sequential(*blocks) if sequential else nnx.List(blocks)
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.head = nnx.Linear(width, num_classes, rngs=rngs)

  def __call__(self, images):
    x = self.patch_embed(images)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, x.shape[-1]))
    x = jnp.concatenate([cls, x], axis=1) + self.pos_embed[...]
    if isinstance(self.blocks, nnx.Sequential):
      x = self.blocks(x)
    else:
      for block in self.blocks:
        x = block(x)
    return self.head(self.norm(x)[:, 0])


def make(num_classes, rngs):
  return ViT(num_classes, rngs=rngs)


def make_sequential(num_classes, rngs):
  return ViT(num_classes, rngs=rngs, sequential=True)
