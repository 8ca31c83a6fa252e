"""Dataset IO: IPHD format, re-ID crops, rosbags, and the ground truth they carry."""
