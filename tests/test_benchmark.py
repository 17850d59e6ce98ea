"""benchmarks/accuracy.py on a tiny profile: seeds, aggregation, README block, no recomputation on rerun."""
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
import accuracy  # noqa: E402


@pytest.fixture
def tiny(monkeypatch):
    profile = dict(accuracy.PROFILES['digits'])
    profile['overrides'] = ['epochs=1', 'batch_size=64', 'train_subset=200', 'val_subset=200',
                            'backbone_kwargs.widths=[8, 16, 16, 16]', 'num_workers=0']
    monkeypatch.setitem(accuracy.PROFILES, 'tiny', profile)


def test_tiny_profile(tmp_path, monkeypatch, tiny):
    readme = tmp_path / 'README.md'
    readme.write_text('intro\n<!-- results:tiny start -->\nold\n<!-- results:tiny end -->\noutro\n')
    argv = ['--profile', 'tiny', '--seeds', '2', '--first-seed', '2', '--out', str(tmp_path / 'runs'), '--results', str(tmp_path),
            '--readme', str(readme)]
    table = accuracy.main(argv + ['--jobs', '2'])  # both seeds at once, each in a spawned process
    for seed in (2, 3):  # each seed's own output, and its own results in seed order
        assert 'selected head' in (tmp_path / 'runs' / 'tiny' / f'seed{seed}.log').read_text()
    assert 'seeds at a time' in readme.read_text()
    for method in ('scan', 'nnm', 'nnm+selflabel', 'kmeans_pixels', 'kmeans_pretext'):
        assert table[method]['acc'][2] == 2 and 0 < table[method]['acc'][0] <= 1
    saved = json.load(open(tmp_path / 'tiny.json'))
    accs = [s['nnm']['acc'] for s in saved['seeds']]
    assert saved['summary']['nnm']['acc'][0] == pytest.approx(sum(accs) / 2)
    text = readme.read_text()
    assert text.startswith('intro\n<!-- results:tiny start -->\nProfile `tiny`, seeds 2, 3,') and 'old' not in text
    diffs = [r['nnm']['acc'] - r['scan']['acc'] for r in saved['seeds']]
    paired = saved['nnm_minus_scan']
    assert paired['mean'] == pytest.approx(sum(diffs) / 2) and paired['se'] == pytest.approx(abs(diffs[0] - diffs[1]) / 2)
    assert paired['ahead'] + paired['level'] + paired['behind'] == 2 and f"{paired['mean']:+.4f} ± " in text
    for seed, row in zip((2, 3), saved['seeds']):
        folder = tmp_path / 'runs' / 'tiny' / f'seed{seed}' / 'digits'
        assert row['nnm'] == json.load(open(folder / 'scan_nnm' / 'metrics.json'))
    assert '| NNM |' in text and text.endswith('<!-- results:tiny end -->\noutro\n')
    best = max(('scan', 'nnm', 'nnm+selflabel'), key=lambda k: table[k]['acc'][0])  # in the table's order
    stages = ['pretext', best.partition('+')[0]] + ([best] if '+' in best else [])
    minutes = [sum(row[stage]['seconds'] for stage in stages) / 60 for row in saved['seeds']]
    assert (f"({dict(accuracy.ORDER)[best]}: the pretext stage" in text
            and f'{sum(minutes) / 2:.1f} min on average, {max(minutes):.1f} min at most.' in text.split('pipeline')[1])
    # the block is the .md with its links (from the project's root) made relative to the page
    assert accuracy.page_relative((tmp_path / 'tiny.md').read_text().strip(), str(readme)) in text
    assert 'tiny_eval/confusion_matrix.png' in (tmp_path / 'tiny.md').read_text()
    chart = Image.open(tmp_path / 'tiny.png')
    assert chart.size[0] > 300 and len(set(chart.convert('RGB').getdata())) > 3  # drawn, not blank
    assert '![tiny accuracy](tiny.png)' in text  # beside the page
    assert 'NNM + self-label, seed 2, confusion matrix and prototypes' in text  # the run's first seed
    assert Image.open(tmp_path / 'tiny_eval' / 'confusion_matrix.png').size[0] > 100

    def no_rerun(*a, **kw):
        raise AssertionError('a finished seed was recomputed')

    monkeypatch.setattr(accuracy.simclr, 'main', no_rerun)
    monkeypatch.setattr(accuracy.scan, 'main', no_rerun)
    monkeypatch.setattr(accuracy.selflabel, 'main', no_rerun)
    assert accuracy.main(argv) == table  # read back, in one process
    os.remove(tmp_path / 'runs' / 'tiny' / 'seed2' / 'kmeans.json')  # interrupted before the baselines
    without_times = lambda t: {m: {k: v for k, v in row.items() if k != 'seconds'} for m, row in t.items()}  # noqa: E731
    assert without_times(accuracy.main(argv)) == without_times(table)  # only k-means reran


def test_cluster_seeds_cluster_each_pretext_model_again(tmp_path, tiny):
    (tmp_path / 'README.md').write_text('no results block\n')
    argv = ['--profile', 'tiny', '--seeds', '2', '--cluster-seeds', '2', '--out', str(tmp_path / 'runs'),
            '--results', str(tmp_path), '--readme', str(tmp_path / 'README.md')]
    table = accuracy.main(argv)
    assert table['nnm']['acc'][2] == 4 and table['nnm+selflabel']['acc'][2] == 4  # 2 pretext models x 2 seeds
    assert table['pretext']['seconds'][2] == 2 and table['kmeans_pixels']['acc'][2] == 2  # once per pretext model
    saved = json.load(open(tmp_path / 'tiny.json'))
    assert [(r['seed'], r['cluster_seed']) for r in saved['seeds']] == [(1, 1), (1, 101), (2, 2), (2, 102)]
    folder = tmp_path / 'runs' / 'tiny' / 'seed2' / 'digits'
    assert saved['seeds'][3]['nnm'] == json.load(open(folder / 'scan_nnm_seed102' / 'metrics.json'))
    assert json.load(open(folder / 'selflabel_nnm_seed102' / 'metrics.json'))['acc'] == \
        saved['seeds'][3]['nnm+selflabel']['acc']
    d = [r['nnm']['acc'] - r['scan']['acc'] for r in saved['seeds']]
    paired = saved['nnm_minus_scan']  # standard error over the two pretext seeds' average differences
    assert paired['pairs'] == 4 and paired['seeds'] == 2 and paired['mean'] == pytest.approx(sum(d) / 4)
    assert paired['se'] == pytest.approx(abs((d[0] + d[1]) - (d[2] + d[3])) / 4)
    assert 'seeds 1, 2 (pretext) x 2 clustering seeds' in (tmp_path / 'tiny.md').read_text()


def test_pretext_profile_reports_every_setup(tmp_path, monkeypatch):
    tiny = {'pretexts': {s: f'configs/pretext/{s}_digits.yml' for s in ('simclr', 'snca')},
            'clustering': {'nnm': 'configs/scan/nnm_digits.yml'},
            'overrides': ['epochs=1', 'batch_size=64', 'train_subset=200', 'val_subset=200',
                          'backbone_kwargs.widths=[8, 16, 16, 16]', 'num_workers=0']}
    monkeypatch.setitem(accuracy.PROFILES, 'tinypre', tiny)
    readme = tmp_path / 'README.md'
    readme.write_text('<!-- results:tinypre start -->\n<!-- results:tinypre end -->\n')
    table = accuracy.main(['--profile', 'tinypre', '--seeds', '1', '--out', str(tmp_path / 'runs'),
                           '--results', str(tmp_path), '--readme', str(readme)])
    assert {'knn200_acc', 'knn30_acc', 'nn1_acc', 'neighbor_acc'} <= set(table['simclr']) and 'simclr+nnm' in table
    assert 'snca+nnm' not in table and table['snca']['supervised'][0] == 1  # no clustering on supervised features
    text = readme.read_text()
    assert '| snca (supervised) |' in text and 'n/a (uses labels)' in text and '| simclr |' in text


def test_throughput_benchmark_writes_its_table(tmp_path, capsys):
    """The table, and the same table rebuilt from the lines the run printed (--from-log: a run cut short)."""
    import throughput
    out = tmp_path / 'RESULTS.md'
    settings = ['--steps', '1', '--repeats', '2', '--batch', '32', '--sizes', '600', '--search_repeats', '2']
    throughput.main([*settings, '--images', '128', '--workers', '0', '--fast', '', 'channels_last=true',
                     '--out', str(out)])
    text = out.read_text()
    for stage in ('simclr', 'scan'):
        for path in ('reference (0 workers)', 'fast (fp32)', 'model only (fp32)', 'fast (channels_last=true)'):
            assert f'| {stage} | {path} |' in text
    assert '| 600 | ours: mine_neighbors (auto) |' in text and '| 600 | faiss IVF, nlist 97 |' in text
    assert text.count('| simclr | reference (0 workers) | ') == 1 and '| 1.00 |' in text
    log = tmp_path / 'run.log'
    log.write_text(capsys.readouterr().out.split('# Throughput')[0])  # the printed runs, not the final table
    rebuilt = tmp_path / 'rebuilt.md'
    throughput.main([*settings, '--from-log', str(log), '--machine', 'a CPU, GPU: none', '--out', str(rebuilt)])

    def rows(table):  # (stage or N, path) -> images/s or seconds, and the runs; recall and memory are not printed
        cells = [[c.strip() for c in line.split('|')[1:-1]] for line in table.splitlines() if line.startswith('| ')]
        return {tuple(c[:2]): [float(x) for x in ', '.join([c[2], c[4]]).replace(',', ' ').split()]
                for c in cells if c[2][:1].isdigit()}
    ours, theirs = rows(rebuilt.read_text()), rows(text)
    assert ours.keys() == theirs.keys() and len(ours) == 14
    for key in ours:  # printed to 0.1 images/s or 0.01 s, the table rounds: the last digit may differ by one
        assert np.allclose(ours[key], theirs[key], rtol=1e-3, atol=0.011 if key[0].isdigit() else 1.0), key
    assert 'not recorded' in rebuilt.read_text()


def test_every_profile_names_configs_that_load(tmp_path):
    from utils.config import load_config, parse_args, base_parser
    from stages.schema import SCHEMAS
    env = tmp_path / 'env.yml'
    env.write_text(f'root_dir: {tmp_path}\ndata_root: {tmp_path}\n')
    for name, profile in accuracy.PROFILES.items():
        paths = [(p, 'pretext', []) for p in [profile.get('pretext'), *profile.get('pretexts', {}).values()] if p]
        paths += [(path, 'clustering', more)
                  for path, more in map(accuracy.config_entry, profile['clustering'].values())]
        paths += [(p, 'selflabel', []) for p in profile.get('selflabel', {}).values()]
        for path, stage, overrides in paths:  # with the stage: a file's stage sections count
            args = parse_args(base_parser('t'), ['--config_env', str(env), '--config_exp', os.path.join(ROOT, path),
                                                 *profile['overrides'], *overrides])
            assert load_config(args, accuracy.ENV, SCHEMAS[stage], stage).setup, (name, path)
