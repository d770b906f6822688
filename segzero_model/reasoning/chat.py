"""The chat a reasoning model is asked in, built once for both reasoners: the local one
(`local.Reasoner`, through the processor's chat template) and the remote one
(`remote.RemoteReasoner`, as an OpenAI chat-completions request whose server applies
the same template to the same turn).

One user turn: the image, then the family's prompt text. No system message: the model's chat
template adds its own default (Qwen2.5-VL's "You are a helpful assistant."; none for Qwen3-VL),
the same on both sides. The image is the square the model answers in, the family's
``image_size`` on a side (bilinear); the remote request carries it as a PNG (lossless), so the
server decodes exactly the pixels the local processor gets.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["openai_messages", "png_data_url", "reasoning_image", "user_messages"]


def user_messages(text: str) -> list[dict]:
    """One user turn: the image, then the text (as `prompt.build_messages` builds it)."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def reasoning_image(image, size: int) -> Image.Image:
    """RGB PIL image at `size` x `size` (bilinear), the frame the model answers in. Any layout
    `images.to_rgb8` takes (gray, RGBA, 16-bit, float, PIL of any mode) is converted first."""
    from PIL import Image

    from segzero_model.images import to_rgb8

    return Image.fromarray(to_rgb8(image)).resize((size, size), Image.BILINEAR)


def png_data_url(image: Image.Image) -> str:
    """`image` as a ``data:image/png;base64,...`` URL (lossless; fast compression, as the bytes
    only cross a network once)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def openai_messages(image, text: str, size: int) -> list[dict]:
    """`user_messages(text)` in the OpenAI chat-completions form: the image part becomes an
    ``image_url`` holding `reasoning_image(image, size)` as a PNG data URL."""
    url = png_data_url(reasoning_image(image, size))
    (turn,) = user_messages(text)
    content = [
        {"type": "image_url", "image_url": {"url": url}} if part["type"] == "image" else part
        for part in turn["content"]
    ]
    return [{"role": turn["role"], "content": content}]
