# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Sphinx configuration for the astro_sbgm documentation.

Build with ``tox -e build_docs`` or ``sphinx-build -W -b html docs docs/_build/html``.

The build works offline: intersphinx inventories (python, numpy, scipy,
matplotlib, astropy, torch) are only fetched when the environment variable
``ASTRO_SBGM_DOCS_ONLINE`` is set to a non-empty value other than ``0``.
Offline, references to other projects' objects render as plain text and do
not fail the ``-W`` build (``nitpicky`` is off unless ``ASTRO_SBGM_DOCS_NITPICKY``
is set, which only makes sense online).
"""

import datetime
import os
import sys
import tempfile
from importlib import import_module

from docutils import nodes
from sphinx.transforms import SphinxTransform

try:
    from sphinx_astropy.conf.v2 import *  # noqa: F401,F403
except ImportError:
    print("ERROR: the documentation requires the sphinx-astropy package to be installed "
          "(pip install -e .[docs])")
    sys.exit(1)

# These names come from the star import above; restated for linters.
from sphinx_astropy.conf.v2 import (extensions, intersphinx_mapping, rst_epilog,  # noqa: E402
                                    numpydoc_xref_aliases, suppress_warnings)


def _env_flag(name):
    """True when the environment variable ``name`` is set and not 0/false/no."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


# -- Project information ------------------------------------------------------

import astro_sbgm  # noqa: E402

project = "astro_sbgm"
author = "The astro_sbgm developers"
copyright = f"{datetime.datetime.now().year}, {author}"

# The full version, including alpha/beta/rc/dev tags, and the short X.Y version.
release = astro_sbgm.__version__
version = ".".join(release.split(".")[:2])

# -- General configuration ----------------------------------------------------

# sphinx-copybutton is an optional extra of sphinx-astropy ("confv2"); drop it
# rather than fail when it is not installed.
for _ext in ("sphinx_copybutton",):
    if _ext in extensions:
        try:
            import_module(_ext)
        except ImportError:
            extensions.remove(_ext)

exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# The command-line reference (docs/cli.rst) is generated from the parser.
extensions += ["sphinxarg.ext"]

# Tutorials run while the docs build: each ``.. plot::`` block executes (in the
# page's shared namespace with ``:context:``) and embeds the figure it makes,
# so every picture on those pages is made from the code shown beside it.  The
# settings are small (a few galaxies, the bundled model, 10 to 50 network
# evaluations) so that the build stays in minutes on two CPU cores.
extensions += ["matplotlib.sphinxext.plot_directive"]
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 100)]
plot_rcparams = {"figure.dpi": 100, "savefig.bbox": "tight"}
plot_pre_code = "import numpy as np\nimport matplotlib.pyplot as plt\n"
# Files a tutorial writes (cartoon.png, FITS files) go to a scratch folder, not
# into the source tree.
plot_working_directory = tempfile.mkdtemp(prefix="astro_sbgm_docs_")

rst_epilog += """
.. |CCDData| replace:: `~astropy.nddata.CCDData`
"""

# Code samples in the narrative docs that train models are ``code-block``s and
# never run; doctests (pytest-doctestplus) only cover cheap examples.

# -- Intersphinx (network) ----------------------------------------------------

DOCS_ONLINE = _env_flag("ASTRO_SBGM_DOCS_ONLINE")

if DOCS_ONLINE:
    intersphinx_mapping = dict(intersphinx_mapping)
    intersphinx_mapping.pop("h5py", None)
    intersphinx_mapping.pop("astropy.org", None)
    intersphinx_mapping.update({
        "python": ("https://docs.python.org/3/", None),
        "numpy": ("https://numpy.org/doc/stable/", None),
        "scipy": ("https://docs.scipy.org/doc/scipy/", None),
        "matplotlib": ("https://matplotlib.org/stable/", None),
        "astropy": ("https://docs.astropy.org/en/stable/", None),
        "torch": ("https://pytorch.org/docs/stable/", None),
        "photutils": ("https://photutils.readthedocs.io/en/stable/", None),
        "reproject": ("https://reproject.readthedocs.io/en/stable/", None),
        "specutils": ("https://specutils.readthedocs.io/en/stable/", None),
    })
    # Link the types in numpydoc "Parameters"/"Returns" sections.
    numpydoc_xref_param_type = True
    numpydoc_xref_aliases.update({
        "ndarray": "numpy.ndarray",
        "array-like": ":term:`numpy:array_like`",
        "array_like": ":term:`numpy:array_like`",
        "Tensor": "torch.Tensor",
        "CCDData": "astropy.nddata.CCDData",
        "NDData": "astropy.nddata.NDData",
        "QTable": "astropy.table.QTable",
        "Quantity": "astropy.units.Quantity",
        "WCS": "astropy.wcs.WCS",
        "Header": "astropy.io.fits.Header",
        "HDUList": "astropy.io.fits.HDUList",
        "Figure": "matplotlib.figure.Figure",
    })
else:
    # No network: fetch nothing, so that ``sphinx-build -W`` cannot fail on
    # unreachable inventories.  Cross-project references render as text.
    intersphinx_mapping = {}
    numpydoc_xref_param_type = False

nitpicky = DOCS_ONLINE and _env_flag("ASTRO_SBGM_DOCS_NITPICKY")

# -- automodapi / numpydoc ----------------------------------------------------

# Generated API pages go to docs/api/ (git-ignored).
automodapi_toctreedirnm = "api"
# Do not list members inherited from torch.nn.Module etc. on every class page.
automodsumm_inherited_members = False
# numpydoc: keep the class page to the docstring, automodapi lists the members.
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
# Attributes sections (fitted ``foo_`` attributes, torch buffers) are described
# in prose; do not turn them into autosummary tables of possibly-missing names.
numpydoc_attributes_as_param_list = True
numpydoc_class_members_toctree = False

suppress_warnings = list(suppress_warnings)

# -- Options for HTML output --------------------------------------------------

html_theme_options = dict(html_theme_options)  # noqa: F405
html_theme_options.update({
    "icon_links": [],
    "navigation_with_keys": False,
})
html_title = f"{project} v{release}"
htmlhelp_basename = project + "doc"

html_static_path = ["_static"] if os.path.isdir(
    os.path.join(os.path.dirname(__file__), "_static")) else []

# -- Options for LaTeX / man output -------------------------------------------

latex_documents = [("index", project + ".tex", project + " Documentation", author, "manual")]
man_pages = [("index", project.lower(), project + " Documentation", [author], 1)]


# -- The command-line reference -------------------------------------------------

def _cli_keeps_double_dashes(app, doctree):
    """No smart quotes on the generated command-line page: ``--flag`` stays two hyphens
    (smart quotes would print an en dash that cannot be copied into a shell)."""
    if app.env.docname == "cli":
        for section in doctree.findall(nodes.section):
            section["support_smartquotes"] = False


class _CLIDashes(SphinxTransform):
    default_priority = 700     # before sphinx's SmartQuotes (750)

    def apply(self):
        _cli_keeps_double_dashes(self.app, self.document)


def setup(app):
    app.add_transform(_CLIDashes)
