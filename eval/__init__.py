"""Evaluation: report labelers, clinical-efficacy and NLG metrics, the `rrg-eval` CLI."""
