"""Rig simulation: synthetic depth + thermal frames of indoor scenes with people."""
