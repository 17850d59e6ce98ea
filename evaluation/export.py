"""The clustered images as folders (eval.py --export DIR): DIR/<cluster name>/<file>, symbolic links to the
originals (or copies with --copy), images under a confidence (--min-confidence) in DIR/_unsure/, and DIR/index.csv
mapping every exported file to its source, cluster and confidence. The originals are only read. Two images of the
same file name from different folders both arrive, the second as <stem>_2<ext> (and so on). DIR must be empty or
absent; with --force a folder that an earlier export wrote (its index.csv lists every file in it) is replaced."""
import csv
import os
import shutil

from utils.errors import UserError

INDEX = 'index.csv'
UNSURE = '_unsure'


def exported_files(out):
    """Every file under `out`, relative to it."""
    return sorted(os.path.relpath(os.path.join(d, f), out) for d, _, files in os.walk(out) for f in files)


def check_target(out, sources, force):
    """Before anything is computed: `out` is empty or absent, or (with force) an earlier export; never a folder
    that holds the images themselves."""
    if sources:
        real = os.path.realpath(out)
        images = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in sources])
        for folder in {images, os.path.realpath(images)}:
            if real == folder or folder.startswith(real + os.sep) or real.startswith(folder + os.sep):
                raise UserError(f'--export {out} overlaps the images\' folder {images}; give a folder outside it')
    if not os.path.isdir(out):
        if os.path.exists(out):
            raise UserError(f'--export {out} is a file; give a folder')
        return
    present = exported_files(out)
    if not present and not os.listdir(out):
        return
    if not force:
        raise UserError(f'--export {out} is not empty; give an empty or new folder, or --force to replace an earlier '
                        'export there')
    listed = set()
    if os.path.isfile(os.path.join(out, INDEX)):
        with open(os.path.join(out, INDEX), newline='') as f:
            listed = {row['file'] for row in csv.DictReader(f)} | {INDEX}
    strangers = [p for p in present if p not in listed]
    if strangers:
        raise UserError(f'--export {out} holds files no earlier export wrote (e.g. {strangers[0]}); --force only '
                        'replaces an export: give an empty or new folder')


def unique_name(folder, name, taken):
    """name, or <stem>_2<ext>, _3 ... when `folder` already receives a file of that name."""
    stem, ext = os.path.splitext(name)
    candidate, n = name, 1
    while (folder, candidate) in taken:
        n += 1
        candidate = f'{stem}_{n}{ext}'
    taken.add((folder, candidate))
    return candidate


def export(out, paths, clusters, names, confidences, min_confidence=0.0, copy=False, force=False):
    """Write the export (module docstring): paths [N] sources, clusters [N] the model's cluster ids, names [N] their
    (merged) clusters' names, confidences [N] of those. Returns {folder: count}."""
    check_target(out, paths, force)
    if os.path.isdir(out):
        shutil.rmtree(out)  # check_target allowed it: empty, or only what an earlier export wrote
    partial = out.rstrip(os.sep) + '.partial'
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    taken, counts, rows = set(), {}, []
    for path, c, cluster_name, p in zip(paths, clusters, names, confidences):
        folder = cluster_name if p >= min_confidence else UNSURE
        name = unique_name(folder, os.path.basename(path), taken)
        os.makedirs(os.path.join(partial, folder), exist_ok=True)
        target = os.path.join(partial, folder, name)
        if copy:
            shutil.copy2(path, target)
        else:
            os.symlink(os.path.abspath(path), target)
        counts[folder] = counts.get(folder, 0) + 1
        rows.append([os.path.join(folder, name), os.path.abspath(path), int(c), cluster_name, f'{float(p):.4f}'])
    with open(os.path.join(partial, INDEX), 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['file', 'source', 'cluster', 'name', 'confidence'])
        writer.writerows(rows)
    os.replace(partial, out)
    return counts
