"""The `segzero` command: `infer` segments one image from a text query; `track` answers a query
on a video's first frame and follows the object through the rest; `make-tiny` writes the tiny
offline checkpoints. Exit codes: 0 success, 1 the query failed (see status), 2 bad arguments,
a missing or unreadable image or video, or a model that cannot be found."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from segzero_model.device import DeviceUnavailableError
from segzero_model.errors import ImageLoadError, ModelNotFoundError
from segzero_model.pipeline import DEFAULT_REASONING_MODEL, DEFAULT_SEGMENTATION_MODEL
from segzero_model.tracking import TrackSettings

EXIT_FAILED_QUERY = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segzero", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    infer = commands.add_parser("infer", help="segment the object a text query describes")
    infer.add_argument("--image", required=True, type=Path, help="image file (PNG, JPEG, ...)")
    infer.add_argument("--query", required=True, help='what to segment, e.g. "the red cup"')
    _add_model_options(infer)
    infer.add_argument("--output", type=Path, help="write a PNG overlay (mask, box, points)")
    infer.add_argument("--json", type=Path, help="write the result as JSON")
    _add_tiny_option(infer)

    track = commands.add_parser(
        "track", help="answer a query on a clip's first frame, then track the object"
    )
    track.add_argument(
        "--video", type=Path, metavar="FILE", help="video file (anything OpenCV reads: mp4, avi)"
    )
    track.add_argument(
        "--frames", type=Path, metavar="DIR", help="folder of .jpg/.jpeg/.png frames, name order"
    )
    track.add_argument("--query", required=True, help='what to follow, e.g. "the red cup"')
    track.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        default=Path("segzero-track"),
        help="folder for frames.jsonl and the overlay (default ./segzero-track)",
    )
    track.add_argument("--max-frames", type=int, metavar="N", help="stop after this many frames")
    defaults = TrackSettings()
    track.add_argument(
        "--lost-score",
        type=float,
        default=defaults.lost_score,
        help=f"object presence below this counts as a missed frame (default {defaults.lost_score})",
    )
    track.add_argument(
        "--lost-min-area",
        type=int,
        default=defaults.lost_min_area,
        help=f"mask pixels below this count as a missed frame (default {defaults.lost_min_area})",
    )
    track.add_argument(
        "--lost-frames",
        type=int,
        default=defaults.lost_frames,
        help=f"missed frames in a row that make the track LOST (default {defaults.lost_frames})",
    )
    _add_model_options(track)
    _add_tiny_option(track)

    tiny = commands.add_parser("make-tiny", help="write the tiny offline checkpoints")
    tiny.add_argument("directory", type=Path, help="output directory (reasoner/, segmenter/)")
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reasoning-model",
        default=None,
        help=f"hub id or local directory (default {DEFAULT_REASONING_MODEL})",
    )
    parser.add_argument(
        "--segmentation-model",
        default=None,
        help=f"SAM2 hub id, local directory or .pt file (default {DEFAULT_SEGMENTATION_MODEL})",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default=None, help="bfloat16, float16 or float32")
    parser.add_argument("--max-new-tokens", type=int, default=1024)


def _add_tiny_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="use the built-in tiny random models (offline demo; output is meaningless)",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "make-tiny":
        return _make_tiny(args.directory)
    if args.command == "track":
        return _track(args)
    return _infer(args)


def _make_tiny(directory: Path) -> int:
    from segzero_model.tiny import copy_tiny_models

    reasoner_dir, segmenter_dir = copy_tiny_models(directory)
    print(f"tiny reasoning model:    {reasoner_dir}")
    print(f"tiny segmentation model: {segmenter_dir}")
    return 0


def _infer(args) -> int:
    from segzero_model.images import load_image

    if args.max_new_tokens < 1:
        return _usage_error("--max-new-tokens must be at least 1")
    try:
        image = load_image(args.image)
    except ImageLoadError as error:
        return _usage_error(str(error))

    reasoning_model, segmentation_model = _model_names(args)
    try:
        pipeline = _load_pipeline(args, reasoning_model, segmentation_model)
    except DeviceUnavailableError as error:
        return _usage_error(error.advice("--device cpu"))
    except (ModelNotFoundError, ValueError) as error:
        return _usage_error(str(error))

    result = pipeline.segment(image, args.query)
    _print_result(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result.to_json_dict(), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if args.output is not None:
        from segzero_model.images import save_image
        from segzero_model.overlay import draw_overlay

        save_image(args.output, draw_overlay(image, result))
        print(f"wrote {args.output}")
    return 0 if result.ok else EXIT_FAILED_QUERY


def _track(args) -> int:
    from segzero_model.track_video import TrackInputError, open_frames, track_video

    if args.max_new_tokens < 1:
        return _usage_error("--max-new-tokens must be at least 1")
    if args.max_frames is not None and args.max_frames < 1:
        return _usage_error("--max-frames must be at least 1")
    if args.video is not None and args.frames is not None:
        return _usage_error("give --video FILE or --frames DIR, not both")
    if args.video is None and args.frames is None:
        return _usage_error("give the clip to track: --video FILE or --frames DIR")
    try:
        settings = TrackSettings(
            lost_score=args.lost_score,
            lost_min_area=args.lost_min_area,
            lost_frames=args.lost_frames,
        )
    except ValueError as error:  # "lost_score must be ...": name the option
        return _usage_error("--" + str(error).replace("_", "-"))
    try:
        frames = open_frames(args.video, args.frames)
    except TrackInputError as error:
        return _usage_error(str(error))

    reasoning_model, segmentation_model = _model_names(args)
    try:
        pipeline = _load_pipeline(args, reasoning_model, segmentation_model)
    except DeviceUnavailableError as error:
        return _usage_error(error.advice("--device cpu"))
    except (ModelNotFoundError, ValueError) as error:
        return _usage_error(str(error))

    try:
        run = track_video(
            pipeline,
            frames,
            args.query,
            args.output,
            settings=settings,
            max_frames=args.max_frames,
        )
    except TrackInputError as error:
        return _usage_error(str(error))
    _print_result(run.result)
    if not run.result.ok:
        print(f"not tracked: the first frame's answer is {run.result.status.value}")
        print(f"wrote {run.jsonl}")
        return EXIT_FAILED_QUERY
    _print_track_summary(run)
    return 0


def _print_track_summary(run) -> None:
    rest = run.frames - 1
    print(f"frames:    {run.frames} read; tracked on {run.tracked} of the {rest} after the first")
    if run.lost_at is not None:
        print(f"LOST at frame {run.lost_at} ({run.lost_reason}); not tracked after it")
    if run.track_seconds:
        ms = sorted(seconds * 1000 for seconds in run.track_seconds)
        print(
            f"tracking:  {run.median_track_ms:.1f} ms per frame (median; "
            f"min {ms[0]:.1f}, max {ms[-1]:.1f}, {len(ms)} steps)"
        )
    print(f"wrote {run.jsonl}")
    print(f"wrote {run.overlay}")


def _model_names(args) -> tuple[str, str]:
    if not args.tiny:
        return (
            args.reasoning_model or DEFAULT_REASONING_MODEL,
            args.segmentation_model or DEFAULT_SEGMENTATION_MODEL,
        )
    from segzero_model.tiny import TINY_WARNING, ensure_tiny_models

    print(TINY_WARNING, file=sys.stderr)
    if args.reasoning_model or args.segmentation_model:
        print("note: --tiny replaces --reasoning-model / --segmentation-model", file=sys.stderr)
    return tuple(str(path) for path in ensure_tiny_models())


def _load_pipeline(args, reasoning_model: str, segmentation_model: str):
    from segzero_model.pipeline import SegZeroPipeline

    print(f"loading {reasoning_model} and {segmentation_model} ...", file=sys.stderr)
    return SegZeroPipeline.from_pretrained(
        reasoning_model,
        segmentation_model,
        device=args.device,
        dtype=args.dtype,
        max_new_tokens=args.max_new_tokens,
    )


def _print_result(result) -> None:
    print(f"status:    {result.status.value}" + (f" ({result.reason})" if result.reason else ""))
    print(f"reasoning: {result.reasoning if result.reasoning is not None else '-'}")
    if result.bbox is not None:
        print("bbox:      [" + ", ".join(f"{v:.1f}" for v in result.bbox) + "]")
    if result.points is not None:
        print("points:    " + ", ".join(f"({x:.1f}, {y:.1f})" for x, y in result.points))
    if result.mask is not None:
        print(f"mask:      {result.mask_area} pixels, score {result.score:.3f}")
    timings = ", ".join(
        f"{name} {seconds * 1000:.0f} ms" for name, seconds in result.timings.items()
    )
    print(f"timings:   {timings}")


def _usage_error(message: str) -> int:
    print(f"segzero: error: {message}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
