"""scikit-learn's bundled 8x8 digits: the embedded default dataset (no download)."""
import numpy as np

from data.base import ArrayDataset
from utils.errors import UserError


class Digits(ArrayDataset):
    """1,797 grey 8x8 digits, 10 classes, one split 'all' (there is no official train/test split)."""

    def __init__(self, root=None, split='all', channels=None, transform=None, download=False):
        if split != 'all':
            raise UserError(f"digits split '{split}' is not valid; the only split is 'all'")
        from sklearn.datasets import load_digits
        digits = load_digits()
        data = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # [N, 8, 8, 1]
        super().__init__(data, digits.target, [str(d) for d in range(10)], channels, transform)
