"""What every dataset shares: items are {'image', 'index', 'target'} (target -1 when unlabelled)."""
import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from utils.errors import UserError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.webp')
GREY_MODES = ('L', 'LA', '1', 'I;16', 'I')


class SizeMismatch(UserError):
    """Images that cannot be stacked into one tensor (their advice depends on what needed the tensor)."""


def open_image(path, draft=None):
    """Decode an image file; an unreadable one is a UserError naming the file (not a worker traceback). draft (w, h):
    a JPEG may be decoded at a reduced scale no smaller than that (thumbnails)."""
    try:
        with Image.open(path) as img:
            if draft is not None:
                img.draft('RGB', draft)
            img.load()
            return flatten_transparency(img)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise UserError(f'cannot read image {path}: {e}; remove or replace the file') from None


BACKGROUND = 255  # transparent pixels become white, as on a page: an icon looks the same as PNG and as JPEG


def flatten_transparency(img):
    """An image with an alpha channel or a transparent colour, composited onto BACKGROUND (grey stays grey); any
    other image unchanged (a copy). The model and the report both see the composite."""
    if img.mode not in ('RGBA', 'LA', 'La', 'RGBa', 'PA') and 'transparency' not in img.info:
        return img.copy()
    grey = img.mode in GREY_MODES
    rgba = img.convert('RGBA')
    flat = Image.alpha_composite(Image.new('RGBA', rgba.size, (BACKGROUND,) * 3 + (255,)), rgba).convert('RGB')
    return flat.convert('L') if grey else flat


def square_resize(img, size):
    """Shorter side to `size` (antialiased), then the centre size x size square: keeps the aspect ratio."""
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def convert_array(data, channels):
    """uint8 [N, H, W, C] -> the requested channel count (grey <-> RGB with PIL's luminance weights)."""
    if channels is None or data.shape[-1] == channels:
        return data
    if channels == 3:
        return np.repeat(data, 3, axis=-1)
    weights = np.array([299, 587, 114], dtype=np.float64) / 1000
    return np.round(data[..., :3] @ weights).clip(0, 255).astype(np.uint8)[..., None]


class ImageDataset(torch.utils.data.Dataset):
    """Base class. Subclasses set `targets` (int64 array, -1 = no label), `classes` and `load(i)`.

    `channels` (1 or 3, None = as stored) converts grey images for RGB models and back.
    """

    def __init__(self, channels=None, transform=None):
        self.channels = channels
        self.transform = transform
        self.classes = []
        self.targets = np.zeros(0, dtype=np.int64)

    def __len__(self):
        return len(self.targets)

    @property
    def one_size(self):
        """True when every image has the same size (held in memory, or resized on loading)."""
        return False

    @property
    def has_labels(self):
        return len(self.targets) > 0 and bool((self.targets >= 0).all())

    def load(self, i):
        raise NotImplementedError

    def get_image(self, i):
        """The i-th image as PIL, converted to the configured channel count."""
        img = self.load(i)
        if self.channels == 3 and img.mode != 'RGB':
            img = img.convert('RGB')
        elif self.channels == 1 and img.mode != 'L':
            img = img.convert('L')
        return img

    def __getitem__(self, i):
        img = self.get_image(i)
        if self.transform is not None:
            img = self.transform(img)
        return {'image': img, 'index': i, 'target': int(self.targets[i])}

    def fingerprint(self, h):
        """Feed what identifies the images (not the transform) into the hashlib object h: here their pixels."""
        h.update(self.uint8_tensor().numpy().tobytes())

    def uint8_tensor(self, indices=None):
        """All images (or those at `indices`) as one uint8 tensor [N, C, H, W] (for augmentation on the training
        device)."""
        arrays = [np.asarray(self.get_image(int(i))) for i in (range(len(self)) if indices is None else indices)]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise SizeMismatch(f'{type(self).__name__}: images differ in size ({sorted(shapes)[:3]}...); '
                               'set augment_on_device: false or resize the images')
        stack = np.stack(arrays)
        if stack.ndim == 3:
            stack = stack[..., None]
        return torch.from_numpy(stack).permute(0, 3, 1, 2).contiguous()


class ArrayDataset(ImageDataset):
    """Images held in memory as uint8 [N, H, W, C]."""
    one_size = True

    def __init__(self, data, targets, classes, channels=None, transform=None):
        super().__init__(channels, transform)
        self.data = data
        self.targets = np.asarray(targets, dtype=np.int64)
        self.classes = list(classes)

    def load(self, i):
        img = np.asarray(self.data[i])
        return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)

    def fingerprint(self, h):
        h.update(np.ascontiguousarray(self.data).tobytes())

    def uint8_tensor(self, indices=None):
        data = convert_array(np.asarray(self.data if indices is None else self.data[indices]), self.channels)
        return torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2).contiguous()


class FileDataset(ImageDataset):
    """Images read from files on demand; with image_size each is resized as square_resize does."""

    def __init__(self, paths, targets, classes, channels=None, transform=None, image_size=None):
        super().__init__(channels, transform)
        self.paths = list(paths)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.classes = list(classes)
        self.image_size = image_size

    @property
    def one_size(self):
        return self.image_size is not None

    def fingerprint(self, h):
        """The files' paths, sizes and modification times, and the resize: no image is read."""
        h.update(f'image_size={self.image_size}\n'.encode())
        for path in self.paths:
            st = os.stat(path)
            h.update(f'{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode())

    def load(self, i):
        img = open_image(self.paths[i])
        if self.image_size is None:
            return img
        return square_resize(img.convert('L' if img.mode in GREY_MODES else 'RGB'), self.image_size)


class SubsetDataset(ImageDataset):
    """A fixed subset of another dataset; items are re-indexed 0..n-1 (neighbour files refer to these)."""

    def __init__(self, base, indices):
        super().__init__(base.channels, base.transform)
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = base.targets[self.indices]
        self.classes = base.classes
        if hasattr(base, 'paths'):
            self.paths = [base.paths[i] for i in self.indices]

    @property
    def one_size(self):
        return self.base.one_size

    def fingerprint(self, h):
        self.base.fingerprint(h)
        h.update(self.indices.tobytes())

    def load(self, i):
        return self.base.load(int(self.indices[i]))

    def uint8_tensor(self, indices=None):
        return self.base.uint8_tensor(self.indices if indices is None else self.indices[np.asarray(indices)])
