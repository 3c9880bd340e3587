"""Evaluation: the tiny study suite, response checkers and metrics."""
