"""Depth–thermal fusion person detector of paper A: ResNet backbone, REM, anchors, heads, NMS."""
