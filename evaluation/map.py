"""The map of the images in report.html: two dimensions of the features the heads read, by openTSNE (t-SNE with
FFT-accelerated gradients), each point coloured by its cluster, and the clusters that lie close in the heads'
probabilities.

Every image gets a place on the map. t-SNE runs on at most FIT images (a random draw); the others are placed into
that map by openTSNE's transform. The page draws at most DRAWN points (a random draw, stated on the page), each with
a thumbnail in a sprite sheet, so that a large folder gives a page a browser opens at once."""
import json
import os

import numpy as np
import torch
from PIL import Image

from data.base import open_image
from utils.plots import pyplot, save_figure

FIT = 20000
DRAWN = 20000
PCA_DIMS = 50
THUMB = 40  # pixels of a hover thumbnail
SHEET_SIDE = 50  # thumbnails per row and per column of one sprite sheet


def map_2d(features, seed=0, fit=FIT):
    """features [N, D] -> [N, 2] float32: PCA to PCA_DIMS dimensions, then t-SNE (openTSNE) on `fit` of them at most,
    the rest placed into that embedding."""
    from openTSNE import TSNE
    from sklearn.decomposition import PCA
    x = np.asarray(features, dtype=np.float32)
    if x.shape[1] > PCA_DIMS and len(x) > PCA_DIMS:
        x = PCA(PCA_DIMS, random_state=seed).fit_transform(x).astype(np.float32)
    n = len(x)
    if n < 4:  # t-SNE needs a few neighbours: a line is the honest map of three points
        return np.stack([np.arange(n), np.zeros(n)], 1).astype(np.float32)
    perplexity = min(30.0, (n - 1) / 3)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    fitted, rest = order[:fit], order[fit:]
    tsne = TSNE(n_components=2, perplexity=perplexity, n_jobs=max(1, torch.get_num_threads()), random_state=seed,
                verbose=False)
    embedding = tsne.fit(x[fitted])
    out = np.zeros((n, 2), dtype=np.float32)
    out[fitted] = np.asarray(embedding)
    if len(rest):
        out[rest] = np.asarray(embedding.transform(x[rest]))
    return out


def close_clusters(probs, top=3):
    """Which clusters the heads confuse: shared[a, b] = the mean probability the members of cluster a give to
    cluster b, made symmetric ((shared + shared.T) / 2). Returns [(cluster, [(other, shared), ...])] for every
    non-empty cluster, its `top` closest first."""
    probs = torch.as_tensor(probs, dtype=torch.float64)
    labels = probs.argmax(1)
    c = probs.shape[1]
    sums = torch.zeros(c, c, dtype=torch.float64).index_add_(0, labels, probs)
    sizes = torch.bincount(labels, minlength=c).double()
    shared = sums / sizes.clamp_min(1).unsqueeze(1)
    shared = (shared + shared.T) / 2
    rows = []
    for a in range(c):
        if sizes[a] == 0:
            continue
        others = [(b, float(shared[a, b])) for b in range(c) if b != a and sizes[b] > 0]
        rows.append((a, sorted(others, key=lambda o: -o[1])[:top]))
    return rows


def thumbnail(path_or_image):
    """A THUMB x THUMB thumbnail (the centre square) of an image file (JPEGs decoded at a reduced scale) or image."""
    if isinstance(path_or_image, Image.Image):
        img = path_or_image
    else:
        img = open_image(path_or_image, draft=(2 * THUMB, 2 * THUMB))
    img = img.convert('RGB')
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.crop((left, top, left + side, top + side)).resize((THUMB, THUMB), Image.BILINEAR)


def write_sheets(indices, image, folder, prefix='map_sheet'):
    """Sprite sheets of SHEET_SIDE x SHEET_SIDE thumbnails (JPEG) in `folder` of the images at `indices`, in order;
    image(i): image i's file path or PIL image. Returns the sheets' file names."""
    per_sheet = SHEET_SIDE * SHEET_SIDE
    names = []
    for start in range(0, len(indices), per_sheet):
        part = indices[start:start + per_sheet]
        rows = (len(part) + SHEET_SIDE - 1) // SHEET_SIDE
        sheet = Image.new('RGB', (SHEET_SIDE * THUMB, rows * THUMB), 'white')
        for k, i in enumerate(part):
            sheet.paste(thumbnail(image(int(i))), ((k % SHEET_SIDE) * THUMB, (k // SHEET_SIDE) * THUMB))
        name = f'{prefix}{len(names)}.jpg'
        sheet.save(os.path.join(folder, name), quality=85)
        names.append(name)
    return names


def palette(k):
    """k distinct colours (hex): tab20's, then evenly spaced hues."""
    import matplotlib
    base = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps['tab20'].colors]
    if k <= len(base):
        return base[:k]
    return base + [matplotlib.colors.to_hex(matplotlib.colors.hsv_to_rgb((i / (k - len(base)), 0.65, 0.85)))
                   for i in range(k - len(base))]


def write_map(files, out_png, coords, clusters, names, confidences, labels, image, seed=0, drawn=DRAWN):
    """The map's data (files/map_data.js), its sprite sheets and script, and the static PNG `out_png`.
    coords [N, 2], clusters [N] (indices into names), confidences [N], labels [N] (what hover says of each image:
    its path), image(i): image i's file path or PIL image. Returns the page's map entry."""
    n = len(coords)
    rng = np.random.default_rng(seed)
    shown = np.sort(rng.choice(n, drawn, replace=False)) if n > drawn else np.arange(n)
    sheets = write_sheets(shown, image, files)
    colours = palette(len(names))
    lo, hi = coords.min(0), coords.max(0)
    unit = (coords - lo) / np.maximum(hi - lo, 1e-9)
    data = {'x': [round(float(v), 4) for v in unit[shown, 0]], 'y': [round(float(v), 4) for v in unit[shown, 1]],
            'c': [int(clusters[i]) for i in shown], 'p': [round(float(confidences[i]), 3) for i in shown],
            'label': [str(labels[i]) for i in shown], 'names': list(names), 'colours': colours,
            'sizes': np.bincount(np.asarray(clusters), minlength=len(names)).tolist(),
            'sheets': sheets, 'sheet_side': SHEET_SIDE, 'thumb': THUMB}
    with open(os.path.join(files, 'map_data.js'), 'w') as f:
        f.write('window.MAP_DATA = ' + json.dumps(data, separators=(',', ':')) + ';\n')
    with open(os.path.join(os.path.dirname(__file__), 'templates', 'map.js')) as src, \
            open(os.path.join(files, 'map.js'), 'w') as dst:
        dst.write(src.read())
    save_map_png(unit, clusters, names, colours, out_png)
    return {'points': n, 'drawn': len(shown), 'png': os.path.basename(out_png)}


def save_map_png(unit, clusters, names, colours, path, dpi=100):
    """The static map: every image a dot in its cluster's colour, a legend of the clusters' names."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 7), dpi=dpi)
    clusters = np.asarray(clusters)
    size = max(1.0, min(12.0, 30000 / max(len(unit), 1)))
    for c, name in enumerate(names):
        member = clusters == c
        if member.any():
            ax.scatter(unit[member, 0], 1 - unit[member, 1], s=size, c=colours[c], label=name, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(names) <= 30:
        ax.legend(loc='center left', bbox_to_anchor=(1, 0.5), fontsize=7, markerscale=max(1, 8 / size))
    ax.set_title('map of the images (t-SNE of the features the heads read)')
    fig.tight_layout()
    save_figure(fig, path, dpi)
    plt.close(fig)
