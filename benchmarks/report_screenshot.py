"""The README's screenshots of report.html, taken by headless Chromium (Debian's `chromium` package):

    ./run.sh && ./run.sh benchmarks/report_screenshot.py [--report results/digits/selflabel/report.html] [--map]

Writes benchmarks/results/report_digits.png (the page's top: settings, metrics, plots, the first clusters), or with
--map benchmarks/results/report_map_digits.png (the map section, one image's thumbnail shown: report.html#screenshot).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--report', default=os.path.join(ROOT, 'results', 'digits', 'selflabel', 'report.html'))
    parser.add_argument('--out', default=None, help='the PNG (default: benchmarks/results/report[_map]_digits.png)')
    parser.add_argument('--map', action='store_true', help='the map section instead of the page\'s top')
    parser.add_argument('--size', default=None, help='window width,height in pixels')
    args = parser.parse_args(argv)
    args.out = args.out or os.path.join(HERE, 'results', 'report_map_digits.png' if args.map else 'report_digits.png')
    args.size = args.size or ('1100,760' if args.map else '1200,2400')
    browser = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')
    if browser is None:
        sys.exit('error: no chromium found; install it (Debian: apt-get install chromium)')
    if not os.path.isfile(args.report):
        sys.exit(f'error: no report at {args.report}; run ./run.sh first')
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile: nothing of the user's browser is read
        subprocess.run([browser, '--headless', '--no-sandbox', '--disable-gpu', f'--user-data-dir={profile}',
                        '--hide-scrollbars', '--virtual-time-budget=5000', f'--window-size={args.size}',
                        f'--screenshot={os.path.abspath(args.out)}',
                        'file://' + os.path.abspath(args.report) + ('#screenshot' if args.map else '')],
                       check=True, capture_output=True, timeout=120)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
