"""GRPO's rule-based rewards: Seg-Zero's for one object (`single_object`), VisionReasoner's for
a list of objects (`objects`), how both read TRL's dataset columns (`columns`), and the registry
of reward names a recipe picks from (`registry`)."""
