"""Users' modules with bugs, as users write them: one that fails while it is
initialised, one that fails only when traced for training, one that
reduces over a collective axis name other than flax's 'batch', one whose
features the analysis cannot read, and one with a single output."""

import flax.linen as nn
import jax


class WrongKernel(nn.Module):
  """Fails in init: a kernel size that is not a tuple."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(8, kernel_size='3x3')(x)
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class TrainOnlyBug(nn.Module):
  """Initialises (train=False), then fails when traced for training."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(8, (3, 3))(x)
    if train:
      x = x.reshape(x.shape[0], 7, -1, 5)  # 28 * 28 * 8 is not divisible by 7 * 5.
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class OwnAxisName(nn.Module):
  """BatchNorm over the axis 'devices' (another codebase's pmap name)."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(8, (3, 3), use_bias=False, name='conv')(x)
    x = nn.BatchNorm(use_running_average=not train, axis_name='devices', name='norm')(x)
    x = jax.nn.relu(x)
    return nn.Dense(self.num_classes, name='head')(x.reshape(x.shape[0], -1))


class TrainOnlyBranch(nn.Module):
  """A branch called in training only (an auxiliary path): the end-of-grid
  analysis, in evaluation mode, cannot read the features of the group below it."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train):
    x = nn.relu(nn.Conv(8, (3, 3), (2, 2), name='conv')(x))
    if train or self.is_initializing():
      x = x + nn.Conv(8, (3, 3), name='branch')(x)
    x = nn.relu(nn.Dense(16, name='hidden')(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_classes, name='head')(x)


class OneLogit(nn.Module):
  """One output whatever the class count (a regression head): Dense(1)."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(8, (3, 3), name='conv')(x)
    return nn.Dense(1, name='head')(x.reshape(x.shape[0], -1))
