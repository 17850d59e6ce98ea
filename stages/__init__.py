"""What every stage script shares around its method: the config keys of each stage (schema.py) and
the run plumbing (run.py: prepare, run folders, resume, the training module)."""
