"""pytest settings shared by the unit tests and nbval (root conftest, so `make nbval` has them too)."""

from __future__ import annotations

import pytest
from nbval.plugin import IPyNbCell

# nbval waits at most 5 s (hard-coded: nbval issues #136 and #231) for each output message after a
# cell's reply; on 2 loaded cores a notebook's last messages can take longer and the cell failed
# with "Timeout of 5 seconds exceeded waiting for output" although it had run. The wait only
# matters when a message is late: a passing cell costs nothing more.
NBVAL_OUTPUT_TIMEOUT_S = 120


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, IPyNbCell):
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT_S
