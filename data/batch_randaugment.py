"""SCAN's strong augmentation ('ours', data/randaugment.py) on a whole uint8 batch on the training device.

Every sample draws its own flip, crop offset, operations and magnitudes (the ranges of
data/randaugment.OPERATIONS, so both paths draw from one distribution). Each of the
num_strong_augs slots applies every operation to the samples that drew it. Pixels stay
integer levels 0..255 as in PIL: nearest-neighbour geometry, lookup-table point operations,
blends truncated to integers. Normalisation and Cutout follow, as in the reference pipeline.
"""
import torch
import torch.nn.functional as F

from data.batch_augment import BatchTransform, apply_chosen
from data.randaugment import OPERATIONS
from data.transforms import check_strong, crop_padding, flips

NAMES = list(OPERATIONS)
_SMOOTH = torch.tensor([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13  # PIL's ImageFilter.SMOOTH


def _luma(x):
    """PIL's RGB -> L conversion (integer weights, rounded) of levels [n, C, H, W]; L images stay."""
    if x.shape[1] == 1:
        return x
    weighted = x[:, 0] * 19595 + x[:, 1] * 38470 + x[:, 2] * 7471 + 32768  # exact in float32 (< 2 ** 24)
    return torch.div(weighted, 65536, rounding_mode='floor').unsqueeze(1)


def _blend(degenerate, x, v):
    """PIL's ImageEnhance: degenerate + v * (x - degenerate), truncated and clipped to 0..255."""
    return (degenerate + v.view(-1, 1, 1, 1) * (x - degenerate)).floor_().clamp_(0, 255)


def _pixels(x, rows, cols):
    """x[i, :, rows[i], cols[i]] for integer index maps [n, H', W'] (broadcastable); 0 outside the image."""
    n, c, h, w = x.shape
    rows, cols = torch.broadcast_tensors(rows, cols)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    flat = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).reshape(n, 1, -1).expand(n, c, -1)
    return x.flatten(2).gather(2, flat).view(n, c, *rows.shape[1:]) * inside.unsqueeze(1)


def _affine_nearest(x, coeffs):
    """PIL's Image.transform(AFFINE, NEAREST): output pixel (i, j) takes the input pixel at
    floor(a (j + .5) + b (i + .5) + c), floor(d (j + .5) + e (i + .5) + f); outside the image: 0."""
    h, w = x.shape[-2:]
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w) + 0.5
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1) + 0.5
    k = [coeffs[:, i].view(-1, 1, 1) for i in range(6)]
    return _pixels(x, (k[3] * cols + k[4] * rows + k[5]).floor_().long(),
                   (k[0] * cols + k[1] * rows + k[2]).floor_().long())


def _coeffs(v, a=1., b=0., c=0., d=0., e=1., f=0.):
    """[n, 6] affine coefficients; each entry a number or an [n] tensor."""
    return torch.stack([torch.as_tensor(t, dtype=v.dtype, device=v.device).expand_as(v) for t in (a, b, c, d, e, f)],
                       dim=1)


def _rotate(x, degrees):
    """PIL's Image.rotate(degrees) about the centre, no expansion."""
    h, w = x.shape[-2:]
    angle = -torch.deg2rad(degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    cx, cy = w / 2, h / 2
    return _affine_nearest(x, _coeffs(degrees, cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy))


def _autocontrast(x):
    """Stretch every channel of every image to 0..255 (ImageOps.autocontrast, cutoff 0)."""
    low, high = x.amin((2, 3), keepdim=True).double(), x.amax((2, 3), keepdim=True).double()
    scale = 255 / (high - low).clamp(min=1)  # PIL's lookup table, in double precision as PIL computes it
    stretched = (x.double() * scale - low * scale).floor_().clamp_(0, 255).to(x.dtype)
    return torch.where(high > low, stretched, x)


def _equalize(x):
    """ImageOps.equalize per channel: PIL's cumulative-histogram lookup table."""
    n, c, h, w = x.shape
    levels = x.long().reshape(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, levels, torch.ones_like(levels))
    last = (hist > 0).long().mul(torch.arange(256, device=x.device)).argmax(1, keepdim=True)  # last used level
    step = torch.div(h * w - hist.gather(1, last), 255, rounding_mode='floor')
    before = hist.cumsum(1) - hist
    lut = torch.div(torch.div(step, 2, rounding_mode='floor') + before, step.clamp(min=1), rounding_mode='floor')
    lut = torch.where(step > 0, lut.clamp(max=255), torch.arange(256, device=x.device))  # one level: unchanged
    return lut.gather(1, levels).view(n, c, h, w).to(x.dtype)


def _sharpness(x, v):
    """ImageEnhance.Sharpness: blend with the SMOOTH-filtered image, whose border pixels are the original's."""
    n, c, h, w = x.shape
    smooth = F.conv2d(x.reshape(n * c, 1, h, w), _SMOOTH.to(x).view(1, 1, 3, 3)).add_(0.5).floor_()
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth.view(n, c, h - 2, w - 2)
    return _blend(degenerate, x, v)


def _contrast(x, v):
    mean = (_luma(x).mean((1, 2, 3)) + 0.5).floor().view(-1, 1, 1, 1)
    return _blend(mean, x, v)


def _posterize(x, v):
    keep = 2 ** (8 - v.floor()).view(-1, 1, 1, 1)
    return torch.div(x, keep, rounding_mode='floor') * keep


# name -> f(levels [n, C, H, W], magnitudes [n]) -> levels; magnitudes drawn from OPERATIONS' ranges
BATCH_OPERATIONS = {
    'identity': lambda x, v: x,
    'autocontrast': lambda x, v: _autocontrast(x),
    'equalize': lambda x, v: _equalize(x),
    'rotate': _rotate,
    'solarize': lambda x, v: torch.where(x < v.floor().view(-1, 1, 1, 1), x, 255 - x),
    'color': lambda x, v: _blend(_luma(x).expand_as(x), x, v),
    'contrast': _contrast,
    'brightness': lambda x, v: _blend(torch.zeros_like(x), x, v),
    'sharpness': _sharpness,
    'shear_x': lambda x, v: _affine_nearest(x, _coeffs(v, b=v)),
    'shear_y': lambda x, v: _affine_nearest(x, _coeffs(v, d=v)),
    'translate_x': lambda x, v: _affine_nearest(x, _coeffs(v, c=v * x.shape[3])),
    'translate_y': lambda x, v: _affine_nearest(x, _coeffs(v, f=v * x.shape[2])),
    'posterize': _posterize,
}
assert list(BATCH_OPERATIONS) == NAMES


class BatchStrongAugment(BatchTransform):
    """SCAN's 'ours': flip, padded random crop, num_strong_augs RandAugment operations, normalise, Cutout;
    [b, C, crop, crop] out."""

    def __init__(self, aug):
        self.aug = check_strong(dict(aug))
        super().__init__(self.aug['normalize'])
        self.size = int(self.aug['crop_size'])
        self.n_ops = int(self.aug.get('num_strong_augs', 4))
        cutout = self.aug.get('cutout_kwargs')  # the defaults of data/randaugment.Cutout
        self.holes, self.hole = (int(cutout.get('n_holes', 1)), int(cutout.get('length', 16))) if cutout else (0, 0)

    def sample(self, n, shape, device):
        u = lambda *size: torch.rand(n, *size, device=device)  # noqa: E731
        p = {'crop': u(2), 'ops': torch.randint(len(NAMES), (n, self.n_ops), device=device),
             'magnitudes': u(self.n_ops)}
        if flips(self.aug):
            p['flip'] = u() < 0.5
        if self.hole:
            p['cutout'] = u(self.holes, 2)  # hole centres (row, column) as shares of the crop
        return p

    def apply(self, images, p):
        x = self._flip_crop(images, p).float()
        for slot in range(self.n_ops):
            x = apply_chosen(x, p['ops'][:, slot], {op: self._operation(name, p['magnitudes'][:, slot])
                                                    for op, name in enumerate(NAMES) if name != 'identity'})
        x = self.normalise(x / 255)
        if 'cutout' in p:
            x = x * self._cutout_mask(p['cutout'], x.shape[-2:])
        return x

    @staticmethod
    def _operation(name, magnitudes):
        """f(levels, samples) for apply_chosen: the operation `name` at the samples' magnitudes (uniforms [b])."""
        low, high = OPERATIONS[name][1] or (0, 0)
        return lambda x, s: BATCH_OPERATIONS[name](x, low + (high - low) * magnitudes[s])

    def _flip_crop(self, images, p):
        """Flip, then torchvision's RandomCrop(size, padding, pad_if_needed) with zero fill, as one gather."""
        n, _, h, w = images.shape
        pad = crop_padding(self.size)
        pad_h, pad_w = pad + max(0, self.size - h - 2 * pad), pad + max(0, self.size - w - 2 * pad)
        top = (p['crop'][:, 0] * (h + 2 * pad_h - self.size + 1)).floor().long().view(n, 1, 1) - pad_h
        left = (p['crop'][:, 1] * (w + 2 * pad_w - self.size + 1)).floor().long().view(n, 1, 1) - pad_w
        offsets = torch.arange(self.size, device=images.device)
        rows, cols = top + offsets.view(1, -1, 1), left + offsets.view(1, 1, -1)
        if 'flip' in p:
            cols = torch.where(p['flip'].view(n, 1, 1), w - 1 - cols, cols)
        return _pixels(images, rows, cols)

    def _cutout_mask(self, centres, shape):
        """data/randaugment.Cutout: zero [cy - L//2, cy + L//2) x [cx - L//2, cx + L//2), clipped."""
        h, w = shape
        half = self.hole // 2
        cy = (centres[..., 0] * h).floor().unsqueeze(-1)  # [n, holes, 1]
        cx = (centres[..., 1] * w).floor().unsqueeze(-1)
        r = torch.arange(h, device=centres.device).view(1, 1, h)
        col = torch.arange(w, device=centres.device).view(1, 1, w)
        in_rows = (r >= cy - half) & (r < cy + half)  # [n, holes, h]
        in_cols = (col >= cx - half) & (col < cx + half)
        hit = (in_rows.unsqueeze(-1) & in_cols.unsqueeze(-2)).any(1)  # [n, h, w]
        return (~hit).unsqueeze(1).float()

