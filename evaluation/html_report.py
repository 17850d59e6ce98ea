"""report.html, the page a person looks at (eval.py --report): the run's settings, every stage's metrics side by
side, the plots, a map of the images (evaluation/map.py), the clusters that lie close, and a gallery per cluster
(prototypes, a random sample, the least confident members, each image with its confidence and, when known, its true
class). Self-contained: the page and a report_files/ folder beside it, nothing loaded from the network; clusters are
collapsible sections with a table of contents."""
import os
import shutil

from jinja2 import Environment, FileSystemLoader, select_autoescape

from evaluation.map import write_map
from evaluation.report import stage_metrics
from utils.checkpoint import atomic_write_text


def confidence_text(p):
    """Two decimals; a confidence below 1 that two would show as 1.00 gets one decimal past the first that tells
    it from 1 (0.9987, 0.99952; at most 6), so that the order of the least confident members stays visible."""
    if p >= 1 or f'{p:.2f}' != '1.00':
        return f'{p:.2f}'
    decimals = 3
    while decimals < 5 and f'{p:.{decimals}f}'.startswith('1'):
        decimals += 1
    return f'{p:.{decimals + 1}f}'


OPEN_CLUSTERS = 20  # the first clusters are shown unfolded; with up to 100 the page stays readable
SHOWN = ('acc', 'nmi', 'ari', 'top20_neighbor_acc', 'knn_acc', 'num_classes', 'head', 'seconds')


def stage_rows(run_dir):
    """[(stage, {key: text})] of every stage's numbers under run_dir, and the keys of SHOWN that any of them has."""
    rows = [(stage, {k: f'{v:.4f}' if isinstance(v, float) and k != 'seconds' else str(v) for k, v in metrics.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool)})
            for stage, metrics in stage_metrics(run_dir)]
    return rows, [k for k in SHOWN if any(k in values for _, values in rows)]


def write_report(out_dir, run_dir, title, summary, config, metrics, sizes, clusters, plots, predictions=None,
                 map_args=None, close=None, names_template=None):
    """Write out_dir/report.html and out_dir/report_files/ (stage metrics from run_dir/<stage>/). clusters:
    [{'id', 'name', 'match' (its class, or ''), 'size', 'confidence',
      'strips': [(title, [{'image': PIL, 'confidence', 'truth', 'wrong'}])]}]; plots: [(caption, png path)];
    metrics: [(name, value)]; map_args: evaluation.map.write_map's arguments (the map, with out_dir/map.png);
    close: [(cluster name, [(other's name, shared probability)])]. Returns the page's path."""
    files = os.path.join(out_dir, 'report_files')
    shutil.rmtree(files, ignore_errors=True)
    os.makedirs(files)
    shown = []
    for c in clusters:
        strips = []
        for s, (strip_title, images) in enumerate(c['strips']):
            entries = []
            for i, item in enumerate(images):
                name = f"cluster{c['id']}_{s}_{i}.png"
                item['image'].convert('RGB').save(os.path.join(files, name))
                entries.append({**{k: v for k, v in item.items() if k != 'image'}, 'src': f'report_files/{name}'})
            strips.append((strip_title, entries))
        shown.append({**c, 'strips': strips})
    copied = []
    for caption, path in plots:
        if os.path.isfile(path):
            name = f'plot{len(copied)}_{os.path.basename(path)}'
            shutil.copyfile(path, os.path.join(files, name))
            copied.append((caption, f'report_files/{name}'))
    map_entry = write_map(files, os.path.join(out_dir, 'map.png'), **map_args) if map_args else None
    stages, stage_keys = stage_rows(run_dir)
    env = Environment(loader=FileSystemLoader(os.path.join(os.path.dirname(__file__), 'templates')),
                      autoescape=select_autoescape(['html']))
    env.filters['confidence'] = confidence_text
    page = env.get_template('report.html').render(
        title=title, summary=summary, config=config, stages=stages, stage_keys=stage_keys, metrics=metrics,
        sizes=sizes, predictions=predictions, plots=copied, clusters=shown, open_clusters=OPEN_CLUSTERS,
        map=map_entry, close=close, names_template=names_template)
    path = os.path.join(out_dir, 'report.html')
    atomic_write_text(path, page)
    return path
