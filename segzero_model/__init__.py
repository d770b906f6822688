"""Seg-Zero reasoning segmentation without ROS: prompt, answer parsing, reasoner (Qwen2.5-VL),
segmenter (SAM2), pipeline, targets and metrics.

Heavy libraries (torch, transformers, sam2) are imported only by the modules that need them, so
the pure parts import in milliseconds.
"""

__version__ = "0.1.0"
