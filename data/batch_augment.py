"""The augmentations of data/transforms.py on a whole uint8 batch on the training device.

Each sample draws its own parameters. All geometric operations (random resized crop,
flip, affine) are composed into one 2x3 matrix per sample and applied with a single
`grid_sample`; colour operations are per-sample factors. This is the fast path
(`augment_on_device: true`); the torchvision pipeline stays the reference.
"""
import math

import torch
import torch.nn.functional as F

from data.transforms import check_augmentation, flips

_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _uniform_of(low_high, u):
    """Map uniforms u in [0, 1) onto [low, high)."""
    return low_high[0] + (low_high[1] - low_high[0]) * u


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


def apply_chosen(x, choice, fns, whole=None):
    """x with fns[k](x[s], s) in place of the samples s whose `choice` [b] is k, the functions in the order given.

    On a CUDA device every function runs on the whole batch (s = all samples) and torch.where keeps the chosen
    samples: selecting a subset would stop the host until the device says how many samples it holds, once per
    function and per call, and a dozen small kernels cost less than that wait. Elsewhere only the chosen samples are
    computed (`whole` chooses otherwise). Both give the same result: the functions work on each sample on its own.
    """
    if x.is_cuda if whole is None else whole:
        for k, fn in fns.items():
            x = torch.where((choice == k).view(-1, *[1] * (x.dim() - 1)), fn(x, slice(None)), x)
        return x
    x = x.clone()
    for k, fn in fns.items():
        s = (choice == k).nonzero().squeeze(1)
        if len(s):
            x[s] = fn(x[s], s)
    return x


def take(params, part):
    """The parameters of the samples `part` (a slice or index tensor) of a batch."""
    return {k: v[part] for k, v in params.items()}


class BatchTransform:
    """uint8 [b, C, H, W] on any device -> normalised float, parameters per sample (the batched strategies).

    `sample(n, shape, device)` draws every random parameter of n samples; `apply(images, params)` uses them.
    Under torchrun every process draws the parameters of the whole global batch and applies its share,
    so the random stream, and the result, do not depend on the number of processes.
    """

    def __init__(self, normalize):
        self.mean = torch.tensor(normalize['mean'], dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(normalize['std'], dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, images):
        return self.apply(images, self.sample(len(images), images.shape[1:], images.device))

    def normalise(self, x):
        """Pixels in [0, 1] -> (x - mean) / std."""
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


class BatchAugment(BatchTransform):
    """The `augmentation_kwargs` pipeline of data/transforms.augmentation_transform: [b, C, S, S] out."""

    def __init__(self, aug):
        self.aug = check_augmentation(dict(aug))
        super().__init__(self.aug['normalize'])
        rrc = self.aug.get('random_resized_crop')
        self.size = None if not rrc else ((rrc['size'],) * 2 if isinstance(rrc['size'], int) else tuple(rrc['size']))

    def sample(self, n, shape, device):
        """Every random parameter of n samples of images of `shape` (C, H, W): a dict of [n, ...] tensors."""
        a, u = self.aug, lambda *size: torch.rand(n, *size, device=device)
        c, h, w = shape
        out_h, out_w = self.size or (h, w)
        p = {}
        if a.get('random_resized_crop'):
            p['crop'] = u(4)  # scale, log-ratio, x and y position
        if flips(a):
            p['flip'] = u() < 0.5
        if a.get('random_affine'):
            p['affine'] = u(5)  # angle, scale, shear, translation x and y
        if a.get('color_jitter'):
            prob = (a.get('color_jitter_random_apply') or {}).get('p', 1.0)
            p['jitter'] = u() < prob
            p['jitter_factors'] = u(4)
            p['jitter_order'] = u(4).argsort(1)  # torchvision draws an order per image
        if a.get('random_grayscale'):
            p['gray'] = u() < a['random_grayscale']['p']
        if a.get('intensity'):
            p['intensity'] = u()
        if a.get('gaussian_noise'):
            p['noise'] = torch.randn(n, c, out_h, out_w, device=device)
        if a.get('random_erasing'):
            p['erase'] = u(5)  # area, log-ratio, top, left, apply
        return p

    def apply(self, images, p):
        x = images.float().div_(255)
        x = self._geometry(x, p)
        if 'jitter' in p:
            x = self._where(p['jitter'], self._color_jitter(x, p), x)
        if 'gray' in p and x.shape[1] == 3:
            x = self._where(p['gray'], _gray(x).expand_as(x), x)
        if 'intensity' in p:
            low, high = self.aug['intensity']
            x = (x * (low + (high - low) * p['intensity']).view(-1, 1, 1, 1)).clamp_(0, 1)
        if 'noise' in p:
            x = (x + self.aug['gaussian_noise']['std'] * p['noise']).clamp_(0, 1)
        x = self.normalise(x)
        if 'erase' in p:
            x = self._erase(x, p['erase'], **self.aug['random_erasing'])
        return x

    @staticmethod
    def _where(mask, a, b):
        return torch.where(mask.view(-1, 1, 1, 1), a, b)

    def _geometry(self, x, p):
        """Compose crop, flip and affine as output->input maps in normalised coordinates."""
        b, c, h, w = x.shape
        dev = x.device
        theta = torch.eye(3, device=dev).repeat(b, 1, 1)
        size = self.size or (h, w)
        if 'crop' in p:
            rrc = self.aug['random_resized_crop']
            low, high = rrc.get('scale', (0.08, 1.0))
            scale = low + (high - low) * p['crop'][:, 0]
            lr = [math.log(r) for r in rrc.get('ratio', (3 / 4, 4 / 3))]
            ratio = torch.exp(lr[0] + (lr[1] - lr[0]) * p['crop'][:, 1])
            fw = torch.sqrt(scale * ratio).clamp(max=1.0)  # crop width as a share of the image width
            fh = torch.sqrt(scale / ratio).clamp(max=1.0)
            crop = torch.zeros(b, 3, 3, device=dev)
            crop[:, 0, 0], crop[:, 1, 1], crop[:, 2, 2] = fw, fh, 1
            crop[:, 0, 2] = (1 - fw) * (2 * p['crop'][:, 2] - 1)
            crop[:, 1, 2] = (1 - fh) * (2 * p['crop'][:, 3] - 1)
            theta = theta @ crop
        if 'flip' in p:
            flip = torch.eye(3, device=dev).repeat(b, 1, 1)
            flip[:, 0, 0] = torch.where(p['flip'], -1.0, 1.0)
            theta = theta @ flip
        if 'affine' in p:
            theta = theta @ torch.linalg.inv(self._affine(p['affine'], **self.aug['random_affine']))
        if len(p.keys() & {'crop', 'flip', 'affine'}) == 0 and size == (h, w):
            return x
        grid = F.affine_grid(theta[:, :2], [b, c, *size], align_corners=False)
        return F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)

    @staticmethod
    def _affine(u, degrees=0, translate=None, scale=None, shear=None):
        """torchvision RandomAffine's forward map (input -> output) about the image centre; u [b, 5] uniforms."""
        b, dev = len(u), u.device
        angle = torch.deg2rad(_uniform_of(_range(degrees), u[:, 0]))
        m = torch.eye(3, device=dev).repeat(b, 1, 1)
        sc = _uniform_of(scale, u[:, 1]) if scale else torch.ones(b, device=dev)
        sh = torch.tan(torch.deg2rad(_uniform_of(_range(shear), u[:, 2]))) if shear else torch.zeros(b, device=dev)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # R(angle) @ Shear_x @ Scale
        m[:, 0, 0], m[:, 0, 1] = cos * sc, (cos * sh - sin) * sc
        m[:, 1, 0], m[:, 1, 1] = sin * sc, (sin * sh + cos) * sc
        if translate:
            m[:, 0, 2] = 2 * translate[0] * (2 * u[:, 3] - 1)  # the image spans 2 units
            m[:, 1, 2] = 2 * translate[1] * (2 * u[:, 4] - 1)
        return m

    def _color_jitter(self, x, p):
        """Brightness, contrast, saturation and hue, each sample in its own random order."""
        cj = self.aug['color_jitter']
        u = p['jitter_factors']
        f = {key: _uniform_of(_range(cj[key], 1), u[:, i]).view(-1, 1, 1, 1)
             for i, key in enumerate(('brightness', 'contrast', 'saturation')) if cj.get(key)}
        ops = {}
        if 'brightness' in f:
            ops[0] = lambda x, s: (x * f['brightness'][s]).clamp(0, 1)
        if 'contrast' in f:
            ops[1] = lambda x, s: ((x - _gray(x).mean((1, 2, 3), keepdim=True)) * f['contrast'][s]
                                   + _gray(x).mean((1, 2, 3), keepdim=True)).clamp(0, 1)
        if x.shape[1] == 3 and 'saturation' in f:
            ops[2] = lambda x, s: (_gray(x) + f['saturation'][s] * (x - _gray(x))).clamp(0, 1)
        if x.shape[1] == 3 and cj.get('hue'):
            # a rotation of the chroma plane in YIQ space: a linear stand-in for the HSV hue shift
            angle = 2 * math.pi * _uniform_of(_range(cj['hue']), u[:, 3])
            rot = torch.zeros(len(x), 3, 3, device=x.device)
            rot[:, 0, 0] = 1
            rot[:, 1, 1], rot[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
            rot[:, 2, 1], rot[:, 2, 2] = torch.sin(angle), torch.cos(angle)
            yiq = _RGB_TO_YIQ.to(x.device)
            mat = torch.linalg.inv(yiq) @ rot @ yiq
            ops[3] = lambda x, s: torch.einsum('bij,bjhw->bihw', mat[s], x).clamp(0, 1)
        for position in range(4):
            x = apply_chosen(x, p['jitter_order'][:, position], ops)
        return x

    @staticmethod
    def _erase(x, u, p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3)):
        """Erase one rectangle per sample with probability p; u [b, 5] uniforms."""
        b, _, h, w = x.shape
        dev = x.device
        area = _uniform_of(scale, u[:, 0]) * h * w
        r = torch.exp(_uniform_of((math.log(ratio[0]), math.log(ratio[1])), u[:, 1]))
        eh = torch.sqrt(area * r).round().clamp(1, h)
        ew = torch.sqrt(area / r).round().clamp(1, w)
        top = (u[:, 2] * (h - eh + 1)).floor()
        left = (u[:, 3] * (w - ew + 1)).floor()
        rows = torch.arange(h, device=dev).view(1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, w)
        inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + eh).view(-1, 1, 1))
                  & (cols >= left.view(-1, 1, 1)) & (cols < (left + ew).view(-1, 1, 1)))
        hit = inside & (u[:, 4] < p).view(-1, 1, 1)
        return x.masked_fill(hit.unsqueeze(1), 0.0)
