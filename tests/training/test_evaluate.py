"""training/evaluate.py on a synthetic evaluation set (64x48 images) with the tiny checkpoints.

The tiny models' masks are meaningless, so the expected numbers are not known in advance; the
tests check instead that what evaluate.py stores and reports equals what the pipeline's own
masks give when scored directly with `segzero_model.metrics`.
"""

import json
import shutil

import cv2
import numpy as np
import pytest
from conftest import training_script_help
from PIL import Image

from segzero_model.metrics import IoUAccumulator, intersection_and_union
from segzero_model.pipeline import SegZeroPipeline
from segzero_model.result import SegmentationResult, Status
from segzero_training.evaluate import (
    EvaluationError,
    build_parser,
    evaluate,
    load_eval_dataset,
    main,
    score,
)
from segzero_training.heldout import ground_truth_mask

WIDTH, HEIGHT = 64, 48
BATCH = 2
TEXTS = ["the left box", "the round thing", "the big one", "", "the corner"]  # 3: fails
METRIC_KEYS = ("count", "giou", "ciou", "intersection", "union", "failed", "failures")


def gt_masks():
    masks = [np.zeros((HEIGHT, WIDTH), np.uint8) for _ in TEXTS]
    cv2.rectangle(masks[0], (4, 6), (30, 40), 1, thickness=-1)
    cv2.circle(masks[1], (32, 24), 14, 1, thickness=-1)
    cv2.rectangle(masks[2], (0, 0), (63, 47), 1, thickness=-1)
    cv2.rectangle(masks[3], (10, 10), (20, 25), 1, thickness=-1)  # 11 * 16 = 176 pixels
    cv2.circle(masks[4], (60, 44), 6, 1, thickness=-1)
    return [m.astype(bool) for m in masks]


def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in TEXTS]


def make_dataset(directory, image_ids=None):
    from datasets import Dataset, DatasetDict

    data = {
        "image": [Image.fromarray(image) for image in images()],
        "text": TEXTS,
        "mask": [mask.tolist() for mask in gt_masks()],
        "image_id": image_ids or [f"img{i}" for i in range(len(TEXTS))],
        "ann_id": list(range(100, 100 + len(TEXTS))),
        "img_height": [HEIGHT] * len(TEXTS),
        "img_width": [WIDTH] * len(TEXTS),
    }
    DatasetDict({"test": Dataset.from_dict(data)}).save_to_disk(str(directory))
    return directory


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On a shared, loaded CPU two OpenMP threads spin against each other: a tiny batch took
    2-23 s with 2 threads and 0.7 s with 1 here. The results do not depend on it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("eval") / "reasonseg")


def run(dataset_dir, output_dir, *extra):
    argv = [
        "--tiny", "--device", "cpu", "--max-new-tokens", "128", "--batch-size", str(BATCH),
        "--dataset", str(dataset_dir), "--output-dir", str(output_dir), *extra,
    ]  # fmt: skip
    return main(argv)


def read_lines(output_dir):
    return [json.loads(line) for line in (output_dir / "results.jsonl").read_text().splitlines()]


def read_summary(output_dir):
    return json.loads((output_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(dataset_dir, tmp_path_factory, tiny_cache):
    output_dir = tmp_path_factory.mktemp("full") / "out"
    assert run(dataset_dir, output_dir) == 0
    return output_dir


def test_stored_counts_and_summary_equal_the_pipelines_own_masks_scored_directly(
    dataset_dir, uninterrupted, tiny_reasoner, tiny_segmenter
):
    pipeline = SegZeroPipeline(tiny_reasoner, tiny_segmenter)
    pictures, masks = images(), gt_masks()
    accumulator = IoUAccumulator()
    expected = []
    for start in range(0, len(TEXTS), BATCH):  # the same batches as --batch-size 2
        stop = start + BATCH
        results = pipeline.segment_batch(pictures[start:stop], TEXTS[start:stop])
        for result, gt in zip(results, masks[start:stop], strict=True):
            pred = result.mask if result.ok else None
            expected.append((result, *intersection_and_union(pred, gt)))
            accumulator.add(pred, gt)

    records = read_lines(uninterrupted)
    assert [r["index"] for r in records] == list(range(len(TEXTS)))
    for record, (result, intersection, union) in zip(records, expected, strict=True):
        assert (record["intersection"], record["union"]) == (intersection, union)
        assert record["status"] == result.status.value
        assert record["bbox"] == result.to_json_dict()["bbox"]
        assert record["points"] == result.to_json_dict()["points"]
        assert record["reasoning"] == result.reasoning
    assert sum(r["status"] == "ok" for r in records) == 4  # the tiny reasoner's canned answer

    summary = read_summary(uninterrupted)
    assert (summary["giou"], summary["ciou"]) == (accumulator.giou, accumulator.ciou)
    assert summary["count"] == accumulator.count == len(TEXTS)
    assert (summary["intersection"], summary["union"]) == (
        accumulator.summary()["intersection"],
        accumulator.summary()["union"],
    )


def test_summary_records_what_it_takes_to_reproduce_the_number(dataset_dir, uninterrupted):
    summary = read_summary(uninterrupted)
    assert summary["dataset"]["name"] == str(dataset_dir.resolve())
    assert summary["dataset"]["split"] == "test"
    assert summary["dataset"]["rows"] == len(TEXTS) and summary["dataset"]["complete"]
    assert summary["dataset"]["fingerprint"]
    assert summary["reasoning_model"]["path"].endswith("reasoner")
    assert summary["segmentation_model"]["path"].endswith("segmenter")
    assert summary["settings"]["batch_size"] == BATCH
    assert summary["settings"]["max_new_tokens"] == 128
    assert summary["settings"]["device"] == "cpu"
    assert summary["settings"]["dtype"] == "float32"
    assert (summary["settings"]["model_family"], summary["settings"]["image_size"]) == (
        "seg_zero", 840,
    )  # fmt: skip
    assert summary["versions"]["torch"] and summary["versions"]["datasets"]
    assert summary["date"].startswith("20")
    run_file = json.loads((uninterrupted / "run.json").read_text())
    assert run_file["max_new_tokens"] == 128 and run_file["split"] == "test"


def test_a_failed_prediction_scores_zero_with_the_ground_truth_area_as_union(uninterrupted):
    failed = read_lines(uninterrupted)[3]
    assert failed["status"] == "invalid_query" and failed["failed"] is True
    assert (failed["iou"], failed["intersection"], failed["union"]) == (0.0, 0, 176)
    summary = read_summary(uninterrupted)
    assert summary["failed"] == 1 and summary["failures"] == {"invalid_query": 1}
    # Every row has a target: T-acc counts the 4 answered ones; no N-acc without no-target rows.
    assert (summary["target_samples"], summary["t_acc"]) == (5, 0.8)
    assert (summary["no_target_samples"], summary["n_acc"]) == (0, None)


def test_resume_evaluates_no_sample_twice_and_matches_an_uninterrupted_run(
    dataset_dir, uninterrupted, tmp_path
):
    output_dir = tmp_path / "out"
    assert run(dataset_dir, output_dir, "--limit", "2") == 0
    assert [r["index"] for r in read_lines(output_dir)] == [0, 1]
    partial = read_summary(output_dir)
    assert partial["count"] == 2 and not partial["dataset"]["complete"]

    with (output_dir / "results.jsonl").open("a") as file:
        file.write('{"index": 2, "image_id": "img2", "ann')  # a line torn by a crash
    assert run(dataset_dir, output_dir) == 0

    records = read_lines(output_dir)
    assert [r["index"] for r in records] == list(range(len(TEXTS)))  # each row exactly once
    full = read_lines(uninterrupted)
    for resumed, reference in zip(records, full, strict=True):
        for key in ("index", "image_id", "ann_id", "iou", "intersection", "union", "status"):
            assert resumed[key] == reference[key]
    resumed_summary, reference_summary = read_summary(output_dir), read_summary(uninterrupted)
    for key in METRIC_KEYS:
        assert resumed_summary[key] == reference_summary[key]

    # Nothing left to do: a third run evaluates nothing and reports the same numbers.
    assert run(dataset_dir, output_dir) == 0
    assert len(read_lines(output_dir)) == len(TEXTS)
    assert read_summary(output_dir)["giou"] == reference_summary["giou"]


def test_refuses_to_mix_runs(
    dataset_dir, uninterrupted, tmp_path, capsys, tiny_reasoner, tiny_segmenter
):
    copy = tmp_path / "copy"
    shutil.copytree(uninterrupted, copy)
    assert run(dataset_dir, copy, "--max-new-tokens", "64") == 2
    assert "holds results of another run (max_new_tokens: 128 -> 64)" in capsys.readouterr().err

    # The same output directory scored against another dataset with other ids.
    other = make_dataset(tmp_path / "other", image_ids=[f"x{i}" for i in range(len(TEXTS))])
    pipeline = SegZeroPipeline(tiny_reasoner, tiny_segmenter)
    with pytest.raises(EvaluationError, match="another dataset or split"):
        evaluate(pipeline, load_eval_dataset(other), copy)

    (copy / "run.json").unlink()
    assert run(dataset_dir, copy) == 2
    assert "exists without run.json" in capsys.readouterr().err


def test_load_eval_dataset_validates_columns_and_split(dataset_dir, tmp_path, capsys):
    from datasets import Dataset

    assert len(load_eval_dataset(dataset_dir)) == len(TEXTS)
    with pytest.raises(ValueError, match=r"no split 'val'; splits: \['test'\]"):
        load_eval_dataset(dataset_dir, "val")
    Dataset.from_dict({"image": [None], "text": ["x"]}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"no held-out set: it has columns \['image', 'text'\]"):
        load_eval_dataset(tmp_path / "bad")
    assert main(["--dataset", str(tmp_path / "bad"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "expected ['image', 'text', 'mask'] (evaluation layout)" in capsys.readouterr().err
    assert main(["--dataset", str(dataset_dir), "--output-dir", "o", "--batch-size", "0"]) == 2


def test_ground_truth_masks_and_scoring_rules():
    mask = np.zeros((4, 6), np.uint8)
    mask[1:3, 2:5] = 255
    for value in (mask, mask.tolist(), Image.fromarray(mask), np.dstack([mask] * 3)):
        assert ground_truth_mask(value).tolist() == (mask > 0).tolist()
    with pytest.raises(ValueError, match="2-D"):
        ground_truth_mask([1, 2, 3])

    gt = mask > 0
    failure = SegmentationResult(Status.UNPARSEABLE_ANSWER, "q", (6, 4), reason="garbage")
    assert score(failure, gt) == (0, 6, True)
    assert IoUAccumulator().add_counts(0, 0, failed=True) == 0.0  # even on an empty gt
    # A prediction at another size than the ground truth is resized (nearest) to it.
    half = SegmentationResult(Status.OK, "q", (3, 2), mask=np.array([[0, 1, 1], [0, 1, 1]], bool))
    assert score(half, gt) == (6, 16, False)  # columns 2..5 of all 4 rows


def test_a_list_familys_objects_are_scored_as_the_union_of_their_masks():
    from segzero_model.result import ObjectResult

    gt = np.zeros((4, 6), bool)
    gt[:, :2] = gt[:, 4:] = True  # two objects, 16 pixels
    left, right = np.zeros_like(gt), np.zeros_like(gt)
    left[:, :2], right[:, 4:] = True, True
    objects = [ObjectResult((0, 0, 1, 3), (), left), ObjectResult((4, 0, 5, 3), (), right)]
    union = SegmentationResult(Status.OK, "q", (6, 4), mask=left | right, objects=objects)
    assert score(union, gt) == (16, 16, False)
    rebuilt = SegmentationResult(Status.OK, "q", (6, 4), objects=objects)  # no mask: from objects
    assert score(rebuilt, gt) == (16, 16, False)


def test_a_model_family_that_does_not_serve_the_checkpoint_exits_2(
    dataset_dir, tmp_path, tiny_model_dirs, capsys
):
    """--tiny picks the family's own tiny model; a Qwen2.5-VL checkpoint named for qwen3_vl
    is refused before anything loads."""
    reasoner, segmenter = tiny_model_dirs
    argv = [
        "--reasoning-model", str(reasoner), "--segmentation-model", str(segmenter),
        "--model-family", "qwen3_vl", "--device", "cpu", "--max-new-tokens", "16",
        "--dataset", str(dataset_dir), "--output-dir", str(tmp_path / "out"),
    ]  # fmt: skip
    assert main(argv) == 2
    assert "model family 'qwen3_vl' serves" in capsys.readouterr().err


def test_help_lists_every_option_with_its_help():
    assert all(action.help for action in build_parser()._actions)
    out = training_script_help("evaluate.py")
    assert out.startswith("usage: evaluate.py")
    options = ("--reasoning-model", "--dataset", "--output-dir", "--max-new-tokens", "--tiny")
    for option in (*options, "--model-family"):
        assert option in out, option


def test_the_training_layout_and_a_folder_are_evaluated_too(
    training_data_dir, tmp_path, tiny_cache, capsys
):
    """A user's held-out set needs no conversion: prepare_data.py's training layout (boxes
    only: box IoU and parse rate, no gIoU) and its folder layout (masks: gIoU too)."""
    from segzero_model.metrics import box_iou
    from segzero_training.heldout import open_heldout

    output = tmp_path / "train-layout"
    assert run(training_data_dir, output, "--split", "train", "--limit", "2") == 0
    summary = read_summary(output)
    assert summary["giou"] is None and summary["dataset"]["layout"] == "training"
    canned = (84, 168, 420, 630)  # the tiny reasoner's trained-in box, 840 frame = these pixels
    heldout = open_heldout(training_data_dir, "train")
    expected = [box_iou(canned, heldout[i].boxes[0]) for i in range(2)]
    assert [line["box_iou"] for line in read_lines(output)] == pytest.approx(expected)
    assert summary["box_iou"] == pytest.approx(sum(expected) / 2) and summary["parse_rate"] == 1
    assert "box IoU" in capsys.readouterr().out

    folder = tmp_path / "folder"
    for sub in ("images", "masks", "texts"):
        (folder / sub).mkdir(parents=True)
    pairs = zip(images()[:2], gt_masks()[:2], TEXTS[:2], strict=True)
    for name, (image, mask, text) in enumerate(pairs):
        cv2.imwrite(str(folder / "images" / f"{name}.png"), image[:, :, ::-1])
        cv2.imwrite(str(folder / "masks" / f"{name}.png"), mask.astype(np.uint8) * 255)
        (folder / "texts" / f"{name}.txt").write_text(text)
    output = tmp_path / "folder-out"
    assert run(folder, output) == 0
    summary = read_summary(output)
    assert summary["dataset"]["layout"] == "folder" and summary["count"] == 2
    assert summary["giou"] is not None and [r["id"] for r in read_lines(output)] == ["0", "1"]


def test_evaluate_with_a_reasoning_url_sends_rows_concurrently_and_scores_as_locally(
    reasoning_server, tiny_cache, tmp_path, monkeypatch, capsys
):
    """The same rows, scored in the same order, as the local run; the server gets several
    requests at once (--concurrency 3, seen in its in-flight count)."""
    import threading

    from segzero_model.reasoning.remote import RemoteReasoner
    from segzero_training import evaluate

    monkeypatch.setenv("SEGZERO_CACHE", str(tiny_cache))
    dataset = make_dataset(tmp_path / "set")
    common = ["--tiny", "--device", "cpu", "--max-new-tokens", "128", "--dataset", str(dataset)]
    assert evaluate.main([*common, "--output-dir", str(tmp_path / "local")]) == 0

    in_flight, most = [0], [0]
    lock = threading.Lock()
    real = RemoteReasoner.generate

    def counting(self, *args, **kwargs):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        try:
            return real(self, *args, **kwargs)
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(RemoteReasoner, "generate", counting)
    remote_dir = tmp_path / "remote"
    argv = [*common, "--output-dir", str(remote_dir), "--reasoning-url", reasoning_server]
    assert evaluate.main([*argv, "--concurrency", "3"]) == 0
    assert most[0] == 3
    local_rows = read_lines(tmp_path / "local")
    remote_rows = read_lines(remote_dir)
    assert [r["index"] for r in remote_rows] == list(range(len(TEXTS)))
    keys = ("index", "status", "raw_output", "intersection", "union", "failed", "bbox")
    assert [{k: r.get(k) for k in keys} for r in remote_rows] == [
        {k: r.get(k) for k in keys} for r in local_rows
    ]
    summary = read_summary(remote_dir)
    settings = summary["settings"]
    assert (settings["reasoning_url"], settings["concurrency"]) == (reasoning_server, 3)
    assert settings["device"] == "remote" and settings["dtype"] is None
    assert summary["giou"] == read_summary(tmp_path / "local")["giou"]
    capsys.readouterr()
    assert evaluate.main([*common, "--output-dir", str(tmp_path / "x"), "--concurrency", "2"]) == 2
    assert "--concurrency needs --reasoning-url" in capsys.readouterr().err


def test_presence_is_scored_as_gres_does():
    """NOT_FOUND is an empty prediction, not a failure: 1 on an empty ground truth, 0 on a
    target; N-acc and T-acc count the answers by whether the row had something to find."""
    from segzero_training.evaluate import presence_accuracy, score_record
    from segzero_training.heldout import HeldOutSample

    empty, target = np.zeros((4, 6), bool), np.zeros((4, 6), bool)
    target[1:3, 2:5] = True
    none = SegmentationResult(
        Status.NOT_FOUND, "q", (6, 4), reason="the model found no such object"
    )
    assert score(none, empty) == (0, 0, False) and score(none, target) == (0, 6, False)
    picture = np.zeros((4, 6, 3), np.uint8)
    nothing = HeldOutSample(picture, "q", [], empty, {})
    something = HeldOutSample(picture, "q", [(2.0, 1.0, 4.0, 2.0)], target, {})
    right = score_record(none, nothing)
    assert (right["iou"], right["failed"], right["no_target"], right["answered_none"]) == (
        1.0, False, True, True,
    )  # fmt: skip
    wrong = score_record(none, something)
    assert (wrong["iou"], wrong["failed"], wrong["no_target"]) == (0.0, False, False)

    def row(no_target, status):
        return {"no_target": no_target, "answered_none": status == "not_found", "status": status}

    records = [
        row(True, "not_found"),
        row(True, "ok"),
        row(True, "not_found"),
        row(False, "ok"),
        row(False, "not_found"),
        row(False, "unparseable_answer"),
        {"status": "ok"},  # stored before presence was recorded: left out
    ]
    assert presence_accuracy(records) == {
        "no_target_samples": 3,
        "n_acc": pytest.approx(2 / 3),
        "target_samples": 3,
        "t_acc": pytest.approx(1 / 3),
    }
    assert presence_accuracy([row(False, "ok")])["n_acc"] is None
    assert presence_accuracy([row(True, "ok")])["t_acc"] is None


def no_target_set(directory, texts):
    """A two-row evaluation set: row 0 has nothing to find (an empty mask), row 1 a target."""
    from datasets import Dataset, DatasetDict

    masks = [np.zeros((HEIGHT, WIDTH), bool), gt_masks()[0]]
    data = {
        "image": [Image.fromarray(image) for image in images()[:2]],
        "text": texts,
        "mask": [mask.tolist() for mask in masks],
    }
    dataset = directory / "no-target"
    DatasetDict({"test": Dataset.from_dict(data)}).save_to_disk(str(dataset))
    return dataset


def test_a_set_with_no_target_samples_reports_n_acc_and_t_acc(tmp_path, tiny_cache, capsys):
    """An empty ground-truth mask is a no-target sample; the tiny Seg-Zero reasoner (a
    single-object family) names an object on every row, so its N-acc is 0 and it says why."""
    dataset = no_target_set(tmp_path, ["the unicorn", "the left box"])
    output = tmp_path / "out"
    assert run(dataset, output) == 0
    lines, summary = read_lines(output), read_summary(output)
    assert [r["no_target"] for r in lines] == [True, False]
    assert [r["status"] for r in lines] == ["ok", "ok"]  # the canned answer
    assert lines[0]["iou"] == 0.0 and lines[0]["union"] > 0  # a mask where nothing is
    assert (summary["no_target_samples"], summary["n_acc"]) == (1, 0.0)
    assert (summary["target_samples"], summary["t_acc"]) == (1, 1.0)
    assert summary["settings"]["can_answer_none"] is False
    out = capsys.readouterr().out
    assert "N-acc 0.00% over 1 no-target samples  T-acc 100.00% over 1 target samples" in out
    assert "single-object family" in out


def test_a_list_family_that_answers_nothing_scores_n_acc_and_gres_giou(tmp_path, tiny_cache):
    """The tiny Qwen3-VL answers [] for a query with "unicorn" (its canned behaviour): on the
    no-target row that is right (N-acc 1, IoU 1), on the target row wrong (T-acc 0, IoU 0)."""
    dataset = no_target_set(tmp_path, ["the unicorn", "the unicorn on the left"])
    output = tmp_path / "out"
    assert run(dataset, output, "--model-family", "qwen3_vl") == 0
    lines, summary = read_lines(output), read_summary(output)
    assert [r["status"] for r in lines] == ["not_found", "not_found"]
    assert [r["iou"] for r in lines] == [1.0, 0.0] and not any(r["failed"] for r in lines)
    assert (summary["n_acc"], summary["t_acc"], summary["giou"]) == (1.0, 0.0, 0.5)
    assert summary["failed"] == 0 and summary["settings"]["can_answer_none"] is True
