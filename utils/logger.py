"""Per-run JSON-lines log, console lines, progress bars and training-curve plots."""
import json
import os
import sys

from tqdm import tqdm

from utils.checkpoint import atomic_write_text
from utils.distributed import is_main
from utils.plots import pyplot, save_figure, whole_number_ticks


def progress(iterable, total, desc):
    """A tqdm bar with ETA on a terminal; nothing (the per-epoch lines suffice) in logs and CI."""
    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not sys.stderr.isatty())


def drop_partial_line(path):
    """A run killed while writing leaves a last line without its newline: cut it, so that the records a resumed
    run appends start on a line of their own."""
    if not os.path.isfile(path):
        return
    with open(path, 'rb+') as f:
        data = f.read()
        if data and not data.endswith(b'\n'):
            f.truncate(data.rfind(b'\n') + 1)


class RunLog:
    """Appends one JSON object per line to `<folder>/log.jsonl` and prints a short line per record."""

    def __init__(self, folder, name='log.jsonl'):
        self.path = os.path.join(folder, name)
        if is_main():
            drop_partial_line(self.path)

    def log(self, record, echo=True):
        if is_main():  # under torchrun only rank 0 writes (and prints)
            with open(self.path, 'a') as f:
                f.write(json.dumps(record) + '\n')
        if echo:
            print(' '.join(f'{k} {_fmt(v)}' for k, v in record.items()), flush=True)

    def records(self):
        if not os.path.isfile(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def plot(self, png, keys, x='epoch'):
        """One panel per key that the log holds, against `x`."""
        if not is_main():
            return
        plt = pyplot()
        records = [r for r in self.records() if x in r]
        keys = [k for k in keys if any(r.get(k) is not None for r in records)]
        if not keys:
            return
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
        for ax, key in zip(axes[0], keys):
            points = [(r[x], r[key]) for r in records if r.get(key) is not None]
            xs, ys = zip(*points)
            marker = '.' if len(points) < 30 else None
            if isinstance(ys[0], list):  # one value per head
                for h in range(len(ys[0])):
                    ax.plot(xs, [y[h] for y in ys], marker=marker, label=f'head {h}')
                ax.legend(fontsize=7)
            else:
                ax.plot(xs, ys, marker=marker)
            ax.set_xlabel(x)
            whole_number_ticks(ax.xaxis)
            ax.set_title(key)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        save_figure(fig, png, dpi=90)
        plt.close(fig)


def _fmt(v):
    return f'{v:.4g}' if isinstance(v, float) else str(v)


def write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2) + '\n')


def metric_words(metrics):
    """'acc 0.9123, nmi 0.8765, ari 0.8012', or a note when there were no labels to compute them."""
    words = ', '.join(f'{k} {metrics[k]:.4f}' for k in ('acc', 'nmi', 'ari') if metrics.get(k) is not None)
    return words or 'no labels, no metrics'
