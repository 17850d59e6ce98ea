"""The pictures eval.py writes (a row-normalised confusion matrix, a grid of cluster prototypes) and the
accuracy benchmark's bar chart."""
import numpy as np
from PIL import Image, ImageDraw

from utils.checkpoint import atomic_write


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, imported on first use (start-up stays fast, no display)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def confusion_figure_size(num_classes):
    """(width, height) in inches at 100 dpi."""
    side = max(4.0, 0.45 * num_classes + 2.5)
    return side + 1.0, side


def save_confusion_matrix(counts, class_names, path, column_names=None, dpi=100):
    """counts [classes, columns]: rows = true class, columns = the class each cluster was matched to (or, with
    column_names, the clusters themselves). Rows are normalised so each shows where one class went."""
    plt = pyplot()
    columns = class_names if column_names is None else column_names
    rows = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=confusion_figure_size(max(len(class_names), len(columns))), dpi=dpi)
    im = ax.imshow(rows, cmap='Blues', vmin=0, vmax=1)
    ax.set_xticks(np.arange(len(columns)), columns, rotation=90, fontsize=7)
    ax.set_yticks(np.arange(len(class_names)), class_names, fontsize=7)
    ax.set_xlabel('predicted (matched cluster)' if column_names is None else 'cluster')
    ax.set_ylabel('true class')
    if max(len(class_names), len(columns)) <= 20:
        for i in range(len(class_names)):
            for j in range(len(columns)):
                if rows[i, j] >= 0.01:
                    ax.text(j, i, f'{rows[i, j]:.2f}', ha='center', va='center', fontsize=6,
                            color='white' if rows[i, j] > 0.5 else 'black')
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, path, dpi)
    plt.close(fig)


def save_bar_chart(rows, metrics, path, title='', dpi=100):
    """rows: [(label, {metric: (mean, std)})]; one group of bars per row, one bar per metric, std as error bar."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.3 * len(rows) + 2, 3.5), dpi=dpi)
    width = 0.8 / len(metrics)
    for m, metric in enumerate(metrics):
        means = [values.get(metric, (np.nan, 0))[0] for _, values in rows]
        stds = [values.get(metric, (np.nan, 0))[1] for _, values in rows]
        ax.bar(np.arange(len(rows)) + (m - (len(metrics) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
               label=metric.upper())
    ax.set_xticks(np.arange(len(rows)), [label for label, _ in rows], rotation=20, ha='right', fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel('mean over seeds (bar: ± std)')
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc='lower right')
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi)
    plt.close(fig)


def whole_number_ticks(axis):
    """Ticks only at whole numbers (epochs, cluster ranks): none at 0.5 on a short axis."""
    from matplotlib.ticker import MaxNLocator
    axis.set_major_locator(MaxNLocator(integer=True))


def save_num_clusters_plot(report, chosen, path, dpi=100):
    """The communities of the neighbour graph by size, and the clusters left after merging the small ones and
    splitting the large ones (neighbors/num_clusters.estimate_num_clusters's report)."""
    plt = pyplot()
    fig, (found, kept) = plt.subplots(1, 2, figsize=(7, 3), dpi=dpi, sharey=True)
    for ax, key, color, label in ((found, 'community_sizes', 'tab:gray', 'communities found'),
                                  (kept, 'cluster_sizes', 'tab:blue', 'clusters after merging and splitting')):
        sizes = report[key]
        ax.bar(range(1, len(sizes) + 1), sizes, color=color)
        ax.axhline(report['min_size'], color='tab:red', linestyle='--', linewidth=1, label='merged below')
        ax.axhline(report['max_size'], color='tab:orange', linestyle=':', linewidth=1, label='split above')
        ax.set_xlabel(f'{label}, largest first', fontsize=8)
        whole_number_ticks(ax.xaxis)
        ax.grid(axis='y', alpha=0.3)
    found.set_ylabel('images')
    found.legend(fontsize=7)
    spread = report.get('k_spread')
    unsure = f" (other partitions: {spread['range'][0]}-{spread['range'][1]})" if spread and len(set(spread['k'])) > 1 \
        else ''
    kept.set_title(f'number of clusters: K = {chosen}{unsure}', fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi)
    plt.close(fig)


def save_figure(fig, path, dpi):
    """A matplotlib figure as a PNG at `path`, through atomic_write (rank 0 only, never half-written)."""
    # no bbox='tight': the size stays what confusion_figure_size says
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format='png'))


def prototype_grid_size(rows, cols, cell=64, label_width=120):
    return label_width + cols * cell, rows * cell


def save_prototype_grid(images, labels, path, cell=64, label_width=120):
    """images: one list of PIL images per cluster (row), labels: one text per row."""
    cols = max((len(r) for r in images), default=1) or 1
    width, height = prototype_grid_size(len(images), cols, cell, label_width)
    canvas = Image.new('RGB', (width, height), 'white')
    draw = ImageDraw.Draw(canvas)
    for r, (row, label) in enumerate(zip(images, labels)):
        draw.text((6, r * cell + cell // 2 - 6), str(label)[:18], fill='black')
        for c, img in enumerate(row):
            canvas.paste(img.convert('RGB').resize((cell - 4, cell - 4), Image.NEAREST),
                         (label_width + c * cell + 2, r * cell + 2))
    atomic_write(path, lambda tmp: canvas.save(tmp, format='PNG'))
