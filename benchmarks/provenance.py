"""What a result was run with, and whether that still holds: the config files it read (a digest of each one's
content and of every file it builds on, so a change in a `_base_` file counts; comments do not) and the commit. A results JSON keeps
this under 'provenance'; its table is marked stale when any of those configs resolves differently today."""
import hashlib
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_digest(path):
    """sha256 (16 hex digits) of the data of the config and of the files it builds on, in their order; None when the
    file is gone."""
    from utils.config import read_layers
    full = os.path.join(ROOT, path)
    if not os.path.isfile(full):
        return None
    layers = [layer for _, layer in read_layers(full, 'experiment')]
    return hashlib.sha256(json.dumps(layers, sort_keys=True, default=str).encode()).hexdigest()[:16]


def commit():
    try:
        return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def stamp(configs):
    """{'commit', 'configs': {path from the project's root: digest}} for the config files a run reads."""
    return {'commit': commit(), 'configs': {path: config_digest(path) for path in configs}}


def changed(provenance):
    """The configs of `provenance` that resolve differently today (or are gone)."""
    return [path for path, digest in (provenance or {}).get('configs', {}).items() if config_digest(path) != digest]


def mark_stale(text, provenance):
    """`text` as it is, or, when its configs changed since, with a first line saying so and every table row's first
    cell marked 'stale'."""
    stale = changed(provenance)
    if not stale:
        return text
    lines = text.split('\n')
    for i, line in enumerate(lines):
        if line.startswith('| ') and not line.startswith('|---') and i > 0 and lines[i - 1].startswith('|'):
            lines[i] = '| stale: ' + line[2:]
    head = f"**stale: its configs changed since ({', '.join(stale)}); rerun to refresh.**"
    return '\n'.join([head, ''] + lines)
