"""Small argument checks shared by the public functions."""

import numbers

__all__ = ["check_positive_int"]


def check_positive_int(name, value, minimum=1):
    """Return ``value`` as an int, or raise a ValueError naming ``name`` and the bound."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
