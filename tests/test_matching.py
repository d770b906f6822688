"""The unmatched-publisher count the node puts in its diagnostics (pure logic, no ROS)."""

from segzero_ros.matching import UnmatchedPublishers


def test_a_gap_counts_only_once_seen_twice():
    watch = UnmatchedPublishers()
    # Discovery before matching: one check shows a publisher not yet matched.
    assert watch.update("/q", in_graph=1, matched=0) == (0, False)
    assert watch.update("/q", in_graph=1, matched=1) == (0, False)
    # A publisher that never matches: confirmed on the second check, said once.
    assert watch.update("/q", in_graph=2, matched=1) == (0, False)
    assert watch.update("/q", in_graph=2, matched=1) == (1, True)
    assert watch.update("/q", in_graph=2, matched=1) == (1, False)


def test_more_unmatched_is_said_again_and_gone_resets():
    watch = UnmatchedPublishers()
    for _ in range(2):
        confirmed, said = watch.update("/q", in_graph=1, matched=0)
    assert (confirmed, said) == (1, True)
    watch.update("/q", in_graph=2, matched=0)
    assert watch.update("/q", in_graph=2, matched=0) == (2, True)
    assert watch.update("/q", in_graph=1, matched=1) == (0, False)  # gone at once
    watch.update("/q", in_graph=2, matched=1)
    assert watch.update("/q", in_graph=2, matched=1) == (1, True)  # back: said again


def test_topics_are_independent_and_counts_never_negative():
    watch = UnmatchedPublishers()
    watch.update("/a", in_graph=1, matched=0)
    assert watch.update("/b", in_graph=1, matched=0) == (0, False)
    assert watch.update("/a", in_graph=1, matched=0) == (1, True)
    # The graph can lag behind matching: more matched than listed is no gap.
    assert watch.update("/c", in_graph=0, matched=2) == (0, False)
    assert watch.update("/c", in_graph=0, matched=2) == (0, False)
