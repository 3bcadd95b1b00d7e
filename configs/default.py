"""The offline default (`make demo`): the whole paper on Fashion-MNIST, one job.

Three parts, one workdir, one report with all six findings:
- Figure 2's grid on random halves of the 10 classes (split random:<seed>),
  target B: baseA, baseB, BnB, BnB+, AnB, AnB+ for n = 1..7 (findings 1-4);
- the dissimilar m/n halves: both bases and AnB (Figure 3, finding 5);
- random frozen filters trained on half B, against Figure 2's baseB
  (finding 6; the paper trains them on every class: argument all_classes,
  docs/paper.md).
The `narrow` net and the paper's solver shape (SGD, momentum, one x0.1 step),
at the cheapest length where every base converges (docs/solver/): 7,680
steps left two of the four bases more than 0.5 points below the same base
trained twice as long, so twice that.

Arguments select parts: split=random, split=m_n or experiment=random_filters
runs that part alone (experiment=transfer: both splits); seed=S picks the
random halves; all_classes trains the random frozen filters on every class,
as the paper (its base needs twice the steps); runlocal shrinks every run to
seconds (the tests).
"""

from tfx_jax import config as config_lib


def get_config(arg=None):
  return config_lib.paper_study(
      arg,
      model='narrow',
      batch_size=64,
      lr=0.01,
      total_steps=15360,  # 33 epochs of a 30k-image half (16 of all 60k).
      lr_step=10240,  # One x0.1 step, at 2/3 of the run.
      eval_every=768,  # 20 evaluations: best10_top1 averages the upper half.
      eval_examples=0,  # The whole test half.
      checkpoint_every=3072,
      log_every=768)
