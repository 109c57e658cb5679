"""Assertions for users' own test suites (pytest-friendly: plain AssertionError).

>>> import numpy as np
>>> assert_ported_close(np.float32([1, 2]), np.float32([1, 2]))
"""

from __future__ import annotations

__all__ = ["assert_ported_close", "assert_conv4_ported"]


def assert_ported_close(expected, actual=None, *, k: int = 1, magnitude=None, precision=None):
    """Assert that `actual` matches `expected` within the float-derived tolerance of
    `porting.compare`; the failure message is the full comparison report.

    Also accepts a report from `verify_conv4` (or anything with `.ok`) as the only argument.
    Returns the comparison (or report) so that tests can look further.
    """
    __tracebackhide__ = True  # pytest: show the caller's line, not this one
    if actual is None and hasattr(expected, "ok"):
        report = expected
    else:
        from porting.comparison import compare

        report = compare(expected, actual, k=k, magnitude=magnitude, precision=precision)
    if not report.ok:
        raise AssertionError("ported results differ\n" + str(report))
    return report


def assert_conv4_ported(w, x, **kwargs):
    """Run `porting.verify_conv4(w, x, **kwargs)` and assert that both sides agree."""
    __tracebackhide__ = True
    from porting.verify import verify_conv4

    return assert_ported_close(verify_conv4(w, x, **kwargs))
