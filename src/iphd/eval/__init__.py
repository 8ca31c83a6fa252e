"""Evaluation of detections against ground truth: the official IPHD average precision."""
