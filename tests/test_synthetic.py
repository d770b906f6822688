"""training/synthetic.py: rows in the released layout whose solution is the named shape's target."""

import numpy as np

from segzero_model.rewards import parse_solution
from training.prepare_data import COLUMNS
from training.synthetic import COLOURS, synthetic_dataset


def test_rows_are_deterministic_and_in_the_released_layout():
    first, again = synthetic_dataset(6, seed=3), synthetic_dataset(6, seed=3)
    assert first.column_names == list(COLUMNS)
    assert first["solution"] == again["solution"] and first["problem"] == again["problem"]
    assert first["solution"] != synthetic_dataset(6, seed=4)["solution"]


def test_the_solution_box_and_points_lie_on_the_named_shape():
    for row in synthetic_dataset(8, seed=0):
        image = np.asarray(row["image"])
        assert image.shape == (840, 840, 3) and (row["img_width"], row["img_height"]) == (840, 840)
        colour = COLOURS[row["problem"].split()[1]]
        (x1, y1, x2, y2), points = parse_solution(row["solution"])
        on_shape = np.all(image == colour, axis=2)
        ys, xs = np.nonzero(on_shape)
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == (x1, y1, x2, y2)
        for x, y in points:  # inscribed-circle centres are inside the shape
            assert on_shape[int(y), int(x)]
