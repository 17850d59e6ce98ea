"""Print the metrics.json of every stage of a run as one table: python -m evaluation.report results/digits"""
import json
import os
import sys

from utils.stages import STAGES

FOLDERS = [stage.folder for stage in STAGES.values()]


def stage_metrics(run_dir):
    """[(stage, its metrics.json)] for every stage of the run that wrote one, in stage order."""
    rows = []
    for stage in FOLDERS:
        path = os.path.join(run_dir, stage, 'metrics.json')
        if os.path.isfile(path):
            rows.append((stage, json.load(open(path))))
    return rows


def table(run_dir):
    rows = stage_metrics(run_dir)
    if not rows:
        return f'no metrics.json under {run_dir}/{{{",".join(FOLDERS)}}}'
    keys = sorted({k for _, m in rows for k in m})
    lines = ['| stage | ' + ' | '.join(keys) + ' |', '|---' * (len(keys) + 1) + '|']
    for stage, metrics in rows:
        cells = ['n/a' if metrics.get(k) is None else
                 f'{metrics[k]:.4f}' if isinstance(metrics[k], float) and k != 'seconds' else str(metrics[k])
                 for k in keys]
        lines.append(f'| {stage} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


if __name__ == '__main__':
    print(table(sys.argv[1] if len(sys.argv) > 1 else 'results/digits'))
