"""Evidence that GRPO training learns, not only runs: the tiny model's mean reward rises.

    python -m benchmarks.grpo_learning                      # about 6 minutes on a 2-core CPU
    python -m benchmarks.grpo_learning --steps 40 --output-dir /tmp/grpo_learning
    python -m benchmarks.grpo_learning --learning-rate 0    # control: same run, no updates

GRPO learns only from differences between the samples of one prompt: a group whose rewards are
all equal has zero advantage. The built-in tiny reasoner was trained to repeat one answer, so
its samples are identical and nothing can be learnt from it. Here a fresh tiny Qwen2.5-VL (same
builder, random weights) is first taught, in about a minute, to *guess* on one scene: it learns
the answer format, with thinking, but every coordinate is a random 3-digit number (box corners
in order, points inside the box), and often it skips the thinking (40%) or the second point
(30%), like a base model that follows the format imperfectly. Sampled at temperature 1, every
group differs in every number, so the soft accuracy rewards (IoU, box L1, point distance) and
the two format rewards vary within each group from the first step. The real training script
(`training/grpo.py`: its recipe parsing, checks, data, rewards and TRL's GRPOTrainer) then
trains on that scene; the reward can only rise by keeping the format and moving the numbers
towards the target, so a rising curve is learning, and the `--learning-rate 0` control, which
samples the same groups, stays flat.

The random vision tower is frozen (the script's `freeze_vision_tower=true`; `--train-vision`
trains it).
Adam moves every weight by about the learning rate in its first steps; on a random vision tower
that scrambles the image features and the reward drops to 0 within four steps. The learning
rate (5e-4, warmed up over 5 steps) is the highest that stayed stable here; at 1e-3 the tiny
model's digit counting breaks now and then and the curve is noisier, not steeper.

Writes `curve.json` (one entry per step), `metrics.jsonl` (the training script's log) and
`grpo_learning.png` (reward components and total; completion length) to `--output-dir`
(default: `segzero_grpo_learning` in the temporary directory). The guessing model is cached
beside the tiny checkpoints (`$SEGZERO_CACHE`, default ~/.cache/segzero).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from segzero_model.reasoning.reply_format import BOX_KEY, POINT_KEYS, reply_text

SCENE_SEED = 0  # synthetic_row's scene: "the red square", box (569,475)-(763,669)
LOW, HIGH = 100, 839  # guessed coordinates: always 3 digits, inside the 840x840 frame
THOUGHTS = ("It is there.", "I see it.", "The object is on the left.", "Look at the shape.")
SKIP_THINKING = 0.4  # how often a guess has no <think> block (thinking_format 0)
SKIP_POINT = 0.3  # how often a guess has no points_2 (strict_format and points 0)
RECIPE = ("format_reward=strict", "accuracy_reward=soft")  # soft: graded, so groups differ
DEFAULT_OUTPUT = Path(tempfile.gettempdir()) / "segzero_grpo_learning"


# --------------------------------------------------------------------------- the task


def scene_row() -> dict:
    """The one training scene, in the released layout (`segzero_training.synthetic`)."""
    from segzero_training.synthetic import synthetic_row

    return synthetic_row(0, random.Random(SCENE_SEED))


def guess_answer(rng: random.Random) -> str:
    """What the guessing model is taught to say: the right format, random numbers, and now
    and then no thinking or no second point."""
    x1, x2 = sorted(rng.sample(range(LOW, HIGH + 1), 2))
    y1, y2 = sorted(rng.sample(range(LOW, HIGH + 1), 2))
    answer = {BOX_KEY: [x1, y1, x2, y2]}
    for key in POINT_KEYS:
        answer[key] = [rng.randint(x1, x2), rng.randint(y1, y2)]
    if rng.random() < SKIP_POINT:
        del answer[POINT_KEYS[1]]
    if rng.random() < SKIP_THINKING:
        return reply_text(json.dumps(answer))
    return reply_text(json.dumps(answer), thinking=rng.choice(THOUGHTS))


def teach_guessing(model, processor, row: dict, *, steps: int, batch: int, seed: int) -> float:
    """Maximum likelihood on `guess_answer` samples after the scene's prompt; the final loss.

    The prompt (900 image tokens) is the same for every sample, so it runs once per step and
    its key/value cache is shared by the batch of answers: ten times cheaper than full rows.
    The vision tower keeps its random weights (its features are computed once); GRPO later
    trains all of the model, as the training script does.
    """
    import torch
    from transformers import DynamicCache

    from segzero_model.reasoning.prompts import build_messages

    rng = random.Random(seed)
    tokenizer = processor.tokenizer
    end, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id
    text = processor.apply_chat_template(
        build_messages(row["problem"]), tokenize=False, add_generation_prompt=True
    )
    inputs = processor(text=[text], images=[row["image"]], return_tensors="pt")
    prompt = inputs["input_ids"][0]
    length = len(prompt)
    image_tokens = (inputs["input_ids"] == model.config.image_token_id).long()
    # Qwen's 3D (mrope) positions for the prompt and up to 200 answer tokens after it.
    room = 200
    with torch.no_grad():
        image = model.model.get_image_features(
            inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True
        )
    positions, _ = model.model.get_rope_index(
        torch.cat([inputs["input_ids"], torch.full((1, room), pad)], 1),
        mm_token_type_ids=torch.cat([image_tokens, torch.zeros(1, room, dtype=torch.long)], 1),
        image_grid_thw=inputs["image_grid_thw"],
    )

    def loss_of_batch() -> torch.Tensor:
        answers = [
            tokenizer(guess_answer(rng), add_special_tokens=False)["input_ids"] + [end]
            for _ in range(batch)
        ]
        longest = max(map(len, answers))
        # Each row: the prompt's last token, then the answer (right-padded); labels shifted.
        ids = torch.full((batch, longest + 1), pad)
        labels = torch.full((batch, longest + 1), -100)
        attention = torch.zeros(batch, length + longest, dtype=torch.long)
        attention[:, :length] = 1
        for i, answer in enumerate(answers):
            ids[i, 0] = prompt[-1]
            ids[i, 1 : 1 + len(answer)] = torch.tensor(answer)
            labels[i, : len(answer)] = torch.tensor(answer)
            attention[i, length : length + len(answer)] = 1
        cache = DynamicCache(config=model.config)
        model(
            input_ids=prompt[None, :-1],
            attention_mask=torch.ones(1, length - 1, dtype=torch.long),
            mm_encoder_outputs={"image": image},
            image_grid_thw=inputs["image_grid_thw"],
            mm_token_type_ids=image_tokens[:, :-1],
            position_ids=positions[:, :, : length - 1],
            cache=cache,
            use_cache=True,
        )
        cache.batch_repeat_interleave(batch)
        logits = model(
            input_ids=ids,
            attention_mask=attention,
            position_ids=positions[:, :, length - 1 : length + longest].expand(3, batch, -1),
            cache=cache,
            use_cache=True,
        ).logits
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())

    params = [p for name, p in model.named_parameters() if "visual" not in name]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    # Warm up, then cosine-decay to 5%, so the model settles on the distribution.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(
            (step + 1) / 10, 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps))
        ),
    )
    model.train()
    losses = []
    for _ in range(steps):
        loss = loss_of_batch()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return statistics.fmean(losses[-10:])


def write_guessing_model(directory: Path, *, steps: int, seed: int) -> float:
    """Build the guessing checkpoint in `directory` (random tiny Qwen2.5-VL, then
    `teach_guessing`); the final teaching loss."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig

    from segzero_model.tiny.qwen import write_tiny_qwen

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        write_tiny_qwen(directory, seed=seed, canned_answer=None)
        processor = AutoProcessor.from_pretrained(directory)
        model = AutoModelForImageTextToText.from_pretrained(directory, dtype=torch.float32)
        loss = teach_guessing(model, processor, scene_row(), steps=steps, batch=32, seed=seed)
    tokenizer = processor.tokenizer
    end, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id
    # No sampling settings of its own: the trainer's temperature and top-p/k apply as given.
    model.generation_config = GenerationConfig(
        bos_token_id=pad, pad_token_id=pad, eos_token_id=[end, pad]
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return loss


def guessing_model(cache_root: Path | None = None, *, steps: int = 250, seed: int = 0) -> Path:
    """The guessing checkpoint, built once (a minute or two) into the tiny-model cache under a
    name that hashes its recipe and this builder's code, so a changed builder rebuilds."""
    from segzero_model.tiny import build_into_cache, builder_fingerprint, default_cache_dir

    digest = hashlib.sha256(builder_fingerprint().encode())
    for part in (scene_row, guess_answer, teach_guessing, write_guessing_model):
        digest.update(inspect.getsource(part).encode())
    digest.update(repr((SCENE_SEED, LOW, HIGH, THOUGHTS, SKIP_THINKING, SKIP_POINT)).encode())
    digest.update(repr((steps, seed)).encode())
    root = Path(cache_root) if cache_root is not None else default_cache_dir()
    target = root / f"grpo-guesser-{digest.hexdigest()[:12]}"

    def built(path: Path) -> bool:
        return (path / "config.json").is_file()

    if built(target):
        return target
    started = time.perf_counter()
    losses = []
    build_into_cache(
        target,
        lambda directory: losses.append(write_guessing_model(directory, steps=steps, seed=seed)),
        built,
    )
    loss = f"final loss {losses[0]:.3f}/token" if losses else "built by another process"
    print(
        f"built the guessing model in {time.perf_counter() - started:.0f} s ({loss}): {target}",
        flush=True,
    )
    return target


def write_scene_dataset(directory: Path, rows: int) -> Path:
    """`rows` copies of the scene, saved as the released data are (`dataset_path`)."""
    from datasets import Dataset, DatasetDict

    from segzero_training.prepare_data import features

    row = scene_row()
    dataset = Dataset.from_list(
        [{**row, "id": f"scene-{i}"} for i in range(rows)], features=features()
    )
    DatasetDict({"train": dataset}).save_to_disk(str(directory))
    return directory


# --------------------------------------------------------------------------- the curve


def reward_names(log: dict) -> list[str]:
    """Reward names in the order the trainer logs them (``rewards/<name>/mean``)."""
    return [k.split("/")[1] for k in log if k.startswith("rewards/") and k.endswith("/mean")]


def curve_point(log: dict) -> dict:
    """One step of the curve from one line of metrics.jsonl."""
    return {
        "step": log["step"],
        "reward": log["reward"],
        "reward_std": log.get("reward_std"),
        "frac_reward_zero_std": log.get("frac_reward_zero_std"),
        "rewards": {name: log[f"rewards/{name}/mean"] for name in reward_names(log)},
        "reward_stds": {name: log.get(f"rewards/{name}/std") for name in reward_names(log)},
        "completion_length": log["completions/mean_length"],
    }


def read_curve(metrics: Path) -> list[dict]:
    """The per-step training logs (the ones with rewards) of a metrics.jsonl."""
    logs = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [curve_point(log) for log in logs if "reward" in log]


def short_name(name: str) -> str:
    return name.removesuffix("_reward").removeprefix("soft_")


def table_header(names: list[str]) -> str:
    cells = ["step", "reward", "std"] + [short_name(n)[:12] for n in names] + ["length", "time_s"]
    return " ".join(f"{c:>12}" if i >= 1 else f"{c:>5}" for i, c in enumerate(cells))


def table_row(point: dict, elapsed: float) -> str:
    values = [point["reward"], point["reward_std"] or 0.0, *point["rewards"].values()]
    cells = [f"{point['step']:>5}"] + [f"{v:>12.3f}" for v in values]
    cells += [f"{point['completion_length']:>12.1f}", f"{elapsed:>12.0f}"]
    return " ".join(cells)


def summarize(curve: list[dict], window: int) -> dict:
    """Mean reward over the first and the last `window` steps (they may overlap when short)."""
    window = max(1, min(window, len(curve)))
    first = statistics.fmean(p["reward"] for p in curve[:window])
    last = statistics.fmean(p["reward"] for p in curve[-window:])
    return {
        "window": window,
        "first_mean_reward": first,
        "last_mean_reward": last,
        "rise": last - first,
    }


def trailing_mean(values: list[float], window: int) -> list[float]:
    """Mean of each value and the up to `window - 1` before it."""
    return [statistics.fmean(values[max(0, i + 1 - window) : i + 1]) for i in range(len(values))]


def plot(curve: list[dict], path: Path, title: str, window: int) -> Path:
    """Two panels against the step: each reward component (left axis, 0-1) and the total (right
    axis, 0 to its maximum, with its trailing mean); the mean completion length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [p["step"] for p in curve]
    names = list(curve[0]["rewards"])
    figure, (rewards, lengths) = plt.subplots(
        2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    for name in names:
        rewards.plot(steps, [p["rewards"][name] for p in curve], label=short_name(name), lw=1)
    rewards.set_ylabel("reward component (mean of the step)")
    rewards.set_ylim(-0.02, 1.02)
    total = rewards.twinx()
    totals = [p["reward"] for p in curve]
    total.plot(steps, totals, color="black", lw=0.8, alpha=0.4, label="total")
    total.plot(
        steps, trailing_mean(totals, window), color="black", lw=2.2,
        label=f"total, mean of {window} steps",
    )  # fmt: skip
    total.set_ylim(-0.02 * len(names), 1.02 * len(names))  # same scale: component x count
    total.set_ylabel(f"total reward (max {len(names)})")
    handles, labels = rewards.get_legend_handles_labels()
    more_handles, more_labels = total.get_legend_handles_labels()
    rewards.legend(
        handles + more_handles, labels + more_labels, fontsize=7, ncol=4,
        loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False,
    )  # fmt: skip
    figure.suptitle(title, fontsize=9)
    lengths.plot(steps, [p["completion_length"] for p in curve], color="tab:gray")
    lengths.set_ylabel("completion length (tokens)")
    lengths.set_xlabel("GRPO step")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


# --------------------------------------------------------------------------- the run


def live_table_callback(started: float):
    """Prints the table's header, then one row per step as the trainer logs it."""
    from transformers import TrainerCallback

    class LiveTable(TrainerCallback):
        header_printed = False

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "reward" not in logs:
                return
            point = curve_point({"step": state.global_step, **logs})
            if not self.header_printed:
                print(table_header(list(point["rewards"])), flush=True)
                self.header_printed = True
            print(table_row(point, time.perf_counter() - started), flush=True)

    return LiveTable()


def train(model: Path, data: Path, run_dir: Path, options: argparse.Namespace) -> Path:
    """GRPO through the real training script's recipe parsing, checks and trainer; returns the
    metrics.jsonl it wrote."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from segzero_training import grpo
    from segzero_training.runs import METRICS_FILE

    argv = [
        f"model_name_or_path={model}",
        f"dataset_path={data}",
        f"output_dir={run_dir}",
        *RECIPE,
        "dtype=float32",
        "bf16=false",
        "gradient_checkpointing=false",  # tiny model: recomputing costs more than it saves
        "global_batch_size=1",  # one prompt (the scene) per step ...
        f"num_generations={options.generations}",  # ... sampled this many times
        f"per_device_train_batch_size={options.generations}",
        "gradient_accumulation_steps=1",
        f"max_completion_length={options.max_completion_length}",
        f"max_steps={options.steps}",
        f"learning_rate={options.learning_rate}",
        "lr_scheduler_type=constant_with_warmup",
        "warmup_steps=5",  # Adam's first steps move every weight by the full rate: ease in
        "weight_decay=0.0",
        f"beta={options.beta}",
        "temperature=1.0",
        f"seed={options.seed}",
        "logging_steps=1",
        "save_strategy=no",
        "disable_tqdm=true",
    ]
    # Adam's first steps move every weight by about the learning rate whatever its gradient;
    # on this random vision tower that scrambles the 900 image features the decoder reads,
    # and the reward drops to 0 within 4 steps (lr 1e-3): keep it frozen unless asked.
    argv.append(f"freeze_vision_tower={not options.train_vision}")
    args, config, _ = grpo.parse_and_check(argv)
    trainer = grpo.build_trainer(args, config)
    trainer.remove_callback(PrinterCallback)  # it prints each log as a dict; the table replaces it
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(live_table_callback(time.perf_counter()))
    trainer.train()
    return run_dir / METRICS_FILE


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=80, help="GRPO steps")
    parser.add_argument("--generations", type=int, default=16, help="samples per step")
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--beta", type=float, default=0.0, help="KL coefficient (0: no ref.)")
    parser.add_argument("--max-completion-length", type=int, default=80)
    parser.add_argument(
        "--train-vision",
        action="store_true",
        help="also train the (random) vision tower (freeze_vision_tower=false): it collapses",
    )
    parser.add_argument("--window", type=int, default=10, help="steps averaged at each end")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teach-steps", type=int, default=250, help="guessing model's training")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--cache-dir", type=Path, help="where the guessing model is cached")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    from transformers.utils import logging as hf_logging

    from segzero_training.recipe import RecipeError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    hf_logging.set_verbosity_warning()
    started = time.perf_counter()
    model = guessing_model(options.cache_dir, steps=options.teach_steps, seed=options.seed)
    output = options.output_dir
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="grpo-learning-") as scratch:
        data = write_scene_dataset(Path(scratch) / "scene", rows=max(8, options.steps))
        training_started = time.perf_counter()
        try:
            metrics = train(model, data, Path(scratch) / "run", options)
        except RecipeError as error:  # e.g. options the training script's checks reject
            print(f"grpo_learning.py: {error}", file=sys.stderr)
            return 2
        training_s = time.perf_counter() - training_started
        shutil.copyfile(metrics, output / "metrics.jsonl")
    curve = read_curve(output / "metrics.jsonl")
    summary = summarize(curve, options.window) | {
        "steps": len(curve),
        "training_s": training_s,
        "total_s": time.perf_counter() - started,
        "learning_rate": options.learning_rate,
        "generations": options.generations,
        "beta": options.beta,
        "train_vision": options.train_vision,
        "recipe": list(RECIPE),
    }
    (output / "curve.json").write_text(json.dumps({"summary": summary, "curve": curve}, indent=1))
    title = (
        f"GRPO on the tiny model, lr={options.learning_rate:g}, "
        f"{options.generations} samples/step: mean reward "
        f"{summary['first_mean_reward']:.2f} -> {summary['last_mean_reward']:.2f}"
    )
    figure = plot(curve, output / "grpo_learning.png", title, summary["window"])
    print(
        f"mean reward, first {summary['window']} steps {summary['first_mean_reward']:.3f} -> "
        f"last {summary['window']} steps {summary['last_mean_reward']:.3f} "
        f"(rise {summary['rise']:+.3f}); {len(curve)} steps in {training_s:.0f} s of training, "
        f"{summary['total_s']:.0f} s in all"
    )
    print(f"wrote {output / 'curve.json'}, {output / 'metrics.jsonl'} and {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
