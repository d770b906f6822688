"""The object's 3D position and extent from a depth image aligned to the colour camera.

Contract of `locate_object` (every case returns an `ObjectGeometry`, nothing raises for data):
- OK: the eroded mask, mapped onto the depth pixels, holds valid depth; `position` is the
  per-axis median of the inlier points, `size` their per-axis percentile range, both in metres
  in the camera optical frame (x right, y down, z forward). Points are weighted by the surface
  they stand for (z^3, a pixel's footprint on a plane): unweighted, the near half of a tilted
  face has more pixels and pulls the median towards the camera (1.6 cm for a 30 cm face
  turned 35 degrees at 1 m).
- RESOLUTION_MISMATCH: the mask is not colour-sized, the depth image does not match its
  intrinsics, or (depth intrinsics not given) its aspect ratio differs from colour's by > 1%.
- BAD_DEPTH: `depth_m` is not a 2D float image.
- NO_VALID_DEPTH: the mask is empty, covers no depth pixel, or no valid depth lies inside it.
`depth_to_metres` raises `DepthError` (BAD_DEPTH) for encodings, dtypes and shapes it cannot
read; OFF, NO_CAMERA_INFO and NO_DEPTH are for the caller (the ROS node) to report.

Pixel convention (ROS/OpenCV): integer pixel coordinates are pixel centres, so pixel `u`
covers [u - 0.5, u + 0.5]. Scaling an image by `s` with the same field of view maps the outer
edge -0.5 to -0.5: u' = s * (u + 0.5) - 0.5, hence fx' = s * fx and cx' = s * (cx + 0.5) - 0.5.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ASPECT_TOLERANCE = 0.01  # depth/colour aspect ratios may differ this much when only scaled
MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation of a normal
OUTLIER_SIGMAS = 3.0  # keep depths within this many robust sigmas of the median depth...
MIN_DEPTH_BAND_M = 0.05  # ...but never a band narrower than this (a flat face has MAD ~0)
# Extent = a percentile range of the inliers. x and y are bounded by the mask, so trim little
# (a range trims tapering outlines: 0.5..99.5 is 4% short on an ellipse); z carries the depth
# noise, so trim more.
XY_PERCENTILES = (0.5, 99.5)
Z_PERCENTILES = (2.0, 98.0)
ERODE_PX = 3  # colour pixels shaved off the mask's edge first: depth bleeds there
MAX_STAT_POINTS = 20000  # sample larger masks on a grid: as accurate, and fast at 1280x720


class DepthStatus(str, enum.Enum):
    """Outcome of the 3D stage; the names are what the ROS node publishes."""

    OK = "OK"
    OFF = "OFF"  # depth not asked for
    NO_CAMERA_INFO = "NO_CAMERA_INFO"
    NO_DEPTH = "NO_DEPTH"  # no depth frame within tolerance
    BAD_DEPTH = "BAD_DEPTH"  # unsupported encoding or malformed image
    RESOLUTION_MISMATCH = "RESOLUTION_MISMATCH"  # depth/colour sizes that cannot be related
    NO_VALID_DEPTH = "NO_VALID_DEPTH"  # no valid depth inside the (eroded) mask


class DepthError(ValueError):
    """A depth image or camera that cannot be used; `status` says which kind."""

    def __init__(self, status: DepthStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics (no distortion: aligned depth and rectified colour) of a
    `width` x `height` image; pixel centres at integer coordinates."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(np.isfinite(v) for v in values):
            raise ValueError(f"camera intrinsics must be finite, got fx, fy, cx, cy = {values}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(
                f"camera intrinsics need fx > 0 and fy > 0, got fx={self.fx}, fy={self.fy} "
                "(an all-zero CameraInfo.k means an uncalibrated camera)"
            )
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera image size must be positive, got {self.width}x{self.height}")

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int) -> Intrinsics:
        """From the row-major 3x3 camera matrix (`CameraInfo.k`) and the image size."""
        values = [float(v) for v in k]
        if len(values) != 9:
            raise ValueError(f"K must have 9 values (row-major 3x3), got {len(values)}")
        return cls(
            fx=values[0],
            fy=values[4],
            cx=values[2],
            cy=values[5],
            width=int(width),
            height=int(height),
        )

    def scaled_to(self, width: int, height: int) -> Intrinsics:
        """The same camera (same field of view) at `width` x `height`; see the module docstring
        for the pixel-centre convention."""
        sx = width / self.width
        sy = height / self.height
        return Intrinsics(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=sx * (self.cx + 0.5) - 0.5,
            cy=sy * (self.cy + 0.5) - 0.5,
            width=int(width),
            height=int(height),
        )


@dataclass(frozen=True)
class ObjectGeometry:
    """Where the object is and how big, in metres in the camera optical frame
    (x right, y down, z forward). `reason` says why when `status` is not OK."""

    status: DepthStatus
    reason: str = ""
    position: tuple[float, float, float] | None = None  # per-axis (area-weighted) median
    size: tuple[float, float, float] | None = None  # per-axis percentile range of the inliers
    valid_points: int = 0  # inlier points used (large masks are sampled on a pixel grid)
    valid_ratio: float = 0.0  # valid depth pixels / depth pixels under the eroded mask
    points: np.ndarray | None = None  # (N, 3) float32 inliers, when asked for

    @property
    def ok(self) -> bool:
        return self.status is DepthStatus.OK

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (the point cloud is left out)."""
        return {
            "depth_status": self.status.value,
            "depth_reason": self.reason,
            "position_m": None if self.position is None else [round(v, 4) for v in self.position],
            "size_m": None if self.size is None else [round(v, 4) for v in self.size],
            "valid_depth_ratio": round(self.valid_ratio, 4),
            "depth_points": self.valid_points,
        }


_UNIT_ENCODINGS = {"16uc1", "mono16"}
_METRE_ENCODINGS = {"32fc1"}


def depth_to_metres(
    depth: np.ndarray,
    encoding: str,
    depth_scale: float = 0.001,
    min_depth: float = 0.1,
    max_depth: float = 20.0,
) -> np.ndarray:
    """Depth in metres as float32 HxW, NaN where there is no reading: 0, NaN, inf and values
    outside [min_depth, max_depth]. "16UC1"/"mono16" are uint16 units times `depth_scale`
    (0.001: millimetres, RealSense/ZED); "32FC1" is float metres.

    Raises DepthError(BAD_DEPTH) for another encoding, dtype or shape; ValueError for bad limits.
    """
    raw = RawDepth(depth, encoding, depth_scale, min_depth, max_depth)
    return raw.metres(slice(None), slice(None))


class RawDepth:
    """A depth image as the camera sent it, converted to metres only where it is read.

    `locate_object` reads only the depth pixels under the mask's box, so converting the whole
    frame first (0.6 ms of a 1280x720 frame's 2.2 ms on this CPU) is wasted work. The encoding,
    dtype and shape are checked here, at once (DepthError BAD_DEPTH; ValueError for bad limits).
    """

    def __init__(
        self,
        depth: np.ndarray,
        encoding: str,
        depth_scale: float = 0.001,
        min_depth: float = 0.1,
        max_depth: float = 20.0,
    ):
        if not depth_scale > 0:
            raise ValueError(f"depth_scale must be > 0, got {depth_scale}")
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth}, {max_depth}")
        kind = str(encoding).strip().lower()
        if kind not in _UNIT_ENCODINGS and kind not in _METRE_ENCODINGS:
            raise DepthError(
                DepthStatus.BAD_DEPTH,
                f"unsupported depth encoding {encoding!r} (use 16UC1, mono16 or 32FC1)",
            )
        depth = np.asarray(depth)
        if depth.ndim == 3 and depth.shape[2] == 1:
            depth = depth[:, :, 0]
        if depth.ndim != 2 or depth.size == 0:
            raise DepthError(
                DepthStatus.BAD_DEPTH,
                f"depth must be a non-empty HxW image, got shape {depth.shape}",
            )
        self.in_units = kind in _UNIT_ENCODINGS
        if self.in_units and (depth.dtype.kind != "u" or depth.dtype.itemsize != 2):
            raise DepthError(
                DepthStatus.BAD_DEPTH, f"{encoding} depth must be uint16, got {depth.dtype}"
            )
        if not self.in_units and depth.dtype.kind != "f":
            raise DepthError(
                DepthStatus.BAD_DEPTH, f"{encoding} depth must be float, got {depth.dtype}"
            )
        self.array = depth
        self.depth_scale, self.min_depth, self.max_depth = depth_scale, min_depth, max_depth

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape

    def metres(self, rows: slice, cols: slice) -> np.ndarray:
        """The window [rows, cols] in metres (float32, a new array), NaN where invalid."""
        window = self.array[rows, cols]
        if self.in_units:
            metres = window.astype(np.float32) * np.float32(self.depth_scale)
        else:
            metres = window.astype(np.float32, copy=True)
        with np.errstate(invalid="ignore"):
            outside = ~((metres >= self.min_depth) & (metres <= self.max_depth))  # NaN: False
        metres[outside] = np.nan
        return metres


def locate_object(
    mask: np.ndarray,
    depth_m: np.ndarray | RawDepth,
    color: Intrinsics,
    depth: Intrinsics | None = None,
    *,
    erode_px: int = ERODE_PX,
    keep_cloud: bool = False,
    max_cloud_points: int = 5000,
) -> ObjectGeometry:
    """3D position and axis-aligned extent of the masked object.

    `mask`: bool HxW at the colour resolution. `depth_m`: metres from `depth_to_metres`, or a
    `RawDepth` (converted only under the mask), at the depth resolution; `depth` its
    intrinsics, or None when the depth is aligned to colour with the same field of view (then
    `color.scaled_to` the depth size). The mask is eroded by
    `erode_px` colour pixels first, because depth at an object's edge bleeds into the
    background; an empty eroded mask falls back to the un-eroded one. Depths far from the
    median (robust band) are dropped so a background leak cannot move the centroid.
    """
    mask = np.asarray(mask)
    if not isinstance(depth_m, RawDepth):
        depth_m = np.asarray(depth_m)
    if mask.ndim != 2 or mask.shape != (color.height, color.width):
        return _fail(
            DepthStatus.RESOLUTION_MISMATCH,
            f"mask shape {mask.shape} is not the colour image's {color.height}x{color.width} (HxW)",
        )
    if not isinstance(depth_m, RawDepth) and (
        depth_m.ndim != 2 or depth_m.size == 0 or depth_m.dtype.kind != "f"
    ):
        return _fail(
            DepthStatus.BAD_DEPTH,
            f"depth must be a float HxW image in metres, got {depth_m.dtype} {depth_m.shape}",
        )
    depth_height, depth_width = depth_m.shape
    if depth is None:
        color_aspect = color.width / color.height
        depth_aspect = depth_width / depth_height
        if abs(depth_aspect / color_aspect - 1.0) > ASPECT_TOLERANCE:
            return _fail(
                DepthStatus.RESOLUTION_MISMATCH,
                f"depth {depth_width}x{depth_height} and colour {color.width}x{color.height} "
                "have different aspect ratios; give the depth camera's intrinsics",
            )
        depth = color.scaled_to(depth_width, depth_height)
    elif (depth.width, depth.height) != (depth_width, depth_height):
        return _fail(
            DepthStatus.RESOLUTION_MISMATCH,
            f"depth image is {depth_width}x{depth_height} but its intrinsics are for "
            f"{depth.width}x{depth.height}",
        )

    mask = mask if mask.dtype == np.bool_ else mask != 0
    bounds = _bounding_box(mask)
    if bounds is None:
        return _fail(DepthStatus.NO_VALID_DEPTH, "the mask is empty")
    eroded, bounds, eroded_px = _erode(mask, bounds, erode_px)

    rows, cols = _depth_to_color_maps(color, depth)
    top, bottom, left, right = bounds
    # Depth pixels whose centres land in the mask's box: the maps are sorted.
    row0 = int(np.searchsorted(rows, top, side="left"))
    row1 = int(np.searchsorted(rows, bottom, side="right"))
    col0 = int(np.searchsorted(cols, left, side="left"))
    col1 = int(np.searchsorted(cols, right, side="right"))
    if row0 >= row1 or col0 >= col1:
        return _fail(DepthStatus.NO_VALID_DEPTH, "the mask covers no depth pixel")
    # Large masks are sampled on a regular grid of depth pixels: the statistics do not need
    # every pixel, and a grid (unlike a stride over the flat list) cannot alias.
    depth_per_color = (row1 - row0) * (col1 - col0) / eroded.size
    expected_points = np.count_nonzero(eroded) * depth_per_color
    step = max(1, int(np.ceil(np.sqrt(expected_points / MAX_STAT_POINTS))))
    inside = eroded[rows[row0:row1:step, None] - top, cols[None, col0:col1:step] - left]
    mask_pixels = int(np.count_nonzero(inside))
    if mask_pixels == 0:
        return _fail(DepthStatus.NO_VALID_DEPTH, "the mask covers no depth pixel")

    rows_read, cols_read = slice(row0, row1, step), slice(col0, col1, step)
    if isinstance(depth_m, RawDepth):
        window = depth_m.metres(rows_read, cols_read)
    else:
        window = depth_m[rows_read, cols_read]
    ys, xs = np.nonzero(inside & np.isfinite(window))
    if ys.size == 0:
        return _fail(
            DepthStatus.NO_VALID_DEPTH,
            f"no valid depth in the {mask_pixels} depth pixels under the mask",
        )
    z = window[ys, xs].astype(np.float32, copy=False)
    valid_ratio = ys.size / mask_pixels

    keep = _depth_inliers(z)
    if keep is not None:
        ys, xs, z = ys[keep], xs[keep], z[keep]
    x = (xs.astype(np.float32) * step + np.float32(col0 - depth.cx)) * z / np.float32(depth.fx)
    y = (ys.astype(np.float32) * step + np.float32(row0 - depth.cy)) * z / np.float32(depth.fy)

    area = z * z * z  # a pixel's footprint on a plane grows as z^3: weight by surface, not pixels
    low, mid, high = zip(
        _weighted_quantiles(x, area, XY_PERCENTILES),
        _weighted_quantiles(y, area, XY_PERCENTILES),
        _weighted_quantiles(z, area, Z_PERCENTILES),
        strict=True,
    )
    extent = [hi - lo for lo, hi in zip(low, high, strict=True)]
    # The erosion shaved `eroded_px` colour pixels off every side; give that width back.
    extent[0] += 2 * eroded_px * mid[2] / color.fx
    extent[1] += 2 * eroded_px * mid[2] / color.fy

    cloud = None
    if keep_cloud:
        points = np.stack((x, y, z), axis=1)
        cloud = points
        if len(points) > max_cloud_points > 0:
            cloud = points[np.linspace(0, len(points) - 1, max_cloud_points).astype(np.intp)]
        cloud = np.ascontiguousarray(cloud, dtype=np.float32)
    return ObjectGeometry(
        status=DepthStatus.OK,
        position=(float(mid[0]), float(mid[1]), float(mid[2])),
        size=(float(extent[0]), float(extent[1]), float(extent[2])),
        valid_points=int(z.size),
        valid_ratio=float(valid_ratio),
        points=cloud,
    )


def _fail(status: DepthStatus, reason: str) -> ObjectGeometry:
    return ObjectGeometry(status=status, reason=reason)


def _bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right), inclusive, of the set pixels; None when there are none."""
    row_any = mask.any(axis=1)
    rows = np.flatnonzero(row_any)
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _erode(
    mask: np.ndarray, bounds: tuple[int, int, int, int], erode_px: int
) -> tuple[np.ndarray, tuple[int, int, int, int], int]:
    """The mask eroded by `erode_px` (square kernel), cropped to its own bounding box, with
    that box in full-image coordinates and the erosion actually applied (0 on fallback)."""
    top, bottom, left, right = bounds
    crop = mask[top : bottom + 1, left : right + 1]
    if erode_px <= 0:
        return crop, bounds, 0
    import cv2

    # Pad with the image's own pixels (zeros inside the image) so the crop erodes like the
    # full frame; cv2 treats pixels beyond the image edge as set, as for the full frame.
    pad_top, pad_left = min(top, 1), min(left, 1)
    pad_bottom, pad_right = min(mask.shape[0] - 1 - bottom, 1), min(mask.shape[1] - 1 - right, 1)
    padded = mask[top - pad_top : bottom + 1 + pad_bottom, left - pad_left : right + 1 + pad_right]
    kernel = np.ones((2 * erode_px + 1, 2 * erode_px + 1), np.uint8)
    eroded = cv2.erode(padded.view(np.uint8), kernel).view(np.bool_)
    eroded = eroded[pad_top : pad_top + crop.shape[0], pad_left : pad_left + crop.shape[1]]
    inner = _bounding_box(eroded)
    if inner is None:
        return crop, bounds, 0
    in_top, in_bottom, in_left, in_right = inner
    return (
        eroded[in_top : in_bottom + 1, in_left : in_right + 1],
        (top + in_top, top + in_bottom, left + in_left, left + in_right),
        erode_px,
    )


@functools.lru_cache(maxsize=16)
def _depth_to_color_maps(color: Intrinsics, depth: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """For each depth row and column, the colour row and column its pixel centre falls on
    (nearest; same optical centre). Non-decreasing, may run outside the colour image."""
    cols = np.floor(color.cx + color.fx * (np.arange(depth.width) - depth.cx) / depth.fx + 0.5)
    rows = np.floor(color.cy + color.fy * (np.arange(depth.height) - depth.cy) / depth.fy + 0.5)
    rows, cols = rows.astype(np.intp), cols.astype(np.intp)
    rows.flags.writeable = False
    cols.flags.writeable = False
    return rows, cols


def _weighted_quantiles(
    values: np.ndarray, weights: np.ndarray, percentiles: tuple[float, float]
) -> tuple[float, float, float]:
    """(low, median, high) of `values` at (percentiles[0], 50, percentiles[1]), each value
    counting `weights`."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order], dtype=np.float64)
    targets = np.array([percentiles[0], 50.0, percentiles[1]]) / 100.0 * cumulative[-1]
    ranks = np.minimum(np.searchsorted(cumulative, targets), values.size - 1)
    return tuple(float(v) for v in values[order[ranks]])


def _depth_inliers(z: np.ndarray) -> np.ndarray | None:
    """Boolean keep-mask of depths within a robust band around the median; None keeps all."""
    median = _median(z)
    spread = MAD_TO_SIGMA * _median(np.abs(z - median))
    band = max(OUTLIER_SIGMAS * float(spread), MIN_DEPTH_BAND_M)
    keep = np.abs(z - median) <= band
    return None if keep.all() else keep


def _median(values: np.ndarray) -> float:
    middle = values.size // 2
    return float(np.partition(values, middle)[middle])
