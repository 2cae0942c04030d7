"""Pub/Sub's retry backoff on its own."""
from __future__ import annotations

import pytest

from local_cloud.pubsub.retry_policy import backoff_delay


def test_backoff_doubles_from_the_minimum_up_to_the_cap():
    assert [backoff_delay(n, 0.5, 10.0, 0.0) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    jittered = [backoff_delay(3, 0.5, 10.0, j) for j in (0.0, 0.5, 0.999)]
    assert jittered[0] == 2.0 and 2.0 < jittered[1] < jittered[2] <= 2.4
    assert backoff_delay(5, 0.5, 9.0, 0.999) == 9.0
    with pytest.raises(ValueError, match="failed_attempts"):
        backoff_delay(0, 0.5, 10.0, 0.0)
