#!/usr/bin/env bash
# The commands of this project (see README.md):
#   ./run.sh                  set up .venv, run every stage on the embedded digits dataset, print results
#   ./run.sh test             set up .venv, run the test suite (extra arguments go to pytest)
#   ./run.sh SCRIPT.py ARGS   set up .venv, run a script of the project with its Python (e.g. ./run.sh scan.py ...)
#   ./run.sh python ARGS      the same for any Python command (python -m ..., python -c ...)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=$(command -v python3.11 || command -v python3)
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat .venv/.requirements.sha 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
  echo "$want" > .venv/.requirements.sha
fi

case "${1:-main}" in
  test)
    shift || true
    exec .venv/bin/python -m pytest "$@"
    ;;
  main)
    # --resume: a second call continues (or, when finished, re-mines) the run instead of refusing it
    .venv/bin/python simclr.py --config_env configs/env.yml --config_exp configs/pretext/simclr_digits.yml --resume
    .venv/bin/python scan.py --config_env configs/env.yml --config_exp configs/scan/nnm_digits.yml --resume
    .venv/bin/python selflabel.py --config_env configs/env.yml --config_exp configs/selflabel/selflabel_digits.yml --resume
    .venv/bin/python -m evaluation.report results/digits
    .venv/bin/python eval.py --config_exp configs/selflabel/selflabel_digits.yml \
      --model results/digits/selflabel/model.pth.tar --visualize_prototypes --report --force
    ;;
  *.py)
    exec .venv/bin/python "$@"
    ;;
  python)
    shift
    exec .venv/bin/python "$@"
    ;;
  *)
    echo "usage: ./run.sh [main | test [pytest args] | SCRIPT.py [args] | python [args]]" >&2
    exit 2
    ;;
esac
