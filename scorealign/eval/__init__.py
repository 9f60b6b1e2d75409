"""Evaluation: held-out reward, judges, safety, win-rate, red-teaming data, reports."""
