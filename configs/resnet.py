"""The whole paper on Fashion-MNIST with a residual network: ResNet-18.

The same three parts as configs/default.py (random halves, the m/n split,
random frozen filters) with `resnet18_w16`: CIFAR-style ResNet-18 with
BatchNorm at a quarter of the usual width (16-32-64-128 channels). Its nine
transferable groups are the stem (conv_init+bn_init) and the eight residual
blocks, so n runs 1..9; the head is never transferred. Solver: the paper's
shape (SGD, momentum 0.9, one x0.1 step at 2/3) at ResNet's usual lr 0.1,
10 epochs of a half at batch 128. A train step takes about 0.25 s at batch 64
on a 2-core laptop (n = 5 frozen: 0.12 s), so the whole study is a job for a
bigger machine; `runlocal` runs in minutes (the tests).
Arguments as configs/default.py: split=, experiment=, seed=, runlocal.
"""

from tfx_jax import config as config_lib


def get_config(arg=None):
  return config_lib.paper_study(
      arg,
      model='resnet18_w16',
      batch_size=128,
      lr=0.1,
      total_steps=2340,  # 10 epochs of a 30k-image half.
      lr_step=1560,
      eval_every=117,  # 20 evaluations.
      eval_examples=0,
      checkpoint_every=468,
      log_every=117)
