"""What the `openai` reasoner backend costs over the local one: the same random tiny checkpoint
answers the same queries locally and through `transformers serve` on this machine, greedy, so
both give the same tokens and the difference is the transfer (PNG encoding, HTTP, streaming) and
the server's own overhead; one JSON object.

    python -m benchmarks.remote_overhead                     # CPU
    python -m benchmarks.remote_overhead --device cuda       # the server and the local model on it

The image is encoded losslessly (PNG) at the family's 840x840 frame, as the backend sends it;
`png_bytes` and `png_encode_s` are that step alone. `overhead_s` is remote minus local time per
query (median). `same_answers` counts queries answered with the same text (a reply cut in the
middle of a character differs: the server drops an unfinished UTF-8 sequence). The image is
random noise, which PNG cannot compress: a camera frame is smaller. Needs
`transformers[serving]` (the test extra).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import provenance, transformers_server
from segzero_model.config import add_pipeline_arguments


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_pipeline_arguments(parser, ("device",), device="cpu")  # the server's and the local
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    missing = transformers_server.missing_serving_modules()
    if missing:
        parser.error(f"transformers serve needs {missing}: pip install 'transformers[serving]'")

    from segzero_model.reasoning.chat import png_data_url, reasoning_image
    from segzero_model.reasoning.local import Reasoner
    from segzero_model.reasoning.remote import RemoteReasoner
    from segzero_model.tiny.qwen import write_tiny_qwen

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    queries = [f"the object number {i}" for i in range(args.queries)]
    with tempfile.TemporaryDirectory(prefix="segzero-remote-") as scratch:
        # DeepSpeed, imported on the way, prints to stdout: keep stdout for the JSON.
        with contextlib.redirect_stdout(sys.stderr):
            checkpoint = write_tiny_qwen(Path(scratch) / "qwen", canned_answer=None)
            local = Reasoner.from_pretrained(
                checkpoint, device=args.device, max_new_tokens=args.new_tokens
            )
        frame = reasoning_image(image, local.family.image_size)
        started = time.perf_counter()
        data_url = png_data_url(frame)
        encode_s = time.perf_counter() - started
        process, url = transformers_server.start(args.device, Path(scratch) / "serve.log")
        try:
            remote = RemoteReasoner(
                url, str(checkpoint), family=local.family, max_new_tokens=args.new_tokens
            )
            remote.generate([image], [queries[0]])  # warm-up: the server loads the model
            local.generate([image], [queries[0]])
            local_s, remote_s, same = [], [], 0
            for query in queries:
                started = time.perf_counter()
                (here,) = local.generate([image], [query])
                local_s.append(time.perf_counter() - started)
                started = time.perf_counter()
                (there,) = remote.generate([image], [query])
                remote_s.append(time.perf_counter() - started)
                same += here.text.strip() == there.text.strip()
        finally:
            transformers_server.stop(process)
    report = {
        "benchmark": "remote_overhead",
        "device": args.device,
        "queries": len(queries),
        "new_tokens": args.new_tokens,
        "png_bytes": len(data_url),
        "png_encode_s": encode_s,
        "local_s_median": statistics.median(local_s),
        "remote_s_median": statistics.median(remote_s),
        "overhead_s_median": statistics.median(
            r - h for r, h in zip(remote_s, local_s, strict=True)
        ),
        "same_answers": same,
    }
    provenance.publish(report, args.output)


if __name__ == "__main__":
    main()
