# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The version of astro_sbgm.

setuptools_scm writes ``_scm_version.py`` (git-ignored) beside this file when
the package is built or installed, from the git tags of the checkout (or from
``.git_archival.txt`` in a source archive, or ``fallback_version`` in
pyproject.toml).  Where that file is missing, as in a checkout put on the
path without installing it, the installed distribution's metadata is asked.
"""

try:
    from ._scm_version import version as __version__
except ImportError:
    from importlib.metadata import PackageNotFoundError, version as _distribution_version

    try:
        __version__ = _distribution_version("astro_sbgm")
    except PackageNotFoundError:
        __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
