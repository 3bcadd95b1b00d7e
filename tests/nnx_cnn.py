"""A user's NNX model, written as the Flax NNX guides write theirs (not
imported from them): nnx.Module classes with BatchNorm, Dropout and nested
submodules (a block holding a conv and its norm, the blocks in an nnx.List),
built from `rngs`, switched by NNX's own train()/eval()."""

import functools

from flax import nnx


class ConvBlock(nnx.Module):
  def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(in_features, out_features, kernel_size=(3, 3), use_bias=False,
                         rngs=rngs)
    self.norm = nnx.BatchNorm(out_features, momentum=0.9, rngs=rngs)

  def __call__(self, x):
    return nnx.max_pool(nnx.relu(self.norm(self.conv(x))), (2, 2), (2, 2))


class CNN(nnx.Module):
  def __init__(self, num_classes: int, *, rngs: nnx.Rngs, channels: int = 1):
    self.stem = ConvBlock(channels, 8, rngs=rngs)
    self.blocks = nnx.List([ConvBlock(8, 16, rngs=rngs), ConvBlock(16, 16, rngs=rngs)])
    self.fc = nnx.Linear(16 * 3 * 3, 32, rngs=rngs)
    self.dropout = nnx.Dropout(0.25, rngs=rngs)
    self.head = nnx.Linear(32, num_classes, rngs=rngs)

  def __call__(self, x):
    x = self.stem(x)
    for block in self.blocks:
      x = block(x)
    x = self.dropout(nnx.relu(self.fc(x.reshape(x.shape[0], -1))))
    return self.head(x)


def make_cnn(num_classes, rngs):
  return CNN(num_classes, rngs=rngs)


GROUPS = ('stem', 'blocks/0', 'blocks/1', 'fc')
CNN_RGB = functools.partial(CNN, channels=3)
