"""benchmarks/scale.py on a few hundred vectors: every step measured per n, in the shape README and issue ask for."""
import json

import numpy as np

from benchmarks import scale


def test_planted_lists_hold_other_images_of_the_same_group_mostly():
    groups = np.random.default_rng(0).integers(4, size=400)
    lists = scale.planted_lists(groups)
    assert lists.shape == (400, 1 + scale.TOPK) and (lists[:, 0] == np.arange(400)).all()
    assert not (lists[:, 1:] == np.arange(400)[:, None]).any()
    assert 0.85 < (groups[lists[:, 1:]] == groups[:, None]).mean() < 0.99  # 1 in 10 drawn from anywhere


def test_every_step_is_measured_per_n(tmp_path):
    readme = tmp_path / 'README.md'
    readme.write_text('a\n<!-- results:scale start -->\nold\n<!-- results:scale end -->\nb\n')
    scale.main(['--n', '300', '600', '--dim', '16', '--groups', '4', '--results', str(tmp_path),
                '--readme', str(readme)])
    saved = json.loads((tmp_path / 'scale.json').read_text())
    assert set(saved['steps']) == set(scale.STEPS) and saved['dim'] == 16
    for step, row in saved['steps'].items():
        assert row['n'] == [300, 600] and all(s > 0 for s in row['seconds']) and all(g > 0 for g in row['peak_gb'])
    assert saved['steps']['num_clusters']['k'] == [4, 4]  # the planted groups
    mine, approximate = saved['steps']['mine'], saved['steps']['mine_approximate']
    assert mine['search'] == ['exact', 'exact'] and min(mine['neighbour_group_agreement']) > 0.9
    assert approximate['search'] == ['ivf', 'ivf'] and min(approximate['recall']) > 0.5
    assert saved['exact_search_max'] >= 600
    text = readme.read_text()
    assert '| mine | ' in text and 'old' not in text and (tmp_path / 'scale.png').stat().st_size > 0
    # --merge measures the steps given again and keeps the others' rows
    scale.main(['--n', '300', '600', '--dim', '16', '--groups', '4', '--results', str(tmp_path),
                '--readme', str(readme), '--merge', '--steps', 'predict'])
    merged = json.loads((tmp_path / 'scale.json').read_text())
    assert list(merged['steps']) == list(scale.STEPS)
    assert all(merged['steps'][step] == saved['steps'][step] for step in scale.STEPS if step != 'predict')
    assert merged['steps']['predict']['n'] == [300, 600]


def test_the_peak_is_the_step_process_own():
    """A spawned step reports its own peak, not its parent's: the parent holds 600 MB more here."""
    import os
    import tempfile
    held = np.ones(600 * 2 ** 20 // 8)  # touched: resident in this process
    with tempfile.TemporaryDirectory() as folder:
        groups = scale.write_vectors(os.path.join(folder, 'features.npy'), 200, 8, 2)
        np.save(os.path.join(folder, 'groups.npy'), groups)
        np.save(os.path.join(folder, 'neighbours.npy'), scale.planted_lists(groups))
        row = scale.measure('num_clusters', 200, 8, folder)
    assert row['peak_gb'] < scale.peak_gib() - 0.4 and held.sum() > 0
