"""The `segzero` command: `infer` segments one image from a text query; `track` answers a query
on a video's first frame and follows the object through the rest; `make-tiny` writes the tiny
offline checkpoints. `infer --depth` adds the object's 3D position and size from a depth image.
Exit codes: 0 success, also when the model answers that no such object is in view (status
not_found: a valid answer), 1 the query failed (see status), 2 bad arguments, a missing or
unreadable image, video or depth file, or a model that cannot be found. A depth problem found
after the answer (no valid depth under the mask, ...) is a status line, never a failure."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segzero_model.config import PipelineOptions, add_pipeline_arguments, options_from_args
from segzero_model.device import DeviceUnavailableError
from segzero_model.errors import ImageLoadError, ModelNotFoundError
from segzero_model.result import Status
from segzero_model.segmentation.tracks import TrackSettings
from segzero_model.spatial.depth import (
    DepthError,
    Intrinsics,
    ObjectGeometry,
    depth_to_metres,
    locate_object,
)

EXIT_FAILED_QUERY = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segzero", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    infer = commands.add_parser("infer", help="segment the object a text query describes")
    infer.add_argument("--image", required=True, type=Path, help="image file (PNG, JPEG, ...)")
    infer.add_argument("--query", required=True, help='what to segment, e.g. "the red cup"')
    add_pipeline_arguments(infer.add_argument_group("models"))
    infer.add_argument("--output", type=Path, help="write a PNG overlay (mask, box, points)")
    infer.add_argument("--json", type=Path, help="write the result as JSON")
    _add_depth_options(infer)
    _add_tiny_option(infer)

    track = commands.add_parser(
        "track", help="answer a query on a clip's first frame, then track each object it names"
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
    add_pipeline_arguments(track.add_argument_group("models"))
    _add_tiny_option(track)

    tiny = commands.add_parser("make-tiny", help="write the tiny offline checkpoints")
    tiny.add_argument("directory", type=Path, help="output directory (reasoner/, segmenter/)")
    return parser


def _add_depth_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--depth",
        type=Path,
        metavar="FILE",
        help="depth aligned to the image: 16-bit PNG (units, see --depth-scale) or .npy of float "
        "metres; adds the object's 3D position and size (camera optical frame)",
    )
    parser.add_argument(
        "--intrinsics",
        metavar="FX,FY,CX,CY",
        help="pinhole intrinsics of the colour image, in its pixels (needed with --depth)",
    )
    parser.add_argument(
        "--depth-scale",
        type=float,
        default=0.001,
        metavar="S",
        help="metres per 16-bit depth unit (default 0.001: millimetres)",
    )


def _add_tiny_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="use the built-in tiny random models of --model-family (offline demo; output is "
        "meaningless; qwen3_vl: the tiny Qwen3-VL, two objects for a query with the word "
        '"all", none for "unicorn", else one)',
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
    depth_input = None
    if args.depth is not None or args.intrinsics is not None:
        try:
            depth_input = _read_depth_input(args, width=image.shape[1], height=image.shape[0])
        except _DepthInputError as error:
            return _usage_error(str(error))

    pipeline = _open_pipeline(args)
    if pipeline is None:
        return EXIT_USAGE

    result = pipeline.segment(image, args.query)
    _print_result(result)
    summary = {**result.to_json_dict(), "model_family": pipeline.reasoner.family.name}
    if depth_input is not None and result.ok and result.mask is not None:
        geometry = depth_input.locate(result.mask)
        _print_geometry(geometry)
        summary.update(geometry.to_json_dict())
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if args.output is not None:
        from segzero_model.images import save_image
        from segzero_model.overlay import draw_overlay

        save_image(args.output, draw_overlay(image, result))
        print(f"wrote {args.output}")
    return 0 if result.ok or result.status is Status.NOT_FOUND else EXIT_FAILED_QUERY


class _DepthInputError(ValueError):
    """--depth / --intrinsics that cannot be used: a usage error (exit 2), unlike a depth
    problem found after the answer, which is only a status line."""


@dataclass(frozen=True)
class _DepthInput:
    depth_m: np.ndarray
    color: Intrinsics

    def locate(self, mask: np.ndarray) -> ObjectGeometry:
        return locate_object(mask, self.depth_m, self.color)


def _read_depth_input(args, *, width: int, height: int) -> _DepthInput:
    if args.depth is None or args.intrinsics is None:
        raise _DepthInputError("--depth and --intrinsics go together: give both")
    if not args.depth_scale > 0:
        raise _DepthInputError(f"--depth-scale must be > 0, got {args.depth_scale}")
    try:
        fx, fy, cx, cy = (float(v) for v in args.intrinsics.split(","))
        color = Intrinsics(fx, fy, cx, cy, width, height)
    except ValueError as error:
        detail = str(error) if "intrinsics" in str(error) else "expected 4 numbers"
        raise _DepthInputError(
            f"--intrinsics {args.intrinsics!r}: {detail} (FX,FY,CX,CY in the image's pixels)"
        ) from None
    raw, encoding = _read_depth_file(args.depth)
    try:
        depth_m = depth_to_metres(raw, encoding, depth_scale=args.depth_scale)
    except DepthError as error:
        raise _DepthInputError(f"{args.depth}: {error}") from None
    return _DepthInput(depth_m, color)


def _read_depth_file(path: Path) -> tuple[np.ndarray, str]:
    """A 16-bit single-channel PNG (16UC1 units) or a .npy of float metres (32FC1)."""
    if not path.is_file():
        raise _DepthInputError(f"depth file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise _DepthInputError(f"cannot read depth file {path}: {error}") from None
        if array.dtype.kind == "f":
            return array, "32FC1"
        if array.dtype == np.uint16:
            return array, "16UC1"
        raise _DepthInputError(f"{path}: a .npy depth must hold float metres, got {array.dtype}")
    import cv2

    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise _DepthInputError(f"cannot read depth file {path} (a 16-bit PNG or a .npy)")
    if array.dtype != np.uint16 or array.ndim != 2:
        channels = 1 if array.ndim == 2 else array.shape[2]
        raise _DepthInputError(
            f"{path} is a {array.dtype.itemsize * 8}-bit image with {channels} channel(s); depth "
            "must be a 16-bit single-channel PNG (units times --depth-scale) or a .npy of metres"
        )
    return array, "16UC1"


def _print_geometry(geometry: ObjectGeometry) -> None:
    if not geometry.ok:
        print(f"depth:     {geometry.status.value} ({geometry.reason})")
        return
    x, y, z = geometry.position
    print(
        f"depth:     OK ({geometry.valid_points} points, "
        f"{geometry.valid_ratio:.0%} of the mask has depth)"
    )
    print(f"position:  x {x:+.3f}, y {y:+.3f}, z {z:.3f} m (camera optical frame)")
    print("size:      " + " x ".join(f"{v:.3f}" for v in geometry.size) + " m (x, y, z)")


def _track(args) -> int:
    from segzero_model.segmentation.video import TrackInputError, open_frames, track_video

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

    pipeline = _open_pipeline(args)
    if pipeline is None:
        return EXIT_USAGE

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
        return 0 if run.result.status is Status.NOT_FOUND else EXIT_FAILED_QUERY
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


def _pipeline_options(args) -> PipelineOptions:
    """The options the command line names; with --tiny, the family's tiny models in their
    place (said on stderr, as is a model option that --tiny overrides)."""
    options = options_from_args(args)
    if not args.tiny:
        return options
    from segzero_model.tiny import TINY_WARNING

    print(TINY_WARNING, file=sys.stderr)
    named, defaults = options, PipelineOptions()
    if (named.reasoning_model, named.segmentation_model) != (
        defaults.reasoning_model,
        defaults.segmentation_model,
    ):
        print("note: --tiny replaces --reasoning-model / --segmentation-model", file=sys.stderr)
    return options.with_tiny_models()


def _open_pipeline(args):
    """The pipeline the options name; None after saying why it cannot load."""
    from segzero_model.pipeline import SegZeroPipeline

    options = _pipeline_options(args)
    if options.reasoning_url:
        print(
            f"loading {options.segmentation_model}; reasoning by {options.reasoning_model} at "
            f"{options.reasoning_url} ...",
            file=sys.stderr,
        )
    else:
        print(
            f"loading {options.reasoning_model} and {options.segmentation_model} ...",
            file=sys.stderr,
        )
    try:
        return SegZeroPipeline.from_options(options)
    except DeviceUnavailableError as error:
        _usage_error(error.advice("--device cpu"))
    except (ModelNotFoundError, ValueError) as error:
        _usage_error(str(error))
    return None


def _print_result(result) -> None:
    """The status, the reasoning, then every object (box, points, score, mask area)."""
    print(f"status:    {result.status.value}" + (f" ({result.reason})" if result.reason else ""))
    print(f"reasoning: {result.reasoning if result.reasoning is not None else '-'}")
    if result.status is Status.NOT_FOUND:
        print("objects:   none (the model found no such object)")
    objects = result.objects
    if len(objects) > 1:
        print(f"objects:   {len(objects)}")
    for index, obj in enumerate(objects, start=1):
        prefix = f"object {index}:" if len(objects) > 1 else None
        if prefix:
            print(prefix)
        _print_object(obj.bbox, obj.points, obj.mask, obj.score, "  " if prefix else "")
    if len(objects) > 1 and result.mask is not None:
        print(f"mask:      {result.mask_area} pixels (union of the {len(objects)} objects)")
    if not objects:  # a result made without objects (older callers, test doubles)
        _print_object(result.bbox, result.points, result.mask, result.score, "")
    timings = ", ".join(
        f"{name} {seconds * 1000:.0f} ms" for name, seconds in result.timings.items()
    )
    print(f"timings:   {timings}")


def _print_object(bbox, points, mask, score, indent: str) -> None:
    if bbox is not None:
        print(f"{indent}bbox:      [" + ", ".join(f"{v:.1f}" for v in bbox) + "]")
    if points:
        print(f"{indent}points:    " + ", ".join(f"({x:.1f}, {y:.1f})" for x, y in points))
    if mask is not None:
        area = int(np.count_nonzero(mask))
        print(f"{indent}mask:      {area} pixels, score {score:.3f}")


def _usage_error(message: str) -> int:
    print(f"segzero: error: {message}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
