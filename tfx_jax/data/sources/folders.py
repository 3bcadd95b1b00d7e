"""Image folders: `python -m tfx_jax.prepare folder --source_dir=DIR
--data_dir=OUT --name=NAME` writes OUT/folders/NAME/ in the JPEG-shard format
ImageNet's prepare writes (jpeg_shards.py); `--config.dataset=folder:NAME
--config.data_dir=OUT` trains on it.

Layout: DIR/<class>/<files> (torchvision's ImageFolder, Keras'
image_dataset_from_directory), the sorted class names giving the labels, or
DIR/train/<class>/ with DIR/test/<class>/ (or validation/). Without a test
folder a stratified fraction of each class is held out (`subsets.holdout`),
the same on every run. Every image is decoded as a viewer shows it (EXIF
orientation applied; CMYK, palette, 16-bit and grey made RGB; transparency
composited on white), warped to SIZE x SIZE as ImageNet's prepare does and
stored as JPEG quality 90; SIZE by default the images' own (`auto_side`).
What happens to odd inputs is in docs/own_data.md:
files that do not decode are skipped with a warning naming each (their
labels become -1, which no task selects), and listed in the manifest.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings

import cv2
import numpy as np
import PIL.Image
import PIL.ImageOps
import simplejpeg

from tfx_jax import errors, files
from tfx_jax.data import images as images_lib
from tfx_jax.data import subsets
from tfx_jax.data.sources import jpeg_shards, prepare
from tfx_jax.errors import UserError

FORMAT_DIR = 'folders'  # OUT/folders/NAME/
QUALITY = 90
IMAGE_EXTENSIONS = frozenset(('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif',
                              '.tiff', '.ppm', '.pgm', '.pbm'))
EVAL_DIRS = ('test', 'validation', 'val')
# --size's default (0): the median larger side of up to SIDE_SAMPLE evenly
# spaced images, from their headers, within [MIN_SIDE, MAX_AUTO_SIDE].
SIDE_SAMPLE, MIN_SIDE, MAX_AUTO_SIDE = 1000, 8, 256


def dirname(name: str) -> str:
  return os.path.join(FORMAT_DIR, name)


def check_name(name: str | None) -> str:
  if not name or not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.-]*', name):
    raise UserError(f'--name={name!r}: name the dataset with letters, digits, _ . - '
                    f'(it becomes folder:NAME), e.g. --name=my_flowers.')
  return name


def describe(name: str, data_dir: str | None) -> dict:
  """A prepared folder's metadata, for datasets.dataset_spec."""
  root = jpeg_shards.dataset_dir(data_dir, dirname(name))
  manifest = jpeg_shards.read_manifest(root)
  if manifest is None or manifest.get('dataset') != f'folder:{name}':
    raise UserError(f'No prepared image folder {name!r} in {root}: prepare it with '
                    f'`python -m tfx_jax.prepare folder --source_dir=DIR '
                    f'--data_dir={data_dir or jpeg_shards.default_data_dir()} --name={name}` '
                    f'(docs/own_data.md).')
  return {'shape': (*manifest['image_size'], 3), 'num_classes': len(manifest['class_names']),
          'class_names': tuple(manifest['class_names']), 'splits': tuple(manifest['splits']),
          'mean': tuple(manifest['mean']), 'std': tuple(manifest['std']),
          'dirname': dirname(name)}


class Listing:
  """One split's images: paths relative to the source directory, sorted by
  (label, path), and their labels."""

  def __init__(self, names: list[str], labels: list[int]):
    self.names, self.labels = names, np.asarray(labels, np.int32)

  def __len__(self) -> int:
    return len(self.names)


def _entries(directory: str) -> list[os.DirEntry]:
  try:
    return sorted((e for e in os.scandir(directory) if not e.name.startswith('.')),
                  key=lambda e: e.name)
  except OSError as e:
    raise UserError(f'Cannot read {directory} ({e.strerror}).') from None


def _within(path: str, top: str) -> bool:
  return path == top or path.startswith(top.rstrip(os.sep) + os.sep)


class _Walk:
  """Lists each real directory once (by resolved path). A link to a folder of
  the listing (a loop, another class's folder) is skipped with one warning
  naming it, so no image is listed under two classes or twice in one; a link
  to a folder elsewhere is followed."""

  def __init__(self, part_dirs: list[str], class_dirs: list[str]):
    reals = {path: os.path.realpath(path) for path in class_dirs}
    self.roots = [os.path.realpath(d) for d in part_dirs]
    for path in filter(os.path.islink, class_dirs):  # Only a link can share a folder.
      real = reals[path]
      other = next((p for p, r in reals.items()
                    if p != path and (_within(real, r) or _within(r, real))), None)
      if other or any(_within(r, real) for r in self.roots):
        what = f'sharing images with class folder {other}' if other else 'which holds it'
        raise UserError(f'Class folder {path} is a link to {real}, {what}: an image in two '
                        f'classes (or in train and test) makes results meaningless; remove '
                        f'the link, or copy the images.')
    self.classes = {r: p for p, r in reals.items()}  # Real class folder -> its path.
    self.roots += list(self.classes)
    self.seen = set(self.roots)

  def enter(self, path: str, real: str, link: bool, parent: str) -> bool:
    """Whether to list subfolder `path` (resolved: `real`, in `parent`)."""
    if link and any(_within(real, r) or _within(r, real) for r in self.roots):
      where = next((r for r in self.classes if _within(real, r)), None)
      why = ('a folder that holds it: a loop' if _within(parent, real) else
             f'{"" if real == where else "in "}class folder {self.classes[where]}, listed '
             f'there' if where else 'a folder in or above the class folders')
    elif real in self.seen:
      why = 'a folder listed already'
    else:
      self.seen.add(real)
      return True
    errors.warn(f'Skipped {path}: a link to {real}, {why}; each folder counts once.')
    return False

  def files(self, class_dir: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(path, real path) of each image file under class_dir (any depth, linked
    files and folders followed), and the other files."""
    found, ignored = [], []
    stack = [(class_dir, os.path.realpath(class_dir))]
    while stack:
      directory, real_dir = stack.pop()
      subdirs = []
      for entry in _entries(directory):
        link = entry.is_symlink()
        real = os.path.realpath(entry.path) if link else os.path.join(real_dir, entry.name)
        if entry.is_dir():  # Follows links.
          if self.enter(entry.path, real, link, real_dir):
            subdirs.append((entry.path, real))
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
          found.append((entry.path, real))
        else:
          ignored.append(entry.path)
      stack.extend(reversed(subdirs))
    return found, ignored


def _class_dirs(directory: str) -> tuple[dict[str, str], list[str]]:
  """Class name -> its folder, for one DIR/<class>/ level, and the other files."""
  out, ignored = {}, []
  for entry in _entries(directory):
    if entry.is_dir():  # Follows symlinks.
      out[entry.name] = entry.path
    else:
      ignored.append(entry.path)
  return out, ignored


def _listed_once(parts: dict[str, dict[str, list[tuple[str, str]]]]) -> dict:
  """`parts` with each real file once: a link to an image listed under another
  name (in another class, or in train and test) is dropped, the file itself
  kept, with one warning; so no image is in two classes or in both splits."""
  owner = {}
  for classes in parts.values():
    for paths in classes.values():
      for path, real in paths:
        if real not in owner or (os.path.islink(owner[real]) and not os.path.islink(path)):
          owner[real] = path
  dropped = [p for classes in parts.values() for paths in classes.values()
             for p, real in paths if owner[real] != p]
  if dropped:
    errors.warn(f'Skipped {len(dropped)} link(s) to images listed under another name '
                f'(each image counts once), e.g. {dropped[0]} -> '
                f'{os.path.realpath(dropped[0])}.')
  return {part: {c: [p for p, real in paths if owner[real] == p]
                 for c, paths in classes.items()} for part, classes in parts.items()}


def list_folder(source_dir: str, eval_fraction: float) -> tuple[list[str], dict[str, Listing]]:
  """The class names and each split's listing; UserError for a layout that
  cannot be used (named, with the fix)."""
  if not os.path.isdir(source_dir):
    raise UserError(f'--source_dir {source_dir!r} is not a directory; give the folder '
                    f'holding one subfolder per class.')
  top = {e.name for e in _entries(source_dir) if e.is_dir()}
  eval_dir = next((d for d in EVAL_DIRS if d in top), None)
  part_dirs = ({'train': os.path.join(source_dir, 'train'),
                'test': os.path.join(source_dir, eval_dir)} if 'train' in top and eval_dir
               else {'all': source_dir})
  dirs = {part: _class_dirs(d) for part, d in part_dirs.items()}
  walk = _Walk(list(part_dirs.values()), [p for d, _ in dirs.values() for p in d.values()])
  parts = {}
  for part, (class_dirs, ignored) in dirs.items():
    parts[part] = {}
    for c, path in class_dirs.items():
      parts[part][c], others = walk.files(path)
      ignored += others
    if ignored:
      errors.warn(f'{len(ignored)} file(s) in {part_dirs[part]} are not images by their '
                  f'extension and are ignored, e.g. {ignored[0]}.')
  parts = _listed_once(parts)
  names = sorted(set().union(*parts.values()))
  if len(names) < 2:
    raise UserError(f'{source_dir} has {len(names)} class folder(s); it needs one '
                    f'subfolder per class, at least 2 (DIR/<class>/<images>).')
  for part, classes in parts.items():
    for c in names:
      where = os.path.join(source_dir, '' if part == 'all' else
                           ('train' if part == 'train' else eval_dir), c)
      if part != 'test' and not classes.get(c):
        raise UserError(f'Class folder {where} holds no images: add images, or remove '
                        f'the folder (the classes are the folders).')
      if part == 'test' and not classes.get(c):
        errors.warn(f'Class {c!r} has no images in {os.path.dirname(where)}: it is '
                    f'not evaluated.')
  rel = lambda path: os.path.relpath(path, source_dir)  # noqa: E731
  if 'all' in parts:
    paths = [(names.index(c), rel(p)) for c in names for p in parts['all'][c]]
    labels = np.array([label for label, _ in paths])
    held = subsets.holdout(labels, eval_fraction)
    for c in names:
      if len(parts['all'][c]) == 1:
        errors.warn(f'Class {c!r} has one image: it is trained on and not evaluated.')
    split_paths = {'train': [p for p, h in zip(paths, held) if not h],
                   'test': [p for p, h in zip(paths, held) if h]}
  else:
    split_paths = {s: [(names.index(c), rel(p)) for c in names for p in parts[s].get(c, [])]
                   for s in ('train', 'test')}
  return names, {s: Listing([p for _, p in sorted(v)], [label for label, _ in sorted(v)])
                 for s, v in split_paths.items()}


def decode(data: bytes) -> np.ndarray:
  """Image file bytes -> uint8 RGB [H, W, 3], as a viewer shows it: EXIF
  orientation applied, the first frame, palette, CMYK, grey and 16-bit made
  RGB, transparency composited on white. Raises on anything unreadable."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # PIL's DecompressionBomb and palette notes.
    image = PIL.Image.open(io.BytesIO(data))
    image.load()  # A truncated file raises here.
    image = PIL.ImageOps.exif_transpose(image)
  if image.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'):  # 16-bit or float grey.
    array = np.asarray(image, np.float64)
    top = 65535.0 if array.max() > 255 else 255.0
    image = PIL.Image.fromarray(np.clip(array * 255.0 / top, 0, 255).round().astype(np.uint8))
  if image.mode == 'P':
    image = image.convert('RGBA' if 'transparency' in image.info else 'RGB')
  if image.mode in ('RGBA', 'LA', 'PA', 'La', 'RGBa'):
    rgba = image.convert('RGBA')
    white = PIL.Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    image = PIL.Image.alpha_composite(white, rgba)
  return np.asarray(image.convert('RGB'))


def write_shard(task) -> tuple[str, int, int]:
  """Decodes, warps and encodes one shard's images; a file that does not
  decode gets an empty entry (skipped). Writes the shard, then its offsets."""
  root, split, shard, source_dir, names, size = task
  cv2.setNumThreads(1)
  chunks = []
  for name in names:
    try:
      with open(os.path.join(source_dir, name), 'rb') as f:
        image = decode(f.read())
      image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
      jpeg = simplejpeg.encode_jpeg(np.ascontiguousarray(image), QUALITY, 'RGB', '420')
    except Exception:  # pylint: disable=broad-except  # PIL raises many kinds.
      jpeg = b''
    chunks.append(jpeg)
  prepare.write_chunks(root, split, shard, chunks)
  return split, shard, len(names)


def fingerprint(source_dir: str, listings: dict[str, Listing]) -> str:
  """Of every listed file's path, size and modification time."""
  h = hashlib.sha256()
  for split, listing in listings.items():
    for name in listing.names:
      try:
        st = os.stat(os.path.join(source_dir, name))
        stamp = f'{st.st_size}\0{st.st_mtime_ns}'
      except OSError:  # A broken symlink: skipped when its shard is written.
        stamp = 'missing'
      h.update(f'{split}\0{name}\0{stamp}\n'.encode())
  return h.hexdigest()


def auto_side(source_dir: str, listings: dict[str, Listing]) -> int:
  """The side images are stored at unless --size says: the images' own size
  when they share one (the larger side where they are not square), else the
  median larger side; at most MAX_AUTO_SIDE, so photos train at 256 and
  small images (digits, CIFAR-like) at their own size, not warped up."""
  names = [n for listing in listings.values() for n in listing.names]
  sides = []
  for i in np.unique(np.linspace(0, len(names) - 1, min(SIDE_SAMPLE, len(names))).astype(int)):
    try:
      with PIL.Image.open(os.path.join(source_dir, names[i])) as image:
        sides.append(max(image.size))  # The header only: nothing decoded.
    except Exception:  # pylint: disable=broad-except  # Skipped when its shard is written.
      pass
  side = int(np.median(sides)) if sides else MAX_AUTO_SIDE
  return min(max(side, MIN_SIDE), MAX_AUTO_SIDE)


def prepare_folder(source_dir: str, data_dir: str | None, name: str, *, size: int = 0,
                   eval_fraction: float = 0.2, num_workers: int = 0,
                   images_per_shard: int = 1024, log=print) -> dict:
  """Writes (or completes) DATA_DIR/folders/NAME; returns its manifest.
  size 0: `auto_side`."""
  check_name(name)
  if size != 0 and not MIN_SIDE <= size <= 4096:
    raise UserError(f'--size={size}: the side images are stored at must be in 8..4096 '
                    f'(or 0, the images\' own); e.g. --size=256.')
  if images_per_shard < 1:
    raise UserError(f'--images_per_shard must be >= 1, got {images_per_shard}.')
  if not 0 < eval_fraction < 1:
    raise UserError(f'--eval_fraction={eval_fraction}: the part of each class held out '
                    f'must be in (0, 1); e.g. --eval_fraction=0.2.')
  if data_dir:
    files.check_path(data_dir, '--data_dir')
  root = jpeg_shards.dataset_dir(data_dir, dirname(name))
  if files.is_local(root) and _within(os.path.realpath(root), os.path.realpath(source_dir)):
    given = data_dir or f'{jpeg_shards.default_data_dir()} (the default)'
    raise UserError(f'--data_dir {given} is inside --source_dir {source_dir}: a rerun would '
                    f'list the prepared files as a class; pass a --data_dir outside it.')
  log(f'Listing {source_dir} ...')
  class_names, listings = list_folder(os.path.abspath(source_dir), eval_fraction)
  if not size:
    size = auto_side(os.path.abspath(source_dir), listings)
    log(f'Storing the images at {size}x{size} (their own size, up to {MAX_AUTO_SIDE}; '
        f'--size=N to choose).')
  plan = {'format': jpeg_shards.FORMAT, 'version': jpeg_shards.VERSION,
          'dataset': f'folder:{name}', 'image_size': [size, size], 'quality': QUALITY,
          'images_per_shard': images_per_shard, 'class_names': class_names,
          'eval_fraction': eval_fraction, 'source': os.path.abspath(source_dir),
          'encoder': f'PIL {PIL.__version__}, opencv {cv2.__version__} INTER_LINEAR, '
                     f'simplejpeg {simplejpeg.__version__} 4:2:0',
          'fingerprint': fingerprint(source_dir, listings),
          'splits': {s: {'num_examples': len(l)} for s, l in listings.items()}}

  def task(split, k, rows):
    return (root, split, k, os.path.abspath(source_dir), listings[split].names[rows], size)

  rate = prepare.write_all(root, listings, plan, task, write_shard, images_per_shard,
                           num_workers, log)
  indices = prepare.finish(root, listings, images_per_shard)
  skipped = []
  for split, index in indices.items():
    bad = np.flatnonzero(index[:, 1] == 0)
    if len(bad):
      labels = listings[split].labels.copy()
      labels[bad] = -1
      files.atomic_write(jpeg_shards.labels_path(root, split), jpeg_shards.npy_bytes(labels))
      skipped += [listings[split].names[i] for i in bad]
  for path in skipped:
    errors.warn(f'Skipped {os.path.join(source_dir, path)}: not a readable image.')
  mean, std = _stats(root, indices['train'], listings['train'], images_per_shard)
  manifest = {**plan, 'mean': mean, 'std': std, 'skipped': skipped}
  files.atomic_write_json(os.path.join(root, jpeg_shards.MANIFEST), manifest)
  log(f'Done: {root} ({len(class_names)} classes, '
      f'{sum(len(l) for l in listings.values()) - len(skipped):,} images'
      f'{f", {len(skipped)} skipped" if skipped else ""}). Train with '
      f'--config.dataset=folder:{name} --config.data_dir='
      f'{data_dir or jpeg_shards.default_data_dir()}')
  return {**manifest, 'images_per_s': rate}


def _stats(root: str, index: np.ndarray, listing: Listing, per_shard: int):
  """Per-channel mean and std (0..255) of up to images_lib.STATS_SAMPLE evenly
  spaced stored train images."""
  good = np.flatnonzero(index[:, 1] > 0)
  if not len(good):
    raise UserError(f'No train image of {root} decodes ({len(listing)} listed): nothing '
                    f'to train on; check the source folder.')
  picks = good[images_lib.stats_sample(len(good))]

  def stored():
    for shard in np.unique(picks // per_shard):
      data = files.read_bytes(jpeg_shards.shard_path(root, 'train', int(shard)))
      for offset, size in index[picks[picks // per_shard == shard]]:
        yield jpeg_shards.decode(data[offset:offset + size])
  return images_lib.channel_stats(stored())
