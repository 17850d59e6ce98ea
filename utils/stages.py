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
