"""python tests/helpers/interrupted.py STAGE EPOCH ARGS...: STAGE's main(ARGS), stopped by Ctrl-C at the start of
epoch EPOCH in every process (torchrun tests: a multi-process run that has to be resumed)."""
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

stage_name, stop_at, *argv = sys.argv[1:]
stage = importlib.import_module(stage_name)
epochs = importlib.import_module('stages.epochs')  # the epoch loop every stage runs
real, calls = epochs.train_epoch, []


def train_epoch(*args, **kwargs):
    calls.append(1)
    if len(calls) == int(stop_at):
        raise KeyboardInterrupt
    return real(*args, **kwargs)


epochs.train_epoch = train_epoch
stage.main(argv)
