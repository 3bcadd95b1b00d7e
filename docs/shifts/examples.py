"""The example grids of docs/shifts.md: Fashion-MNIST test images under each
corruption, severities 0 (clean) to 5.

  python docs/shifts/examples.py [--out=docs/shifts] [--data_dir=DIR]

Writes OUT/examples.png (a row per corruption; each cell the same few images)
and OUT/NAME.png per corruption (a row per image, a column per severity).
"""

import argparse
import os

import numpy as np
from matplotlib.figure import Figure

from tfx_jax.data import corruptions, shifts
from tfx_jax.data.sources import fashion_mnist

CLASSES = (0, 7, 8, 3)  # T-shirt/top, sneaker, bag, dress: one of each look.
SEED = 0


def examples(data_dir=None):
  """The first test image of each of CLASSES, and their example indices."""
  images, labels = fashion_mnist.load('test', data_dir)
  indices = np.array([int(np.flatnonzero(labels == c)[0]) for c in CLASSES])
  return images[indices], indices


def ladder(images, indices, name):
  """uint8 [severity 0..5, N, H, W, C]: clean, then each severity."""
  return np.stack([images] + [shifts.corrupt(images, shifts.Shift(name, s, SEED), indices)
                              for s in corruptions.SEVERITIES])


def tile(row, gap=2):
  """[N, H, W, 1] -> one [H, N*W + gaps] image, the gaps mid-grey."""
  n, h, w, _ = row.shape
  out = np.full((h, n * w + (n - 1) * gap), 128, np.uint8)
  for i, image in enumerate(row):
    out[:, i * (w + gap):i * (w + gap) + w] = image[..., 0]
  return out


def save(cells, rows, path, cell_inches):
  """cells[r][c]: grey images; rows: row labels; columns are severities 0..5."""
  height, width = len(cells), len(cells[0])
  fig = Figure(figsize=(width * cell_inches[0] + 1.6, height * cell_inches[1] + 0.5))
  axes = fig.subplots(height, width, squeeze=False)
  for r, row in enumerate(cells):
    for c, cell in enumerate(row):
      ax = axes[r][c]
      ax.imshow(cell, cmap='gray', vmin=0, vmax=255, interpolation='nearest')
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title('clean' if c == 0 else f'severity {c}', fontsize=9)
      if c == 0:
        ax.set_ylabel(rows[r], fontsize=9, rotation=0, ha='right', va='center')
  fig.subplots_adjust(left=1.5 / fig.get_figwidth(), right=0.99, top=1 - 0.35 / fig.get_figheight(),
                      bottom=0.01, wspace=0.05, hspace=0.08)
  fig.savefig(path, dpi=100)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=os.path.dirname(os.path.abspath(__file__)))
  parser.add_argument('--data_dir', default=None)
  args = parser.parse_args()
  images, indices = examples(args.data_dir)
  ladders = {name: ladder(images, indices, name) for name in corruptions.CORRUPTIONS}
  overview = [[tile(by_severity) for by_severity in ladders[name]] for name in ladders]
  save(overview, list(ladders), os.path.join(args.out, 'examples.png'), (1.3, 0.38))
  names = [f'{fashion_mnist_name(c)}\n(test #{i})' for c, i in zip(CLASSES, indices)]
  for name, by_severity in ladders.items():
    cells = [[by_severity[s, i, ..., 0] for s in range(len(by_severity))]
             for i in range(len(indices))]
    save(cells, names, os.path.join(args.out, f'{name}.png'), (0.8, 0.8))
  print(f'Wrote {args.out}/examples.png and one PNG per corruption.')


def fashion_mnist_name(label):
  return ('T-shirt/top', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt',
          'sneaker', 'bag', 'ankle boot')[label]


if __name__ == '__main__':
  main()
