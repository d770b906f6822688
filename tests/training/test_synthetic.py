"""training/synthetic.py: rows in the released layout whose solution is the named shape's target."""

import numpy as np
from conftest import training_script_help

from segzero_model.targets import parse_solution
from segzero_training.prepare_data import COLUMNS, load_training_dataset
from segzero_training.synthetic import COLOURS, build_parser, main, synthetic_dataset


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


def test_the_command_writes_what_grpo_reads_and_keeps_an_existing_set(tmp_path, capsys):
    output = tmp_path / "synthetic"
    assert main(["--output", str(output), "--rows", "3", "--seed", "2"]) == 0
    assert f"wrote {output}: 3 train, 4 test rows" in capsys.readouterr().out
    written = load_training_dataset(output)  # what grpo.py and sft.py read
    assert written["solution"] == synthetic_dataset(3, seed=2)["solution"]
    held_out = load_training_dataset(output, "test")  # other scenes: seed + 1
    assert held_out["solution"] == synthetic_dataset(4, seed=3)["solution"]
    assert main(["--output", str(output), "--rows", "2"]) == 2
    assert "exists and is not empty (--overwrite replaces it)" in capsys.readouterr().err
    assert main(["--output", str(output), "--rows", "2", "--overwrite"]) == 0
    assert len(load_training_dataset(output)) == 2
    assert main(["--output", str(output), "--rows", "0"]) == 2
    assert main(["--output", str(output), "--test-rows", "-1", "--overwrite"]) == 2


def test_help_lists_every_option_with_its_help():
    assert all(action.help for action in build_parser()._actions)
    out = training_script_help("synthetic.py")
    assert out.startswith("usage: synthetic.py")
    for option in ("--output", "--rows", "--seed", "--overwrite"):
        assert option in out, option
