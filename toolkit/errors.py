"""One exception type for every mistake a user can fix.

The CLI turns it into a single line on stderr and exit code 2; library callers can catch it.
Raise it *before* long work starts (loading checks, pairing checks, label ranges).
"""


class PriorswapError(ValueError):
    """A user-fixable problem: the message names what was wrong, the value seen, and what is accepted."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
