"""The package layers: utils/ is the ground layer, and only the method registries decide by setup name."""
import ast
import glob
import os
import re

from conftest import ROOT

UPPER = ('data', 'models', 'losses', 'methods', 'stages')


def imported_modules(path):
    """(module, line, inside a function) for every import statement of a Python file."""
    tree = ast.parse(open(path).read())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    inner.in_function = True
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ''] if isinstance(node, ast.ImportFrom) else []
        out += [(name, node.lineno, getattr(node, 'in_function', False)) for name in names]
    return out


def test_the_ground_layer_imports_nothing_above_it():
    for path in glob.glob(os.path.join(ROOT, 'utils', '*.py')):
        for module, line, _ in imported_modules(path):
            assert module.split('.')[0] not in UPPER, f'{os.path.relpath(path, ROOT)}:{line} imports {module}'


def test_project_modules_import_project_modules_at_the_top():
    """An import inside a function is only for heavy or optional third-party libraries, never to dodge a cycle."""
    project = set(UPPER) | {'utils'}
    for pattern in ('*.py', '*/*.py'):
        for path in glob.glob(os.path.join(ROOT, pattern)):
            if os.sep + 'tests' + os.sep in path or os.sep + 'benchmarks' + os.sep in path:
                continue
            for module, line, in_function in imported_modules(path):
                if in_function and module.split('.')[0] in project and module != 'utils.tv':
                    raise AssertionError(f'{os.path.relpath(path, ROOT)}:{line} imports {module} inside a function')


def test_no_branch_on_the_setup_name_outside_the_registries():
    branch = re.compile(r'setup *(==|!=)')
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith('.') and d not in ('results', 'datasets', '__pycache__')]
        for name in files:
            if name.endswith('.py'):
                path = os.path.join(folder, name)
                text = open(path).read()
                assert not branch.search(text), os.path.relpath(path, ROOT)
