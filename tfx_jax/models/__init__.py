"""The networks and what is done to their parameter trees: the model registry
(`registry`: the paper's convnet presets of `convnet`, ResNet-18 of `resnet`,
or a user's linen or NNX Module, as a `net.Net`), their transferable layer groups
(`groups`), how a frozen group's BatchNorm normalises in training (`norm`:
config.frozen_norm), parameter-tree surgery by path (`surgery`: transplants and freeze
labels), a run's per-group plan (`plan`: what each group's values are, whether
it trains, its learning rate and decay, WiSE interpolation), and the paper's
solver as optax.partition with L2-SP, layer-wise learning rates and LP-FT's
phases (`optim`).

Pure functions of trees. May import the floors below it (in practice errors
and paper_reference); never data, its sibling, nor training, the grid or the
report (tfx_jax.LAYERS).
"""
