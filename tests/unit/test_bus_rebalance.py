"""What a consumer-group member may commit: only positions of partitions it owns."""

from __future__ import annotations

from lepton.bus._reader import owned


def test_positions_of_partitions_given_up_are_not_committed() -> None:
    handled = {("t", 0): 12, ("t", 1): 11, ("u", 0): 3}
    assert owned(handled, {("t", 1), ("u", 0)}) == {("t", 1): 11, ("u", 0): 3}


def test_a_member_that_owns_nothing_commits_nothing() -> None:
    assert owned({("t", 0): 12}, set()) == {}
