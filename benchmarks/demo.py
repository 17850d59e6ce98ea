"""How long the demo takes: `./run.sh` (pretext, NNM, self-labelling, report on scikit-learn's digits) from a fresh
results/digits, timed on this machine, with the accuracy it ends at.

    ./run.sh benchmarks/demo.py      # results/digits must not exist: move an earlier run away first

Writes benchmarks/results/demo.{json,md} and replaces the block 'demo' of its page (README.md or docs/). Run it
alone on the machine.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from accuracy import machine, publish  # noqa: E402


CONFIGS = ['configs/pretext/simclr_digits.yml', 'configs/scan/nnm_digits.yml', 'configs/selflabel/selflabel_digits.yml']


def markdown(result):
    return (f"`./run.sh` took {result['minutes']:.1f} minutes from a fresh start (the packages already installed) and "
            f"ended at ACC {result['acc']:.3f} on the digits; {result['machine']}.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--render', action='store_true', help='only write the line again from the saved JSON')
    parser.add_argument('--results', default=os.path.join(HERE, 'results'))
    parser.add_argument('--readme', default=None, help='its block\'s page (default: found)')
    args = parser.parse_args(argv)
    result = None
    if not args.render:
        run = os.path.join(ROOT, 'results', 'digits')
        if os.path.exists(run):
            sys.exit(f'error: {run} exists: the demo would continue it; move it away to time a fresh run')
        t0 = time.time()
        subprocess.run([os.path.join(ROOT, 'run.sh')], cwd=ROOT, check=True)
        minutes = (time.time() - t0) / 60
        with open(os.path.join(run, 'selflabel', 'eval.json')) as f:
            acc = json.load(f)['acc']
        result = {'minutes': round(minutes, 2), 'acc': acc, 'machine': machine()}
    publish('demo', 'demo', result, markdown, args.results, args.readme, CONFIGS)


if __name__ == '__main__':
    main()
