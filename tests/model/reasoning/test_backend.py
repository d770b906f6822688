"""segzero_model.reasoning.backend.check_request: the argument checks both reasoner backends
make before any model work, each refused with a message that names what is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from segzero_model.reasoning.backend import check_request

IMAGE = np.zeros((4, 4, 3), np.uint8)


def test_a_well_formed_request_returns_its_token_budget():
    assert check_request([IMAGE], ["q"], None, 1, None) == 1  # one token is a budget
    assert check_request([IMAGE, IMAGE], ["a", "b"], ["k1", "k2"], 64, None) == 64


@pytest.mark.parametrize(
    "images, queries, keys, tokens, on_text, message",
    [
        ([], [], None, 8, None, "at least one image"),
        ([IMAGE], ["a", "b"], None, 8, None, "1 images but 2 queries"),
        ([IMAGE], ["a"], ["k1", "k2"], 8, None, "2 image keys for 1 images"),
        ([IMAGE], ["a"], None, 0, None, "max_new_tokens must be >= 1, got 0"),
        ([IMAGE, IMAGE], ["a", "b"], None, 8, print, "a batch of one, got a batch of 2"),
    ],
)  # fmt: skip
def test_malformed_requests_are_refused_saying_why(images, queries, keys, tokens, on_text, message):
    with pytest.raises(ValueError, match=message):
        check_request(images, queries, keys, tokens, on_text)
