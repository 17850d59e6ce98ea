"""After clustering: the map and the close clusters in report.html, names and merges (eval.py --names), and the
export of the images as folders (eval.py --export), on a small run of the photo template."""
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

import eval as evaluate
import scan
import selflabel
from benchmarks.digits_folder import write_digits
from conftest import photo_template_run, write_env
from data.folder import ImageFolder
from evaluation.map import close_clusters
from models import get_clustering_model
from models.files import read_model_file

CLASSES = [0, 1, 4, 7]


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """40 digit photos in four class folders whose files share names (0.png ... 9.png in each), the photo
    template's stages, and eval.py --report: (eval.py's arguments, the self-label folder, the image folder)."""
    tmp = tmp_path_factory.mktemp('after')
    folder = tmp / 'photos'
    write_digits(str(folder), size=16, classes=CLASSES, limit=40)
    for cls in os.listdir(folder):
        for i, name in enumerate(sorted(os.listdir(folder / cls))):
            os.rename(folder / cls / name, folder / cls / f'{i}.png')
    args, out = photo_template_run(tmp, write_env(tmp), 'clustering.steps=4', 'clustering.min_epochs=2',
                                   'selflabel.steps=2', 'selflabel.min_epochs=2', 'clustering.num_heads=2',
                                   folder=folder)
    scan.main(args)
    selflabel.main(args)
    eval_args = [*args, '--model', str(out / 'selflabel' / 'model.pth.tar')]
    evaluate.main(eval_args + ['--report'])
    return eval_args, out / 'selflabel', folder


def map_data(report_dir):
    text = (report_dir / 'report_files' / 'map_data.js').read_text()
    return json.loads(text[text.index('=') + 1:].strip().rstrip(';'))


def by_hand_probs(model_path, run_dir):
    """The self-label model's probabilities of every image, from its file and the cached trunk features."""
    found = read_model_file(str(model_path))
    from easydict import EasyDict
    cfg = EasyDict(backbone='small_cnn', backbone_kwargs={'widths': [8, 16, 16, 16]}, channels=3,
                   train_db_name='image_folder', num_classes=found.num_clusters, num_heads=1)
    model = get_clustering_model(cfg, found.state).eval()
    model.load_state_dict(found.single_head())
    cache = run_dir / 'pretext' / 'feature_cache'
    features = torch.from_numpy(np.load(cache / os.listdir(cache)[0]))
    with torch.no_grad():
        return model(features, 'head')[0].softmax(1).numpy()


def hungarian_acc(pred, truth):
    counts = np.zeros((pred.max() + 1, truth.max() + 1))
    np.add.at(counts, (pred, truth), 1)
    rows, cols = linear_sum_assignment(-counts)
    return counts[rows, cols].sum() / len(pred)


def test_the_report_maps_every_image_and_names_the_close_clusters(run):
    _, out, _ = run
    data = map_data(out)
    sizes = json.load(open(out / 'eval.json'))['cluster_sizes']
    assert len(data['x']) == len(data['y']) == len(data['c']) == 40 and data['sizes'] == sizes
    assert all(0 <= v <= 1 for v in data['x'] + data['y']) and len(set(zip(data['x'], data['y']))) > 30
    assert all(os.path.isfile(p) for p in data['label']) and data['sheets'] == ['map_sheet0.jpg']
    assert (out / 'map.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    page = (out / 'report.html').read_text()
    assert 'src="report_files/map.js"' in page and 'Clusters that lie close' in page and 'http' not in page
    template = (out / 'names_template.yml').read_text().splitlines()
    assert [line.split('  #')[0] for line in template if not line.startswith('#')] == [
        f'{c}: "cluster {c}"' for c in range(4)]


def test_close_clusters_is_the_mean_probability_shared_both_ways():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7]])
    # members of 0 give 1 a mean 0.25 and 2 0.1; the member of 1 gives 0 0.1; of 2 gives 0 0.2, 1 0.1
    rows = dict(close_clusters(probs))
    assert [b for b, _ in rows[0]] == [1, 2] and rows[0][0][1] == pytest.approx((0.25 + 0.1) / 2)
    assert rows[0][1][1] == pytest.approx((0.1 + 0.2) / 2) and rows[2][0][0] == 0


def test_merging_two_clusters_by_name_gives_the_metrics_of_the_merged_labelling(run, tmp_path):
    eval_args, out, folder = run
    probs = by_hand_probs(out / 'model.pth.tar', out.parent)
    truth = np.asarray(ImageFolder('', '', path=str(folder)).targets)  # the order of the cached features
    used = np.bincount(probs.argmax(1), minlength=4).argsort()[-2:]  # two clusters that have members
    a, b = sorted(int(c) for c in used)
    names = tmp_path / 'names.yml'
    names.write_text(f'{a}: pair  # merged\n{b}: "pair"\n')
    result = evaluate.main(eval_args + ['--names', str(names), '--output', str(tmp_path / 'named'), '--report',
                                        '--predict', str(folder)])
    merged = probs.copy()
    merged[:, a] += merged[:, b]
    merged = np.delete(merged, b, axis=1)  # the merged cluster keeps the place of its lowest id
    pred = merged.argmax(1)
    assert result['acc'] == pytest.approx(hungarian_acc(pred, truth))
    assert result['nmi'] == pytest.approx(normalized_mutual_info_score(truth, pred))
    assert result['ari'] == pytest.approx(adjusted_rand_score(truth, pred))
    assert result['cluster_names']['pair'] == [a, b] and len(result['cluster_sizes']) == 3
    rows = list(csv.DictReader(open(result['predictions'])))
    ids = [c for c in range(4) if c != b]
    assert [int(r['cluster']) for r in rows] == [ids[p] for p in pred]
    assert all((r['name'] == 'pair') == (int(r['cluster']) == a) for r in rows)
    assert 'pair' in (tmp_path / 'named' / 'report.html').read_text()
    assert map_data(tmp_path / 'named')['names'][ids.index(a)] == 'pair'
    assert (tmp_path / 'named' / 'names_template.yml').read_text().count('"pair"') == 2


def test_a_bad_names_file_is_one_line_and_nothing_is_written(run, tmp_path, capsys):
    eval_args, _, _ = run
    for text, words in (('0: cats\n9: dogs\n', 'line 2: cluster 9 does not exist'),
                        ('0: cats\n1: dogs: x\n', 'line 2'), ('0: a\n0: b\n', 'line 2: cluster 0 is named a second')):
        names = tmp_path / 'names.yml'
        names.write_text(text)
        with pytest.raises(SystemExit) as e:
            evaluate.main(eval_args + ['--names', str(names), '--output', str(tmp_path / 'out'), '--report'])
        err = capsys.readouterr().err
        assert e.value.code == 2 and words in err and err.count('\n') == 1, err
        assert not (tmp_path / 'out').exists()
    bad = tmp_path / 'names.csv'
    bad.write_text('cluster,name\n0,cats\n2\n')
    with pytest.raises(SystemExit):
        evaluate.main(eval_args + ['--names', str(bad), '--output', str(tmp_path / 'out')])
    assert 'names.csv, line 3: expected two columns' in capsys.readouterr().err


def checksums(folder):
    return {p: (hashlib.sha256(open(p, 'rb').read()).hexdigest(), os.stat(p).st_mtime_ns)
            for p in evaluate.images_under(str(folder))}


def test_export_writes_one_entry_per_image_and_never_touches_the_originals(run, tmp_path, capsys):
    eval_args, _, folder = run
    before = checksums(folder)
    target = tmp_path / 'export'
    result = evaluate.main(eval_args + ['--export', str(target), '--min-confidence', '0.5', '--output',
                                        str(tmp_path / 'e1')])
    index = list(csv.DictReader(open(target / 'index.csv')))
    files = [os.path.relpath(os.path.join(d, f), target) for d, _, fs in os.walk(target) for f in fs]
    assert sorted(files) == sorted([r['file'] for r in index] + ['index.csv']) and len(index) == 40
    assert sorted(r['source'] for r in index) == sorted(os.path.abspath(p) for p in before)
    assert all(os.path.islink(target / r['file']) and os.path.realpath(target / r['file']) == os.path.realpath(
        r['source']) for r in index)
    assert all((r['file'].split('/')[0] == '_unsure') == (float(r['confidence']) < 0.5) for r in index)
    assert all(r['file'].split('/')[0] in ('_unsure', r['name']) for r in index)
    assert sum(result['export'].values()) == 40
    assert len({r['file'] for r in index}) == 40 and any(re.search(r'_\d+\.png$', r['file']) for r in index)
    with pytest.raises(SystemExit) as e:  # a non-empty folder: refused, nothing changed
        evaluate.main(eval_args + ['--export', str(target), '--output', str(tmp_path / 'e2')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'is not empty' in err and '--force' in err and err.count('\n') == 1
    assert len(list(csv.DictReader(open(target / 'index.csv')))) == 40
    evaluate.main(eval_args + ['--export', str(target), '--copy', '--force', '--output', str(tmp_path / 'e3')])
    index = list(csv.DictReader(open(target / 'index.csv')))
    assert all(not os.path.islink(target / r['file']) and (target / r['file']).read_bytes() == open(
        r['source'], 'rb').read() for r in index) and not (target / '_unsure').exists()
    (target / 'mine.txt').write_text('a file of the user')
    with pytest.raises(SystemExit):  # --force replaces an export, never a folder with other files
        evaluate.main(eval_args + ['--export', str(target), '--force', '--output', str(tmp_path / 'e4')])
    assert 'no earlier export wrote (e.g. mine.txt)' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(eval_args + ['--export', str(folder / 'out'), '--output', str(tmp_path / 'e5')])
    assert 'overlaps the images' in capsys.readouterr().err
    # with --predict alone (only the predictions file otherwise) the export is written too
    evaluate.main(eval_args + ['--predict', str(folder), '--export', str(tmp_path / 'also'), '--output',
                               str(tmp_path / 'e6')])
    assert len(list(csv.DictReader(open(tmp_path / 'also' / 'index.csv')))) == 40
    assert checksums(folder) == before


def browser():
    return shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')


@pytest.mark.skipif(browser() is None, reason='no Chromium to open the report in (Debian: apt-get install chromium)')
def test_the_map_renders_hovers_and_toggles_in_a_browser(run):
    """Headless Chromium opens report.html#selftest: the page's script draws every point, moves the mouse onto the
    first one and clicks its cluster's legend entry twice, and writes what it saw into the page."""
    _, out, _ = run
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([browser(), '--headless', '--no-sandbox', '--disable-gpu', f'--user-data-dir={profile}',
                              '--virtual-time-budget=10000', '--dump-dom',
                              'file://' + str(out / 'report.html') + '#selftest'],
                             capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="map-selftest">(.*?)</pre>', dom, re.S)
    assert found and found.group(1), dom[-2000:]
    seen = json.loads(found.group(1).replace('&quot;', '"').replace('&amp;', '&'))
    data = map_data(out)
    assert seen['points'] == seen['drawn'] == 40
    hover = seen['hover']
    assert hover['shown'] and hover['index'] == 0 and hover['label'] == hover['expected_label'] == data['label'][0]
    assert 'map_sheet0.jpg' in hover['thumb'] and hover['sheet_width'] == 50 * 40
    assert hover['cluster'] == data['names'][data['c'][0]]
    legend = seen['legend']
    assert legend['on_after_click'] and legend['highlighted'] == [data['c'][0]] and legend['drawn_after_click'] == 40
    assert not legend['on_after_second_click']
