"""Downstream transfer evaluation: methods registry, tasks, splits, metrics and the run entry point."""
