"""The README's screenshot of report.html, taken by headless Chromium (Debian's `chromium` package):

    ./run.sh && ./run.sh benchmarks/report_screenshot.py [--report results/digits/selflabel/report.html]

Writes benchmarks/results/report_digits.png (the page's top: settings, metrics, plots, the first clusters).
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
    parser.add_argument('--out', default=os.path.join(HERE, 'results', 'report_digits.png'))
    parser.add_argument('--size', default='1200,2400', help='window width,height in pixels')
    args = parser.parse_args(argv)
    browser = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')
    if browser is None:
        sys.exit('error: no chromium found; install it (Debian: apt-get install chromium)')
    if not os.path.isfile(args.report):
        sys.exit(f'error: no report at {args.report}; run ./run.sh first')
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile: nothing of the user's browser is read
        subprocess.run([browser, '--headless', '--no-sandbox', '--disable-gpu', f'--user-data-dir={profile}',
                        '--hide-scrollbars', f'--window-size={args.size}', f'--screenshot={os.path.abspath(args.out)}',
                        'file://' + os.path.abspath(args.report)], check=True, capture_output=True, timeout=120)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
