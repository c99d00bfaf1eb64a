"""Small argument checks shared by the public functions."""

import numbers

import numpy as np

__all__ = ["check_positive_int", "check_positions"]


def check_positive_int(name, value, minimum=1):
    """Return ``value`` as an int, or raise a ValueError naming ``name`` and the bound."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positions(positions, n):
    """``positions`` as ICRS `~astropy.coordinates.SkyCoord` of length ``n`` (a scalar repeated).

    Raises
    ------
    TypeError
        If ``positions`` is not a SkyCoord.
    ValueError
        If it holds neither one nor ``n`` positions.
    """
    from astropy.coordinates import SkyCoord

    if not isinstance(positions, SkyCoord):
        raise TypeError(f"positions must be an astropy SkyCoord (a scalar or one per galaxy), "
                        f"got {type(positions).__name__}; e.g. SkyCoord(ra, dec, unit='deg')")
    positions = positions.icrs
    n = int(n)
    if positions.isscalar:
        return SkyCoord(np.full(n, positions.ra.deg), np.full(n, positions.dec.deg),
                        unit="deg", frame="icrs")
    positions = positions.ravel()
    if len(positions) != n:
        raise ValueError(f"positions holds {len(positions)} sky positions but n={n} galaxies "
                         "are drawn; give one position per galaxy or a scalar SkyCoord")
    return positions
