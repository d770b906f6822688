"""training/prepare_data.py on small synthetic masks drawn with OpenCV (64x48 images)."""

import json
import math
import pickle

import cv2
import numpy as np
import pytest
from conftest import training_script_help
from PIL import Image

from segzero_model.targets import mask_to_target, parse_solution
from segzero_training.prepare_data import COLUMNS, build_parser, load_training_dataset, main

WIDTH, HEIGHT = 64, 48


def rectangle(x1, y1, x2, y2):
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.rectangle(mask, (x1, y1), (x2, y2), 255, thickness=-1)
    return mask


def disk(cx, cy, r):
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.circle(mask, (cx, cy), r, 255, thickness=-1)
    return mask


def picture(seed):
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def expected_solution(mask):
    """The target of the ORIGINAL mask, scaled by 840/size and rounded half up (the spec)."""
    target = mask_to_target(mask)

    def xy(x, y):
        return float(math.floor(x * 840 / WIDTH + 0.5)), float(math.floor(y * 840 / HEIGHT + 0.5))

    x1, y1 = xy(*target.bbox[:2])
    x2, y2 = xy(*target.bbox[2:])
    return (x1, y1, x2, y2), tuple(xy(*p) for p in target.points)


# Three good samples, one corrupt image file, one empty mask.
MASKS = {
    "box": rectangle(5, 7, 40, 30),
    "disk": disk(30, 24, 12),
    "corner": rectangle(50, 0, 63, 47),  # touches the right and top image borders
    "broken": rectangle(1, 1, 9, 9),
    "empty": np.zeros((HEIGHT, WIDTH), np.uint8),
}
TEXTS = {name: f"the {name} object" for name in MASKS}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    for sub in ("images", "masks", "texts"):
        (root / sub).mkdir()
    for seed, (name, mask) in enumerate(MASKS.items()):
        if name == "broken":
            (root / "images" / f"{name}.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
        else:
            cv2.imwrite(str(root / "images" / f"{name}.png"), picture(seed))
        cv2.imwrite(str(root / "masks" / f"{name}.png"), mask)
        (root / "texts" / f"{name}.txt").write_text(TEXTS[name] + "\n", encoding="utf-8")
    return root


def test_folder_build_counts_skips_and_writes_the_released_layout(folder, tmp_path, capsys):
    output = tmp_path / "data"
    assert main(["--folder", str(folder), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "kept 3, skipped-corrupt 1, skipped-empty 1" in printed

    dataset = load_training_dataset(output)
    assert dataset.column_names == list(COLUMNS)
    assert sorted(dataset["id"]) == ["box", "corner", "disk"]
    for row in dataset:
        name = row["id"]
        assert row["problem"] == TEXTS[name]
        assert (row["img_height"], row["img_width"]) == (HEIGHT, WIDTH)
        assert row["image"].size == (840, 840)
        assert parse_solution(row["solution"]) == expected_solution(MASKS[name])
        # The image is the original resized with PIL bilinear, stored losslessly.
        original = cv2.cvtColor(
            cv2.imread(str(folder / "images" / f"{name}.png")), cv2.COLOR_BGR2RGB
        )
        resized = Image.fromarray(original).resize((840, 840), Image.Resampling.BILINEAR)
        assert np.array_equal(np.asarray(row["image"].convert("RGB")), np.asarray(resized))


def test_image_size_writes_another_familys_frame(folder, tmp_path):
    """--image-size 896 (Qwen3-VL's): images and solutions in that square, clamped to it."""
    output = tmp_path / "data"
    assert main(["--folder", str(folder), "--output", str(output), "--image-size", "896"]) == 0
    row = next(r for r in load_training_dataset(output) if r["id"] == "corner")
    assert row["image"].size == (896, 896)
    # 50 * 896 / 64 = 700; 63 * 896 / 64 = 882; 47 * 896 / 48 = 877.33 -> 877.
    assert parse_solution(row["solution"])[0] == (700.0, 0.0, 882.0, 877.0)
    assert main(["--folder", str(folder), "--output", str(tmp_path / "x"), "--image-size", "0"])
    assert main(["--folder", str(folder), "--resize", str(output), "--output", str(tmp_path)])


def test_solution_of_a_border_mask_stays_in_the_frame(folder, tmp_path):
    output = tmp_path / "data"
    assert main(["--folder", str(folder), "--output", str(output)]) == 0
    row = next(r for r in load_training_dataset(output) if r["id"] == "corner")
    (x1, y1, x2, y2), _ = parse_solution(row["solution"])
    # 63 * 840 / 64 = 826.875 -> 827; 47 * 840 / 48 = 822.5 -> 823 (half up); top row 0.
    assert (x1, y1, x2, y2) == (656.0, 0.0, 827.0, 823.0)
    assert row["solution"].startswith("<box>(656,0),(827,823)</box><points>(")


def test_limit_stops_after_that_many_kept_rows_and_seed_shuffles(folder, tmp_path, capsys):
    output = tmp_path / "data"
    argv = ["--folder", str(folder), "--output", str(output), "--limit", "2", "--seed", "3"]
    assert main(argv) == 0
    assert "kept 2," in capsys.readouterr().out
    assert len(load_training_dataset(output)) == 2


def test_existing_output_needs_overwrite(folder, tmp_path, capsys):
    output = tmp_path / "data"
    argv = ["--folder", str(folder), "--output", str(output), "--limit", "1"]
    assert main(argv) == 0
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert len(load_training_dataset(output)) == 1


def test_jsonl_layout_and_a_missing_mask(tmp_path, capsys):
    (tmp_path / "pics").mkdir()
    cv2.imwrite(str(tmp_path / "pics" / "a.png"), picture(7))
    cv2.imwrite(str(tmp_path / "a_mask.png"), MASKS["disk"])
    lines = [
        {"image": "pics/a.png", "mask": "a_mask.png", "text": "round thing", "id": "first"},
        {"image": "pics/a.png", "mask": "nowhere.png", "text": "ghost"},
    ]
    (tmp_path / "annotations.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8"
    )
    output = tmp_path / "data"
    assert main(["--folder", str(tmp_path), "--output", str(output)]) == 0
    assert "kept 1, skipped-corrupt 1, skipped-empty 0" in capsys.readouterr().out
    (row,) = load_training_dataset(output)
    assert (row["id"], row["problem"]) == ("first", "round thing")
    assert parse_solution(row["solution"]) == expected_solution(MASKS["disk"])


def test_no_usable_sample_and_bad_arguments(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.png").write_bytes(b"garbage")
    output = tmp_path / "data"
    assert main(["--folder", str(tmp_path), "--output", str(output)]) == 1
    assert "no usable sample (kept 0, skipped-corrupt 1" in capsys.readouterr().err
    assert not output.exists()
    assert main(["--output", str(output)]) == 2
    assert main(["--folder", str(tmp_path / "nothing"), "--output", str(output)]) == 2
    assert "neither annotations.jsonl nor images/" in capsys.readouterr().err


def released_rows(count=2):
    image = Image.fromarray(picture(1)).resize((840, 840))
    return {
        "id": [str(i) for i in range(count)],
        "problem": ["left cup"] * count,
        "solution": ["<box>(10,20),(300,400)</box><points>(100,200),(150,250)</points>"] * count,
        "image": [image] * count,
        "img_height": [480] * count,
        "img_width": [640] * count,
    }


def test_loads_an_existing_dataset_dir_saved_as_dataset_or_dataset_dict(tmp_path):
    from datasets import Dataset, DatasetDict

    from segzero_training.prepare_data import features

    dataset = Dataset.from_dict(released_rows(), features=features())
    dataset.save_to_disk(str(tmp_path / "plain"))
    DatasetDict({"train": dataset}).save_to_disk(str(tmp_path / "dict"))
    for name in ("plain", "dict"):
        loaded = load_training_dataset(tmp_path / name)
        assert len(loaded) == 2 and loaded[0]["problem"] == "left cup"
    with pytest.raises(ValueError, match=r"no split 'test'; splits: \['train'\]"):
        load_training_dataset(tmp_path / "dict", split="test")


def test_column_validation_names_what_is_missing(tmp_path):
    from datasets import Dataset

    rows = released_rows()
    del rows["solution"]
    Dataset.from_dict(rows).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['solution'\]"):
        load_training_dataset(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_training_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a dataset saved with save_to_disk"):
        load_training_dataset(tmp_path / "empty")


def test_refcocog_annotations(tmp_path, capsys):
    mask_utils = pytest.importorskip("pycocotools.mask")
    images_dir, refer_dir = tmp_path / "train2014", tmp_path / "refcocog"
    images_dir.mkdir()
    refer_dir.mkdir()
    names = ["COCO_train2014_000000000001.jpg", "COCO_train2014_000000000002.png"]
    cv2.imwrite(str(images_dir / names[0]), picture(1))
    cv2.imwrite(str(images_dir / names[1]), picture(2))
    rle = mask_utils.encode(np.asfortranarray(MASKS["disk"] > 0))
    rle["counts"] = rle["counts"].decode("ascii")  # as stored in instances.json
    instances = {
        "images": [
            {"id": 1, "file_name": names[0], "height": HEIGHT, "width": WIDTH},
            {"id": 2, "file_name": names[1], "height": HEIGHT, "width": WIDTH},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "segmentation": rle},
            {"id": 11, "image_id": 2, "segmentation": [[5, 7, 40, 7, 40, 30, 5, 30]]},
            {"id": 12, "image_id": 2, "segmentation": []},  # no foreground: skipped as empty
        ],
    }
    (refer_dir / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
    refs = [
        {
            "ref_id": 0,
            "ann_id": 10,
            "image_id": 1,
            "split": "train",
            "sentences": [{"sent_id": 0, "sent": "the round one"}, {"sent_id": 1, "sent": "disk"}],
        },
        {
            "ref_id": 1,
            "ann_id": 11,
            "image_id": 2,
            "split": "train",
            "sentences": [{"sent_id": 2, "sent": "the box"}],
        },
        {
            "ref_id": 2,
            "ann_id": 12,
            "image_id": 2,
            "split": "train",
            "sentences": [{"sent_id": 3, "sent": "nothing"}],
        },
        {
            "ref_id": 3,
            "ann_id": 11,
            "image_id": 2,
            "split": "val",
            "sentences": [{"sent_id": 4, "sent": "validation box"}],
        },
    ]
    (refer_dir / "refs(umd).p").write_bytes(pickle.dumps(refs, protocol=2))

    output = tmp_path / "data"
    argv = ["--coco-images", str(images_dir), "--refcoco", str(refer_dir), "--output"]
    assert main([*argv, str(output)]) == 0
    assert "kept 3, skipped-corrupt 0, skipped-empty 1" in capsys.readouterr().out
    rows = {row["id"]: row for row in load_training_dataset(output)}
    assert sorted(rows) == ["0_0", "0_1", "1_2"]
    assert rows["0_0"]["problem"] == "the round one"
    assert parse_solution(rows["0_1"]["solution"]) == expected_solution(MASKS["disk"])
    (x1, y1, x2, y2), _ = parse_solution(rows["1_2"]["solution"])
    assert abs(x1 - 5 * 840 / WIDTH) <= 14 and abs(y2 - 30 * 840 / HEIGHT) <= 18  # polygon

    assert main([*argv, str(tmp_path / "val"), "--split", "val"]) == 0
    assert list(load_training_dataset(tmp_path / "val", split="val")["id"]) == ["3_4"]
    assert main([*argv, str(tmp_path / "nope"), "--split", "testB"]) == 2
    assert "splits found: ['train', 'val']" in capsys.readouterr().err


def test_help_lists_every_option_with_its_help():
    assert all(action.help for action in build_parser()._actions)
    out = training_script_help("prepare_data.py")
    assert out.startswith("usage: prepare_data.py")
    for option in ("--folder", "--coco-images", "--refcoco", "--output", "--limit", "--seed"):
        assert option in out, option
