"""Which error a broken moesim Parquet file reports, when it is read a chunk at a time.

The reader checks a file's rules in a fixed order and reports the first rule the file breaks, at
the first row that breaks it. Reading the whole table at once made that order fall out of the
code; reading chunk by chunk (to keep memory near the compact trace's size), chunk 3 may break
rule 5 while chunk 7 breaks rule 2, and the whole-file answer is rule 2. So every check has a
key (its place in the order); the reader keeps the lowest-keyed error found so far, and later
chunks run only the checks ordered before it. The result is the error a whole-file read gives.
"""

from __future__ import annotations

from enum import IntEnum

from moesim.errors import UserError


class Check(IntEnum):
    """The reader's checks in the order a whole-file read makes them (docs/trace-format.md)."""

    COLUMNS = 0  # unknown, missing or mistyped base columns: known from the schema alone
    PASS_NULL = 1
    PHASE_NULL = 2
    FIRST_PASS = 3
    PASS_STEP = 4
    PHASE_VALUE = 5
    PHASE_PER_PASS = 6
    ACCESS_LAYER = 7
    ACCESS_TOKEN = 8
    STRUCTURAL_EXPERT = 9
    TOKEN_REQUEST = 10
    LAYER_RANGE = 11
    EXPERT_RANGE = 12
    TOKEN_RANGE = 13
    REQUEST_RANGE = 14
    POSITION_RANGE = 15
    TOKEN_COUNT = 16
    TOKEN_AGREEMENT = 17
    TOKEN_ROWS = 18
    EMPTY_CELL = 19
    TOKEN_SPLIT = 20
    TOP_K = 21
    EXPERT_REPEAT = 22
    WEIGHT_NULL = 23  # needs the whole file (are weights set anywhere?): decided after the last chunk
    WEIGHT_RANGE = 24
    EXTRA_COLUMNS = 25  # then EXTRA_STEPS keys per annotation/prediction column, in column order


EXTRA_STEPS = 4  # an annotation's or prediction's checks: type, null, width, null list value


def extra_column_key(position: int, step: int) -> int:
    """The key of check `step` of the extra column at `position` among the table's columns."""
    return int(Check.EXTRA_COLUMNS) + position * EXTRA_STEPS + step


class CheckFailed(Exception):
    """A check found an error: its key and the UserError to report if no lower-keyed one exists."""

    def __init__(self, key: int, error: UserError) -> None:
        super().__init__(str(error))
        self.key = key
        self.error = error


class CheckSkipped(Exception):
    """A check at or after the file's lowest-keyed error so far: it cannot change the answer."""


class FirstError:
    """The lowest-keyed error found so far; its key bounds the checks later chunks need to run."""

    def __init__(self) -> None:
        self.key: int | None = None
        self.error: UserError | None = None

    def record(self, failed: CheckFailed) -> None:
        # Chunks arrive in row order, so for equal keys the first one recorded has the first row.
        if self.key is None or failed.key < self.key:
            self.key, self.error = failed.key, failed.error

    def reach(self, key: int) -> None:
        """Raise CheckSkipped if a check with this key cannot change the answer any more."""
        if self.key is not None and key >= self.key:
            raise CheckSkipped

    def raise_if_any(self) -> None:
        if self.error is not None:
            raise self.error
