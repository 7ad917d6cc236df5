"""Timing tests: a reference Belady until the policies room's lands, and a profile fixture."""

from __future__ import annotations

from typing import Callable

import pytest

from moesim.hw_profiles.profile import HardwareProfile
from timing_helpers import make_profile, register_reference_belady

register_reference_belady()


@pytest.fixture
def profile_factory() -> Callable[..., HardwareProfile]:
    return make_profile
