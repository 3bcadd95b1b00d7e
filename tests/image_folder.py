"""A user's image folder, as people's folders are: JPEGs and PNGs of every
mode, EXIF rotation, odd names, symlinks, and files that are not images."""

import io
import os

import numpy as np
import PIL.Image

CLASSES = ('bird', 'cat café', 'dog ünï')  # Sorted: the labels 0, 1, 2.


def picture(label: int, i: int, size=(40, 56)) -> np.ndarray:
  """A class-coloured RGB image with a bright top-left corner marker."""
  rng = np.random.default_rng([label, i])
  image = np.zeros((*size, 3), np.uint8)
  image[..., label] = 200
  image += rng.integers(0, 40, image.shape, np.uint8)
  image[:size[0] // 4, :size[1] // 4] = 255  # Which way is up.
  return image


def jpeg(array: np.ndarray, **kwargs) -> bytes:
  buf = io.BytesIO()
  PIL.Image.fromarray(array).save(buf, 'JPEG', quality=95, **kwargs)
  return buf.getvalue()


def png(image: PIL.Image.Image) -> bytes:
  buf = io.BytesIO()
  image.save(buf, 'PNG')
  return buf.getvalue()


def make(root: str, per_class: int = 12) -> dict[str, str]:
  """Writes the folder; returns {what: relative path} of the odd files."""
  odd = {}
  for label, name in enumerate(CLASSES):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(per_class):
      with open(os.path.join(root, name, f'img {i:02d}.jpg'), 'wb') as f:
        f.write(jpeg(picture(label, i)))
  cat = CLASSES[1]

  def put(what, rel, data):
    with open(os.path.join(root, rel), 'wb') as f:
      f.write(data)
    odd[what] = rel

  base = picture(1, 100)
  put('cmyk', f'{cat}/cmyk.jpg', _cmyk(base))
  sixteen = (np.asarray(PIL.Image.fromarray(base).convert('L'), np.uint16) * 257)
  put('16bit', f'{cat}/grey16.png', png(PIL.Image.fromarray(sixteen)))
  put('palette', f'{cat}/palette.png', png(PIL.Image.fromarray(base).convert('P')))
  rgba = np.concatenate([base, np.full((*base.shape[:2], 1), 255, np.uint8)], -1)
  rgba[:10, :, 3] = 0  # A transparent band: white once composited.
  put('alpha', f'{cat}/alpha.png', png(PIL.Image.fromarray(rgba, 'RGBA')))
  exif = PIL.Image.Exif()
  exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view.
  put('exif', f'{cat}/rotated.jpg', jpeg(np.rot90(base, 1).copy(), exif=exif.tobytes()))
  put('truncated', f'{cat}/truncated.jpg', jpeg(base)[:300])
  put('not_image', f'{cat}/fake.jpg', b'this is a text file, not a JPEG\n')
  put('unicode', f'{cat}/été ñ.png', png(PIL.Image.fromarray(base)))
  with open(os.path.join(root, cat, 'notes.txt'), 'w') as f:
    f.write('not an image by its extension\n')
  odd['other_file'] = f'{cat}/notes.txt'
  os.makedirs(os.path.join(root, 'lonely'), exist_ok=True)  # A class with one image.
  with open(os.path.join(root, 'lonely', 'only.jpg'), 'wb') as f:
    f.write(jpeg(picture(0, 200)))
  odd['one_image'] = 'lonely/only.jpg'
  target = os.path.join(root, CLASSES[0], 'img 00.jpg')
  os.symlink(target, os.path.join(root, CLASSES[2], 'linked.jpg'))
  odd['symlink'] = f'{CLASSES[2]}/linked.jpg'
  return odd


def _cmyk(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  PIL.Image.fromarray(array).convert('CMYK').save(buf, 'JPEG', quality=95)
  return buf.getvalue()
