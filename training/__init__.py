"""Seg-Zero training glue: data preparation, evaluation and (GRPO/SFT) training scripts."""
