"""The install files: pins that keep CPU machines off multi-GB CUDA wheels, and the conda file for GPU users;
the process setting every stage applies at start."""
import os
import platform
import re
import sys

import pytest
import yaml

from conftest import ROOT


def test_requirements_pin_torch():
    lines = [line.split('#')[0].strip() for line in open(os.path.join(ROOT, 'requirements.txt'))]
    pins = dict(line.split('==') for line in lines if line)
    assert pins['torch'] == '2.13.0' and pins['torchvision'] == '0.28.0'
    assert all(re.fullmatch(r'[0-9][0-9.]*', v) for v in pins.values())  # every package pinned


def test_conda_environment_parses():
    env = yaml.safe_load(open(os.path.join(ROOT, 'requirements.yml')))
    deps = [d for d in env['dependencies'] if isinstance(d, str)]
    assert 'conda-forge' in env['channels'] and any(d.startswith('faiss-gpu') for d in deps)
    assert any(d.startswith('pytorch-cuda') or d.startswith('pytorch') for d in deps)


def test_torchvision_workaround_lives_in_one_place():
    hits = []
    for folder, _, files in os.walk(ROOT):
        if any(part in folder for part in ('.venv', '.git', 'results', '__pycache__')):
            continue
        for f in files:
            if f.endswith('.py'):
                text = open(os.path.join(folder, f)).read()
                if re.search(r'^\s*(import torchvision|from torchvision)', text, re.M):
                    hits.append(os.path.relpath(os.path.join(folder, f), ROOT))
    assert hits == [os.path.join('utils', 'tv.py')]


@pytest.mark.skipif(not sys.platform.startswith('linux') or platform.libc_ver()[0] != 'glibc', reason='glibc only')
def test_freed_memory_is_kept_on_glibc():
    from utils.common import keep_freed_memory
    assert keep_freed_memory() is True
