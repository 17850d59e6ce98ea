"""Evaluation: features in dataset order, metrics, weighted kNN, the label-free selection criteria and the
reports (the metrics table and report.html)."""
