"""README.md and docs/: a short guide whose links, paths and commands work, and result blocks that are what their
JSON renders (marked stale when the configs they were run with changed)."""
import glob
import importlib
import json
import os
import re
import shlex
import sys

import pytest

from conftest import ROOT, write_env

sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
import accuracy  # noqa: E402
import provenance  # noqa: E402

README = os.path.join(ROOT, 'README.md')
PAGES = [README] + sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))
BLOCK = re.compile(r'<!-- results:([\w-]+) start -->\n(.*?)\n?<!-- results:\1 end -->', re.S)
TOP_LEVEL = ('configs/', 'benchmarks/', 'docs/', 'tests/', 'data/', 'models/', 'losses/', 'neighbors/',
             'evaluation/', 'methods/', 'stages/', 'utils/')


def expand(token):
    """A shell brace list, configs/{a,b}.yml -> the paths it names."""
    found = re.search(r'\{([^{}]*,[^{}]*)\}', token)
    if not found:
        return [token]
    return [p for part in found.group(1).split(',')
            for p in expand(token[:found.start()] + part + token[found.end():])]


def text(page):
    with open(page) as f:
        return f.read()


def anchors(page):
    """GitHub's anchors of a page's headings."""
    found = set()
    for heading in re.findall(r'^#+ (.*)$', text(page), re.M):
        slug = re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')
        found.add(slug)
    return found


def test_the_readme_is_a_short_guide_with_the_four_tasks_early():
    lines = text(README).split('\n')
    assert len(lines) <= 250
    headings = {line: i + 1 for i, line in enumerate(lines) if line.startswith('## ')}
    for task in ('## Cluster your own folder', '## A pretrained backbone by name',
                 '## Evaluate a downloaded SCAN or NNM checkpoint', '## The published protocol on a GPU'):
        assert headings.get(task, 999) <= 120, task


@pytest.mark.parametrize('page', PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_link_and_file_path_resolves(page):
    body = text(page)
    folder = os.path.dirname(page)
    for target in re.findall(r'\]\(([^)\s]+)\)', body):
        if re.match(r'^[a-z]+:', target):
            continue
        path, _, anchor = target.partition('#')
        full = os.path.normpath(os.path.join(folder, path)) if path else page
        assert os.path.exists(full), f'{os.path.relpath(page, ROOT)}: {target}'
        if anchor and full.endswith('.md'):
            assert anchor in anchors(full), f'{os.path.relpath(page, ROOT)}: {target}'
    for code in re.findall(r'`([^`\n]+)`', body):
        for token in code.split():
            token = token.strip('",;:()[]')
            if token.startswith(TOP_LEVEL) and re.search(r'\.(py|ya?ml|md|sh|png|json)$', token) \
                    and not re.search(r'[*<>]|NAME|DIR|OUT', token):
                for path in expand(token):
                    assert os.path.exists(os.path.join(ROOT, path)), f'{os.path.relpath(page, ROOT)}: {path}'


def blocks():
    return [(page, name, body) for page in PAGES for name, body in BLOCK.findall(text(page))]


# block -> (benchmark module, results stem) for the blocks rendered from a JSON by a `markdown(result)`
RENDERED = {'heldout': ('heldout', 'heldout'), 'demo': ('demo', 'demo'), 'map-speed': ('map_speed', 'map_speed'),
            'num-clusters': ('num_clusters', 'num_clusters')}


def test_every_generated_block_is_what_its_generator_wrote():
    """Each block equals its benchmark's .md (its links made relative to the page); the blocks rendered from a
    JSON equal that JSON's rendering today (marked stale when its configs changed); the headline equals the
    rendering of the JSONs it reads."""
    results = os.path.join(ROOT, 'benchmarks', 'results')
    mds = {os.path.basename(p)[:-3]: text(p).strip() for p in glob.glob(os.path.join(results, '*.md'))}
    seen = set()
    for page, name, body in blocks():
        seen.add(name)
        stems = [s for s in (name, name.replace('-', '_'), f'{name.replace("-", "_")}_cifar10_jpg') if s in mds]
        if name == 'speedrun' and not os.path.isfile(os.path.join(results, 'speedrun.json')):
            assert body.strip() == importlib.import_module('speedrun').NOT_RUN
            continue
        assert stems, f'{name}: no benchmarks/results/*.md'
        assert body.strip() == accuracy.page_relative(mds[stems[0]], page).strip(), name
        if name in RENDERED:
            module, stem = RENDERED[name]
            with open(os.path.join(results, f'{stem}.json')) as f:
                result = json.load(f)
            rendered = provenance.mark_stale(importlib.import_module(module).markdown(result),
                                             result.get('provenance'))
            assert body.strip() == accuracy.page_relative(rendered, page).strip(), name
    headline = importlib.import_module('headline').markdown(results)
    assert dict((n, b) for _, n, b in blocks())['headline'].strip() == headline.strip()
    assert {'headline', 'demo', 'heldout', 'map-speed'} <= seen


def test_no_block_of_changed_configs_hides_it():
    """Every results JSON that records its configs and whose configs resolve differently today has its block, every
    table row included, marked stale."""
    results = os.path.join(ROOT, 'benchmarks', 'results')
    by_stem = {}
    for page, name, body in blocks():
        by_stem[name] = body
        by_stem[name.replace('-', '_')] = body
    for path in glob.glob(os.path.join(results, '*.json')):
        with open(path) as f:
            found = json.load(f)
        stem = os.path.basename(path)[:-5]
        if not isinstance(found, dict) or stem not in by_stem or not provenance.changed(found.get('provenance')):
            continue
        rows = [line for line in by_stem[stem].split('\n') if line.startswith('| ') and '---' not in line][1:]
        assert 'stale' in by_stem[stem].split('\n')[0] and all(row.startswith('| stale') for row in rows), stem


def test_a_changed_config_marks_its_rows_stale(tmp_path):
    config = 'configs/image_folder_pretrained.yml'
    stamp = provenance.stamp([config])
    table = 'title\n\n| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |'
    assert provenance.mark_stale(table, stamp) == table
    stamp['configs'][config] = '0' * 16  # as if it had been run with other settings
    marked = provenance.mark_stale(table, stamp)
    assert marked.startswith(f'**stale: its configs changed since ({config})')
    assert '| stale: 1 | 2 |' in marked and '| stale: 3 | 4 |' in marked and '| a | b |' in marked


def test_a_config_digest_sees_its_bases_and_not_its_comments(tmp_path):
    """A change under a section of a `_base_` file that the config itself also sets in part changes the digest; a
    comment does not."""
    (tmp_path / 'base.yml').write_text('clustering: {epochs: 10, steps: 5}\n')
    (tmp_path / 'run.yml').write_text('_base_: base.yml\nclustering: {epochs: 20}\n')
    first = provenance.config_digest(str(tmp_path / 'run.yml'))
    (tmp_path / 'run.yml').write_text('# a comment\n_base_: base.yml\nclustering: {epochs: 20}\n')
    assert provenance.config_digest(str(tmp_path / 'run.yml')) == first
    (tmp_path / 'base.yml').write_text('clustering: {epochs: 10, steps: 6}\n')
    assert provenance.config_digest(str(tmp_path / 'run.yml')) != first


def readme_commands(heading, runner='./run.sh'):
    """The `runner` commands (./run.sh, python) of the README's code block under `heading`, continuation lines
    joined."""
    section = text(README).split(heading, 1)[1].split('\n## ', 1)[0]
    code = re.search(r'```bash\n(.*?)```', section, re.S).group(1).replace('\\\n', ' ')
    return [shlex.split(line.split('#')[0]) for line in code.split('\n') if line.startswith(runner + ' ')]


def test_the_readme_own_folder_commands_run_as_written(tmp_path):
    """The four commands of "Cluster your own folder" and the one of "After clustering", as written, on a folder of
    40 photos (DIR, NAME replaced; a small CNN's weights file stands in for the download, and short stages)."""
    import torch

    from benchmarks.digits_folder import write_digits
    from models.small_cnn import small_cnn
    folder = tmp_path / 'photos'
    write_digits(str(folder), size=16, classes=[0, 1, 4, 7], limit=40)
    torch.manual_seed(0)
    torch.save(small_cnn(widths=[8, 16, 16, 16])['backbone'].state_dict(), tmp_path / 'trunk.pth')
    (tmp_path / 'names.yml').write_text('0: zero\n1: zero\n')
    env = write_env(tmp_path)
    short = ['db_kwargs.image_size=16', 'num_classes=4', 'clustering.steps=2', 'clustering.min_epochs=1',
             'selflabel.steps=2', 'selflabel.min_epochs=1']
    pretext = ['pretext.backbone=small_cnn', f'pretext.backbone_weights={tmp_path / "trunk.pth"}',
               'pretext.backbone_kwargs={widths: [8, 16, 16, 16]}']
    commands = readme_commands('## Cluster your own folder') + readme_commands('## After clustering')
    assert [c[1] for c in commands] == ['simclr.py', 'scan.py', 'selflabel.py', 'eval.py', 'eval.py']
    for command in commands:
        script = importlib.import_module(command[1][:-3])
        args = [a.replace('DIR', str(folder)).replace('NAME', 'photos') for a in command[2:]]
        args = [str(tmp_path / a) if a.startswith(('results/', 'names.yml', 'clusters/')) else a for a in args]
        script.main(['--config_env', env, *args, *short, *(pretext if command[1] == 'simclr.py' else [])])
    exported = [p for p in (tmp_path / 'clusters').rglob('*.png')]
    assert len(exported) == 40 and (tmp_path / 'clusters' / 'zero').is_dir()


def test_the_readme_backbone_by_name_command_reaches_the_download(tmp_path):
    """"A pretrained backbone by name" as written (DIR filled in), offline with an empty cache: the command's
    overrides are all valid, and it stops in one line at the weights, naming both ways out, having written nothing."""
    import subprocess

    from benchmarks.digits_folder import write_digits
    folder = tmp_path / 'photos'
    write_digits(str(folder), size=16, classes=[0, 1], limit=20)
    command = readme_commands('## A pretrained backbone by name')[0]
    env = {**os.environ, 'HF_HOME': str(tmp_path / 'empty'), 'HF_HUB_OFFLINE': '1'}
    args = [a.replace('DIR', str(folder)) for a in command[2:]]
    run = subprocess.run([sys.executable, command[1], '--config_env', write_env(tmp_path), *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr[-2000:]
    assert 'timm/vit_small_patch14_dinov2.lvd142m' in lines[0] and 'backbone_weights=PATH' in lines[0]
    assert not (tmp_path / 'results').exists()


def tiny_cifar10(tmp_path):
    """A 40-image CIFAR-10 in torchvision's layout under tmp_path/data, and an env file naming it."""
    import numpy as np

    import speedrun
    rng = np.random.default_rng(0)
    splits = {split: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 10)
              for split, n in (('train', 30), ('test', 10))}
    speedrun.write_cifar_layout(splits, [f'class{c}' for c in range(10)], str(tmp_path / 'data'), heldout=False)
    return write_env(tmp_path)


def test_the_readme_published_protocol_runs_as_written(tmp_path):
    """"The published protocol on a GPU": its three stage commands as written, on the CPU, one epoch each in small
    batches (a short-epoch variant), on a 40-image CIFAR-10 (--config_env replaced by the test's)."""
    env = tiny_cifar10(tmp_path)
    commands = readme_commands('## The published protocol on a GPU', 'python')
    assert [c[1] for c in commands] == ['simclr.py', 'scan.py', 'selflabel.py']
    for command in commands:
        args = command[2:]
        args[args.index('--config_env') + 1] = env
        importlib.import_module(command[1][:-3]).main([*args, 'epochs=1', 'batch_size=10', 'num_workers=0'])
    assert (tmp_path / 'results' / 'cifar-10' / 'selflabel' / 'model.pth.tar').is_file()


def test_the_readme_checkpoint_commands_run_as_written(tmp_path):
    """"Evaluate a downloaded SCAN or NNM checkpoint" as written, on files in SCAN's released layouts (a bare
    state_dict of the ResNet-18 pretext model, and of the self-label model's one head) and a 40-image CIFAR-10 in
    torchvision's layout (the env file names its data_root; the downloads are in a temporary folder)."""
    import torch
    from easydict import EasyDict

    from models import get_clustering_model, get_contrastive_model
    env = tiny_cifar10(tmp_path)
    cfg = EasyDict(backbone='resnet18', train_db_name='cifar-10', channels=3, backbone_kwargs={},
                   model_kwargs={'head': 'mlp', 'features_dim': 128}, num_classes=10, num_heads=1)
    torch.manual_seed(0)
    (tmp_path / 'downloads').mkdir()
    torch.save(get_contrastive_model(cfg).state_dict(), tmp_path / 'downloads' / 'simclr_cifar-10.pth.tar')
    torch.save(get_clustering_model(cfg).state_dict(), tmp_path / 'downloads' / 'selflabel_cifar-10.pth.tar')
    downloaded = {p.name: p.read_bytes() for p in (tmp_path / 'downloads').iterdir()}
    results = []
    for command in readme_commands('## Evaluate a downloaded SCAN or NNM checkpoint'):
        args = [str(tmp_path / a) if a.startswith(('downloads/', 'results/')) else a for a in command[2:]]
        results.append(importlib.import_module(command[1][:-3]).main(['--config_env', env, *args]))
    labelled, pretext = results
    assert labelled['kind'] != 'pretext' and sum(labelled['cluster_sizes']) == 10 and 0 <= labelled['acc'] <= 1
    assert os.path.isfile(labelled['report']) and pretext['kind'] == 'pretext' and 'nn1_acc' in pretext
    assert {p.name: p.read_bytes() for p in (tmp_path / 'downloads').iterdir()} == downloaded  # nothing beside them
