"""The packages are layers: each imports only the layers below it (utils/ is plumbing and imports none of them), so
the architecture reads from the folders and no import cycle can form."""
import ast
import glob
import os

from conftest import ROOT

# a package may import those of a lower rank; the stage scripts (simclr.py, scan.py, ...) sit above every package
RANK = {'utils': 0, 'data': 1, 'models': 1, 'losses': 1, 'evaluation': 2, 'neighbors': 2, 'methods': 3, 'stages': 4}
SCRIPTS = {'simclr', 'scan', 'selflabel', 'eval', 'extract_feature', 'feature_extract', 'nn_maker'}


def imported(path):
    """The top-level names of the modules a file imports, its functions' imports included."""
    names = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split('.')[0])
        elif isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
    return names


def test_each_package_imports_only_the_layers_below_it():
    wrong = []
    for package, rank in RANK.items():
        for path in glob.glob(os.path.join(ROOT, package, '**', '*.py'), recursive=True):
            for name in imported(path):
                if name in SCRIPTS or (name in RANK and name != package and RANK[name] >= rank):
                    wrong.append(f'{os.path.relpath(path, ROOT)} imports {name}')
    assert not wrong, wrong
