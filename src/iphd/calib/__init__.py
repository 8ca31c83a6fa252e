"""Rig calibration tool: find the holed board in depth and thermal, solve, check and write."""
