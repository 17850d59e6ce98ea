"""The three stages, in order: each one's name (its config files' section, its method registry's and schema's key),
the folder its results go to under <root_dir>/<name>/ (SCAN's folder names; a config's `<folder>_folder` key, where
there is one, renames it) and its script. Every place that needs one of these reads this table."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    folder: str
    script: str


STAGES = {stage.name: stage for stage in (Stage('pretext', 'pretext', 'simclr.py'),
                                          Stage('clustering', 'scan', 'scan.py'),
                                          Stage('selflabel', 'selflabel', 'selflabel.py'))}


def override(cfg, key, value):
    """How a user sets `key` for the stage that runs `cfg` on the command line: `<stage>.key=value`, which both a
    single-stage config and a file with stage sections (configs/image_folder*.yml) take."""
    stage = cfg.get('stage')
    return f'{stage}.{key}={value}' if stage else f'{key}={value}'
