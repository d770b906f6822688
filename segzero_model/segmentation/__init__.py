"""The segmentation stage: SAM2 turns the reasoner's box and points into a mask (`segmenter`),
and then follows the object on newer frames with its video memory (`streaming_tracker`, the
track bookkeeping in `tracks`, whole clips in `video`)."""
