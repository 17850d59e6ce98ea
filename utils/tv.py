"""The one place that imports torchvision (the pinned PyPI wheel is a CUDA build, also beside a CPU-only torch).

With a CPU-only torch, torchvision's C extension cannot load, and importing
`torchvision` fails while registering fake kernels for `torchvision::nms` /
`torchvision::qnms`, operators that the extension would have defined. Declaring the
two schemas first lets the pure-Python parts (transforms, models, datasets) import.
Where the extension loads (CUDA machines), the first import succeeds and nothing is
declared. Always `from utils.tv import torchvision`.
"""
import sys

import torch

_lib = None  # keeps the operator declarations alive


def _import():
    global _lib
    try:
        import torchvision
        return torchvision
    except RuntimeError as e:
        if 'torchvision::' not in str(e):
            raise
    for name in [n for n in sys.modules if n == 'torchvision' or n.startswith('torchvision.')]:
        del sys.modules[name]
    _lib = torch.library.Library('torchvision', 'DEF')
    _lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    _lib.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    import torchvision
    return torchvision


torchvision = _import()
transforms = torchvision.transforms
