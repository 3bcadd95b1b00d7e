"""The paper's reference numbers, as data: what the report draws beside ours.

All values are top-1 validation accuracy on ILSVRC2012 (the mean of each run's
10 best validations, averaged over runs), or differences of it, for n = 1..7.
"""

SOURCE = ('Yosinski, Clune, Bengio, Lipson, "How transferable are features in '
          'deep neural networks?", NIPS 2014 (arXiv:1411.1792); numbers '
          'recomputed from the authors\' training logs '
          '(github.com/yosinski/convnet_transfer).')

# Datasets (config.json's "dataset", version suffix dropped) the numbers apply to.
DATASETS = ('imagenet2012',)

LAYERS = (1, 2, 3, 4, 5, 6, 7)
# The paper's network, bottom to top; n = 1..7 name the first seven.
LAYER_NAMES = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8')

# Base networks on a 500-class half (8 nets), and the 1000-class network.
BASE_HALF = 0.625
BASE_HALF_RANGE = (0.615, 0.634)
BASE_ALL = 0.576

# Random A/B split, top-1 by n = 1..7 (Figure 2), keyed by results.csv treatment.
RANDOM_SPLIT_TOP1 = {
    'selffer': (0.627, 0.624, 0.621, 0.605, 0.593, 0.619, 0.623),
    'selffer_ft': (0.618, 0.621, 0.631, 0.629, 0.630, 0.628, 0.627),
    'transfer': (0.628, 0.624, 0.619, 0.600, 0.578, 0.581, 0.542),
    'transfer_ft': (0.637, 0.636, 0.643, 0.640, 0.645, 0.646, 0.646),
}

# Table 1: mean gain of AnB+ over baseB and over BnB+, by range of n.
TABLE1_RANGES = ((1, 7), (3, 7), (5, 7))
TABLE1_GAIN_OVER_BASE = {(1, 7): 0.016, (3, 7): 0.018, (5, 7): 0.021}
TABLE1_GAIN_OVER_SELFFER_FT = {(1, 7): 0.014, (3, 7): 0.014, (5, 7): 0.017}

# Figure 3: AnB minus its base by n = 1..7.
M_N_TRANSFER_DROP = (0.003, -0.009, -0.032, -0.073, -0.129, -0.166, -0.250)
RANDOM_SPLIT_TRANSFER_DROP = (0.003, -0.001, -0.006, -0.025, -0.047, -0.044, -0.083)

# Random frozen filters on the 1000-class task (base BASE_ALL); for n >= 3 the
# paper gives no number, only "near chance", so those layers are left out.
RANDOM_FROZEN_TOP1 = {1: 0.492, 2: 0.403}


def applies_to(dataset: str | None) -> bool:
  """Whether the paper's numbers are comparable with a run on `dataset`."""
  return bool(dataset) and dataset.split(':')[0].lower() in DATASETS
