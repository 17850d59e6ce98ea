"""The augmentations of data/transforms.py on a whole uint8 batch on the training device.

Each sample draws its own parameters. All geometric operations (random resized crop,
flip, affine) are composed into one 2x3 matrix per sample and applied with a single
`grid_sample`; colour operations are per-sample factors. This is the fast path
(`augment_on_device: true`); the torchvision pipeline stays the reference.
"""
import math

import torch
import torch.nn.functional as F

from data.transforms import check_augmentation

_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _uniform(n, low, high, device):
    return low + (high - low) * torch.rand(n, device=device)


def _range(value, around=None):
    """A jitter amount v -> [max(0, 1 - v), 1 + v] (around=1) or [-v, v]; a pair stays as it is."""
    if isinstance(value, (list, tuple)):
        return float(value[0]), float(value[1])
    v = float(value)
    return (max(0.0, 1 - v), 1 + v) if around == 1 else (-v, v)


def _gray(x):
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


class BatchAugment:
    """uint8 [b, C, H, W] on any device -> normalised float [b, C, S, S], parameters per sample."""

    def __init__(self, aug):
        self.aug = check_augmentation(dict(aug))
        self.mean = torch.tensor(self.aug['normalize']['mean'], dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(self.aug['normalize']['std'], dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, images):
        x = images.float().div_(255)
        x = self._geometry(x)
        if self.aug.get('color_jitter'):
            p = (self.aug.get('color_jitter_random_apply') or {}).get('p', 1.0)
            x = self._where(torch.rand(len(x), device=x.device) < p, self._color_jitter(x), x)
        if self.aug.get('random_grayscale') and x.shape[1] == 3:
            x = self._where(torch.rand(len(x), device=x.device) < self.aug['random_grayscale']['p'],
                            _gray(x).expand_as(x), x)
        if self.aug.get('intensity'):
            low, high = self.aug['intensity']
            x = (x * _uniform(len(x), low, high, x.device).view(-1, 1, 1, 1)).clamp_(0, 1)
        if self.aug.get('gaussian_noise'):
            x = (x + self.aug['gaussian_noise']['std'] * torch.randn_like(x)).clamp_(0, 1)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        if self.aug.get('random_erasing'):
            x = self._erase(x, **self.aug['random_erasing'])
        return x

    @staticmethod
    def _where(mask, a, b):
        return torch.where(mask.view(-1, 1, 1, 1), a, b)

    def _geometry(self, x):
        """Compose crop, flip and affine as output->input maps in normalised coordinates."""
        b, c, h, w = x.shape
        dev = x.device
        theta = torch.eye(3, device=dev).repeat(b, 1, 1)
        size = (h, w)
        moved = False
        rrc = self.aug.get('random_resized_crop')
        if rrc:
            s = rrc['size']
            size = (s, s) if isinstance(s, int) else tuple(s)
            scale = _uniform(b, *rrc.get('scale', (0.08, 1.0)), dev)
            lr = [math.log(r) for r in rrc.get('ratio', (3 / 4, 4 / 3))]
            ratio = torch.exp(_uniform(b, lr[0], lr[1], dev))
            fw = torch.sqrt(scale * ratio).clamp(max=1.0)  # crop width as a share of the image width
            fh = torch.sqrt(scale / ratio).clamp(max=1.0)
            crop = torch.zeros(b, 3, 3, device=dev)
            crop[:, 0, 0], crop[:, 1, 1], crop[:, 2, 2] = fw, fh, 1
            crop[:, 0, 2] = (1 - fw) * _uniform(b, -1, 1, dev)
            crop[:, 1, 2] = (1 - fh) * _uniform(b, -1, 1, dev)
            theta, moved = theta @ crop, True
        if self.aug.get('horizontal_flip', True):
            flip = torch.eye(3, device=dev).repeat(b, 1, 1)
            flip[:, 0, 0] = torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0)
            theta, moved = theta @ flip, True
        affine = self.aug.get('random_affine')
        if affine:
            theta, moved = theta @ torch.linalg.inv(self._affine(b, dev, **affine)), True
        if not moved and size == (h, w):
            return x
        grid = F.affine_grid(theta[:, :2], [b, c, *size], align_corners=False)
        return F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)

    @staticmethod
    def _affine(b, dev, degrees=0, translate=None, scale=None, shear=None):
        """torchvision RandomAffine's forward map (input -> output) about the image centre."""
        angle = torch.deg2rad(_uniform(b, *_range(degrees), dev))
        m = torch.eye(3, device=dev).repeat(b, 1, 1)
        sc = _uniform(b, *scale, dev) if scale else torch.ones(b, device=dev)
        sh = torch.tan(torch.deg2rad(_uniform(b, *_range(shear), dev))) if shear else torch.zeros(b, device=dev)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # R(angle) @ Shear_x @ Scale
        m[:, 0, 0], m[:, 0, 1] = cos * sc, (cos * sh - sin) * sc
        m[:, 1, 0], m[:, 1, 1] = sin * sc, (sin * sh + cos) * sc
        if translate:
            m[:, 0, 2] = 2 * _uniform(b, -translate[0], translate[0], dev)  # the image spans 2 units
            m[:, 1, 2] = 2 * _uniform(b, -translate[1], translate[1], dev)
        return m

    def _color_jitter(self, x):
        cj = self.aug['color_jitter']
        b, dev = len(x), x.device
        ops = []
        if cj.get('brightness'):
            f = _uniform(b, *_range(cj['brightness'], 1), dev).view(-1, 1, 1, 1)
            ops.append(lambda x: (x * f).clamp(0, 1))
        if cj.get('contrast'):
            f = _uniform(b, *_range(cj['contrast'], 1), dev).view(-1, 1, 1, 1)
            ops.append(lambda x: ((x - _gray(x).mean((1, 2, 3), keepdim=True)) * f
                                  + _gray(x).mean((1, 2, 3), keepdim=True)).clamp(0, 1))
        if x.shape[1] == 3 and cj.get('saturation'):
            f = _uniform(b, *_range(cj['saturation'], 1), dev).view(-1, 1, 1, 1)
            ops.append(lambda x: (_gray(x) + f * (x - _gray(x))).clamp(0, 1))
        if x.shape[1] == 3 and cj.get('hue'):
            # a rotation of the chroma plane in YIQ space: a linear stand-in for the HSV hue shift
            angle = 2 * math.pi * _uniform(b, *_range(cj['hue']), dev)
            rot = torch.zeros(b, 3, 3, device=dev)
            rot[:, 0, 0] = 1
            rot[:, 1, 1], rot[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
            rot[:, 2, 1], rot[:, 2, 2] = torch.sin(angle), torch.cos(angle)
            yiq = _RGB_TO_YIQ.to(dev)
            mat = torch.linalg.inv(yiq) @ rot @ yiq
            ops.append(lambda x: torch.einsum('bij,bjhw->bihw', mat, x).clamp(0, 1))
        for i in torch.randperm(len(ops)).tolist():  # torchvision shuffles the order too
            x = ops[i](x)
        return x

    @staticmethod
    def _erase(x, p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3)):
        b, _, h, w = x.shape
        dev = x.device
        area = _uniform(b, *scale, dev) * h * w
        r = torch.exp(_uniform(b, math.log(ratio[0]), math.log(ratio[1]), dev))
        eh = torch.sqrt(area * r).round().clamp(1, h)
        ew = torch.sqrt(area / r).round().clamp(1, w)
        top = (torch.rand(b, device=dev) * (h - eh + 1)).floor()
        left = (torch.rand(b, device=dev) * (w - ew + 1)).floor()
        rows = torch.arange(h, device=dev).view(1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, w)
        inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + eh).view(-1, 1, 1))
                  & (cols >= left.view(-1, 1, 1)) & (cols < (left + ew).view(-1, 1, 1)))
        hit = inside & (torch.rand(b, device=dev) < p).view(-1, 1, 1)
        return x.masked_fill(hit.unsqueeze(1), 0.0)
