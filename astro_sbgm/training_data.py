"""Training sets that stay on disk: streamed to the trainer through a DataLoader.

`GalaxyDiffusion.fit <astro_sbgm.GalaxyDiffusion.fit>` holds a small
training set in memory (one float32 array of fluxes, one of scaled images).
A large one (the paper's 300,000 grz 256x256 cutouts are 236 GB as float32)
is read while training instead, from any of

- a directory or a glob of FITS cutouts (one `astro_sbgm.io.read_image` per
  file, per use);
- the index table that `astro_sbgm.surveys.make_cutouts` writes
  (``index.ecsv``: the rows with a ``file``; paths relative to the table);
- a cutout store written by `write_cutout_store`: a folder of ``.npy``
  shards of float32 fluxes already on the model grid, read with one ``pread``
  per image (no FITS parsing, no astropy while training);
- a `torch.utils.data.Dataset` of images or ``(band, y, x)`` arrays.

Batches come through a `torch.utils.data.DataLoader` (worker processes read
ahead) in exactly the order the in-memory trainer would draw them: the
`~astro_sbgm.training.Trainer` keeps its permutation, position and random
generator, and `StreamingData` reads the rows of the batches that order
names, so a streamed run and an in-memory run on the same images give the
same batches bit for bit for a seed, a checkpoint resumes mid-epoch exactly,
and under ``torchrun`` every rank reads only its own slice of each global
batch.

The flux scaler's statistics (`~astro_sbgm.preprocessing.FluxScaler` with
``upper="kmeans"`` or ``lower``/``softening`` ``"auto"``) are measured on a
documented subsample read once: at most ``max_images`` images (10,000 by
default) evenly spaced through the set, the first and last included (all of
them when the set is smaller, which gives exactly the in-memory fit); the
k-means uses every image of the subsample, the sky sigma at most 2,000 of
them, evenly spaced (the rule of `~astro_sbgm.preprocessing.sky_sigma`).
"""

import bisect
import collections
import json
import os
import shutil
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import torch

from .exceptions import AstroSBGMInputWarning
from .io import expand_paths, read_image, read_images, select_bands, to_model_grid
from ._flux_statistics import (evenly_spaced as _evenly_spaced,
                               image_percentiles as _percentiles,
                               sky_from_spreads as _sky_from_spreads, sky_spread as _sky_spread,
                               truncation_from_percentiles as _truncation_from_percentiles)

__all__ = ["write_cutout_store", "CutoutStore", "StreamingData", "open_training_set",
           "fit_flux_scaler", "default_num_workers", "STORE_MARKER", "SCALER_IMAGES",
           "STREAM_ABOVE_BYTES"]

#: The file that marks a folder as a cutout store (a JSON manifest).
STORE_MARKER = "astro_sbgm-store.json"
_STORE_FORMAT = "astro_sbgm cutout store"
#: Images read for the flux scaler's statistics in a streamed fit (evenly spaced).
SCALER_IMAGES = 10_000
#: ``stream="auto"`` streams a directory, glob or index table whose images, as float32
#: on the model grid, would take more than this many bytes (in-memory training holds
#: them twice).
STREAM_ABOVE_BYTES = 1 << 30
_MASKED_NOTE = "masked or non-finite pixel(s) in the inputs were set to 0 nanomaggy"


# --------------------------------------------------------------------------- one image
def _model_planes(ccd, bands, size, pixel_scale):
    """A canonical image on a model grid: float32 ``(band, y, x)``, masked pixels 0.

    The same steps as `GalaxyDiffusion.prepare`: bands selected, the image cut,
    padded or reprojected onto the grid, masked pixels set to 0.  Returns the
    array and the number of masked pixels.
    """
    ccd = to_model_grid(select_bands(ccd, bands), size, float(pixel_scale) * u.arcsec)
    data = ccd.data
    n_masked = 0
    if ccd.mask is not None and ccd.mask.any():
        n_masked = int(ccd.mask.sum())
        data = np.where(ccd.mask, 0.0, data)
    return np.asarray(data, dtype=np.float32), n_masked


class _Grid:
    """What a model needs of every image: band names, side in pixels, pixel scale."""

    def __init__(self, bands, size, pixel_scale):
        self.bands = list(bands)
        self.size = int(size)
        self.pixel_scale = float(pixel_scale)

    @property
    def shape(self):
        return (len(self.bands), self.size, self.size)


class _Source(torch.utils.data.Dataset):
    """Fluxes of a training set on a model grid, one image per index.

    ``__getitem__`` returns the float32 ``(band, y, x)`` fluxes in
    nanomaggies (masked pixels 0), or, once `scaled` gave a fitted scaler,
    the scaled `torch.Tensor`.  Subclasses implement ``_read(i)`` and
    ``_describe(i)``.
    """

    scaler = None

    def __init__(self, grid):
        self.grid = grid

    def __len__(self):
        raise NotImplementedError

    def _describe(self, i):
        return f"training image {i}"

    def flux(self, i):
        """Image ``i`` on the model grid and its number of masked pixels."""
        try:
            with warnings.catch_warnings():   # counted, and said once by the caller
                warnings.simplefilter("ignore", AstroSBGMInputWarning)
                return self._read(i)
        except (ValueError, OSError, TypeError) as err:
            raise ValueError(f"{self._describe(i)}: {err}") from None

    def scaled(self, scaler):
        """This source, giving scaled tensors (the scaler must be fitted)."""
        self.scaler = scaler
        return self

    def __getitem__(self, i):
        flux, _ = self.flux(int(i))
        if self.scaler is None:
            return flux
        return torch.from_numpy(self.scaler.transform(flux))

    def load_all(self):
        """Every image, ``(n, band, y, x)`` float32 (the in-memory path), warning once."""
        out = np.empty((len(self),) + self.grid.shape, np.float32)
        n_masked = 0
        for i in range(len(self)):
            out[i], k = self.flux(i)
            n_masked += k
        if n_masked:
            warnings.warn(f"{n_masked} {_MASKED_NOTE}", AstroSBGMInputWarning)
        return out


class _Files(_Source):
    """FITS files, one image each (read with `astro_sbgm.io.read_image`)."""

    def __init__(self, paths, grid, bands=None, what="the file list"):
        super().__init__(grid)
        self.paths = [str(p) for p in paths]
        self.bands = bands
        if not self.paths:
            raise ValueError(f"{what} holds no image; give a directory or glob of FITS "
                             "cutouts, an index table with a 'file' column, or a cutout store")

    def __len__(self):
        return len(self.paths)

    def _describe(self, i):
        return f"training image {self.paths[i]!r}"

    def _read(self, i):
        return _model_planes(read_image(self.paths[i], bands=self.bands), self.grid.bands,
                             self.grid.size, self.grid.pixel_scale)


class _Items(_Source):
    """A user's `torch.utils.data.Dataset` of images or ``(band, y, x)`` arrays."""

    def __init__(self, dataset, grid, bands=None):
        super().__init__(grid)
        self.dataset = dataset
        self.bands = bands
        if len(dataset) == 0:
            raise ValueError("the training set is empty: the Dataset has no item")

    def __len__(self):
        return len(self.dataset)

    def _describe(self, i):
        return f"item {i} of the Dataset"

    def _read(self, i):
        item = self.dataset[i]
        if isinstance(item, torch.Tensor):
            item = item.numpy()
        if isinstance(item, np.ndarray):   # arrays: in the model's band order unless named
            ccd = read_image(item, bands=self.bands or self.grid.bands)
        else:
            ccd = read_image(item, bands=self.bands)
        return _model_planes(ccd, self.grid.bands, self.grid.size, self.grid.pixel_scale)


# --------------------------------------------------------------------------- store
class CutoutStore(torch.utils.data.Dataset):
    """A cutout store on disk, read image by image.

    A folder with a manifest (`STORE_MARKER`) and ``.npy`` shards of float32
    fluxes ``(n_shard, band, y, x)`` in nanomaggies, written by
    `write_cutout_store`.  Each item is one positioned read (``pread``) of
    its bytes into a new, read-only array: no memory map, so a process's
    resident memory does not grow with the images read (the OS page cache
    still keeps them).
    Each process opens a shard the first time it reads from it.

    Parameters
    ----------
    path : str or path-like
        The store's folder.

    Attributes
    ----------
    bands : list of str
    shape : tuple
        ``(n, band, y, x)``.
    pixel_scale : float or None
        Arcsec per pixel (None when the images had no WCS).
    masked_pixels : int
        Pixels that were masked in the inputs (stored as 0).

    Examples
    --------
    >>> from astro_sbgm.datasets import make_trivial_dataset
    >>> from astro_sbgm.training_data import write_cutout_store
    >>> import tempfile, os
    >>> folder = os.path.join(tempfile.mkdtemp(), "store")
    >>> store = write_cutout_store(make_trivial_dataset(5, size=16, seed=0), folder)
    >>> store.shape, store.bands
    ((5, 3, 16, 16), ['g', 'r', 'z'])

    Raises
    ------
    ValueError
        If ``path`` is not a store, or its manifest and shards disagree
        (the message names the file).
    """

    def __init__(self, path):
        self.path = Path(path)
        marker = self.path / STORE_MARKER
        if not marker.is_file():
            raise ValueError(f"{str(self.path)!r} is not a cutout store (no {STORE_MARKER}); "
                             "write one with astro_sbgm.training_data.write_cutout_store")
        try:
            meta = json.loads(marker.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"the store manifest {str(marker)!r} cannot be read "
                             f"({type(err).__name__}: {err})") from None
        if not isinstance(meta, dict) or meta.get("format") != _STORE_FORMAT:
            raise ValueError(f"{str(marker)!r} is not an astro_sbgm cutout store manifest")
        self.bands = list(meta["bands"])
        self.pixel_scale = meta.get("pixel_scale")
        self.masked_pixels = int(meta.get("masked_pixels", 0))
        self._files = [s["file"] for s in meta["shards"]]
        counts = [int(s["n"]) for s in meta["shards"]]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(int).tolist()
        image = tuple(int(v) for v in meta["image_shape"])
        self._nbytes = 4 * int(np.prod(image))
        self._offsets = []
        for name, n in zip(self._files, counts):   # headers and sizes only: cheap
            shard = self.path / name
            try:
                with open(shard, "rb") as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = read(f)
                    offset = f.tell()
                size = shard.stat().st_size
            except (ValueError, OSError) as err:
                raise ValueError(f"store shard {str(shard)!r} is not a readable .npy file "
                                 f"({err}); the store is damaged: write it again") from None
            if shape != (n,) + image or dtype != np.float32 or fortran:
                raise ValueError(f"store shard {str(shard)!r} holds {dtype} {shape} where the "
                                 f"manifest says float32 {(n,) + image}; the store is damaged: "
                                 "write it again")
            if size != offset + n * self._nbytes:
                raise ValueError(f"store shard {str(shard)!r} has {size} bytes where "
                                 f"{offset + n * self._nbytes} were written (a truncated copy?); "
                                 "the store is damaged: write it again")
            self._offsets.append(offset)
        self.shape = (self._starts[-1],) + image
        self._fds = {}

    def __len__(self):
        return self.shape[0]

    def _fd(self, k):
        fd = self._fds.get(k)
        if fd is None:
            fd = os.open(self.path / self._files[k], os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self._fds[k] = fd
        return fd

    def __getitem__(self, i):
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} is out of range for a store of {len(self)} images")
        i %= len(self)
        k = bisect.bisect_right(self._starts, i) - 1
        offset = self._offsets[k] + (i - self._starts[k]) * self._nbytes
        fd, parts, done = self._fd(k), [], 0
        while done < self._nbytes:   # a read may return fewer bytes than asked
            got = _read_at(fd, self._nbytes - done, offset + done)
            if not got:
                raise ValueError(f"store shard {str(self.path / self._files[k])!r} ended "
                                 "early (truncated after the store was opened?)")
            parts.append(got)
            done += len(got)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        return np.frombuffer(data, dtype=np.float32).reshape(self.shape[1:])

    def close(self):
        """Close the shard files this process opened (they reopen when read)."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def __getstate__(self):   # a process started by spawn opens the shards itself
        state = self.__dict__.copy()
        state["_fds"] = {}
        return state

    def __repr__(self):
        return (f"CutoutStore({str(self.path)!r}: {len(self)} images of "
                f"{''.join(self.bands)} {self.shape[2]}x{self.shape[3]} at "
                f"{self.pixel_scale}\"/px in {len(self._files)} shard(s))")


def _read_at(fd, n, offset):
    """Up to ``n`` bytes of a file at ``offset``: ``pread`` (POSIX), else seek and read."""
    if hasattr(os, "pread"):
        return os.pread(fd, n, offset)
    os.lseek(fd, offset, os.SEEK_SET)   # Windows: each process has its own descriptor
    return os.read(fd, n)


class _StoreSource(_Source):
    """A cutout store for a model: the model's bands out of the store's (no astropy)."""

    def __init__(self, store, grid):
        super().__init__(grid)
        self.store = store
        missing = [b for b in grid.bands if b not in store.bands]
        if missing:
            raise ValueError(f"the cutout store {str(store.path)!r} holds the bands "
                             f"{store.bands} but the model needs {grid.bands} (missing "
                             f"{missing}); write a store with those bands or change bands=")
        if store.shape[2:] != (grid.size, grid.size):
            raise ValueError(f"the cutout store {str(store.path)!r} holds "
                             f"{store.shape[2]}x{store.shape[3]} images but the model works on "
                             f"{grid.size}x{grid.size}; write the store with "
                             f"image_size={grid.size}")
        if store.pixel_scale is not None and abs(
                store.pixel_scale / grid.pixel_scale - 1) > 1e-3:
            raise ValueError(f"the cutout store {str(store.path)!r} holds images at "
                             f"{store.pixel_scale}\"/px but the model works at "
                             f"{grid.pixel_scale}\"/px; write the store with "
                             f"pixel_scale={grid.pixel_scale}")
        self._take = [store.bands.index(b) for b in grid.bands]
        self._all = self._take == list(range(len(store.bands)))

    def __len__(self):
        return len(self.store)

    def _describe(self, i):
        return f"image {i} of the cutout store {str(self.store.path)!r}"

    def _read(self, i):
        arr = self.store[i]
        return (arr if self._all else np.ascontiguousarray(arr[self._take])), 0

    def load_all(self):
        if self.store.masked_pixels:
            warnings.warn(f"{self.store.masked_pixels} {_MASKED_NOTE} (when the store was "
                          "written)", AstroSBGMInputWarning)
        out = np.empty((len(self),) + self.grid.shape, np.float32)
        for i in range(len(self)):
            out[i] = self._read(i)[0]
        return out


def _iter_images(images, bands):
    """Canonical images one at a time, from anything `read_images` takes or an iterable."""
    if isinstance(images, (str, os.PathLike)):
        for path in expand_paths(images):
            yield read_image(path, bands=bands)
    elif isinstance(images, np.ndarray) and images.ndim == 4:
        for a in images:
            yield read_image(a, bands=bands)
    elif isinstance(images, (list, tuple)):
        for item in images:
            if isinstance(item, (str, os.PathLike)):
                for path in expand_paths(item):
                    yield read_image(path, bands=bands)
            else:
                yield from read_images(item, bands=bands)
    elif hasattr(images, "__iter__") and not hasattr(images, "shape"):
        for item in images:   # a generator: one image at a time
            yield from read_images(item, bands=bands)
    else:
        yield from read_images(images, bands=bands)


def write_cutout_store(images, path, *, bands=None, image_size=None, pixel_scale=0.262,
                       shard_size=4096, overwrite=False):
    """Write images into a cutout store (a folder of ``.npy`` shards), atomically.

    The store is the fastest input for streamed training (`GalaxyDiffusion.fit
    <astro_sbgm.GalaxyDiffusion.fit>` reads one image with one ``pread``, no
    FITS parsing): float32 fluxes in nanomaggies, ``(band, y, x)`` per image,
    in the order given, with the bands and pixel scale in a JSON manifest.
    Images are read and written one at a time, so a generator of any length
    needs the memory of one shard only.  The folder is built under a
    temporary name beside ``path`` and renamed when complete: ``path`` is
    either the whole store or absent (or the old store, with ``overwrite``).

    Parameters
    ----------
    images : object
        Anything `astro_sbgm.io.read_images` accepts (a list of images or
        FITS paths, a directory, a glob, a 4-D array with ``bands=``), or an
        iterable yielding such images (e.g. a generator over many files).
    path : str or path-like
        The store's folder (must not exist unless ``overwrite``).
    bands : str, optional
        Band names of inputs that do not carry them.  The store keeps the
        bands of the first image, in its order; every later image must have
        them (others are dropped).
    image_size : int, optional
        Bring every image onto a ``image_size x image_size`` grid at
        ``pixel_scale`` (cut, padded or reprojected as in
        `astro_sbgm.io.to_model_grid`).  Without it every image must have
        the shape of the first.
    pixel_scale : float or None
        Arcsec per pixel of that grid (``image_size`` given), or of images
        without a celestial WCS (arrays); images with one keep their own.
        None for arrays records no scale (any model then accepts the store).
    shard_size : int
        Images per shard file.
    overwrite : bool
        Replace an existing store at ``path``.

    Returns
    -------
    `CutoutStore`
        The store written.

    Raises
    ------
    ValueError
        For no image, images of different shapes without ``image_size``,
        an image lacking one of the first image's bands, a bad
        ``shard_size``, plus whatever reading an image raises; nothing is
        left on disk then.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False, or is not a store.

    Warns
    -----
    AstroSBGMInputWarning
        When masked pixels were stored as 0 (how many).
    """
    path = Path(path)
    if int(shard_size) < 1:
        raise ValueError(f"shard_size must be >= 1 image, got {shard_size!r}")
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace the "
                                  "store, or give a new path")
        if not (path / STORE_MARKER).is_file():
            raise FileExistsError(f"{str(path)!r} exists and is not a cutout store; it is not "
                                  "replaced (give a new path)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        shards, buf, grid, scale, n_masked, n = [], [], None, None, 0, 0

        def flush():
            name = f"shard-{len(shards):05d}.npy"
            with open(tmp / name, "wb") as f:
                np.save(f, np.stack(buf))
                f.flush()
                os.fsync(f.fileno())
            shards.append({"file": name, "n": len(buf)})
            buf.clear()

        for ccd in _iter_images(images, bands):
            if grid is None:
                names = [str(b) for b in ccd.meta["BANDS"].split(",")]
                if image_size is not None:
                    grid = _Grid(names, image_size, pixel_scale)
                    scale = grid.pixel_scale
                else:
                    grid = _Grid(names, ccd.shape[-1], 1.0)
                    shape = tuple(ccd.shape)
                    scale = _scale_of(ccd)
                    if scale is None and pixel_scale is not None:   # arrays: as stated
                        scale = float(pixel_scale)
            try:
                if image_size is not None:
                    arr, k = _model_planes(ccd, grid.bands, grid.size, grid.pixel_scale)
                else:
                    ccd = select_bands(ccd, grid.bands)
                    if tuple(ccd.shape) != shape:
                        raise ValueError(f"it is {ccd.shape[1]}x{ccd.shape[2]} pixels but the "
                                         f"first image is {shape[1]}x{shape[2]}; give "
                                         "image_size= to bring every image onto one grid")
                    arr, k = np.asarray(ccd.data, np.float32), 0
                    if ccd.mask is not None and ccd.mask.any():
                        k = int(ccd.mask.sum())
                        arr = np.where(ccd.mask, 0.0, arr).astype(np.float32)
            except ValueError as err:
                raise ValueError(f"image {n}: {err}") from None
            n_masked += k
            buf.append(arr)
            n += 1
            if len(buf) == int(shard_size):
                flush()
        if buf:
            flush()
        if n == 0:
            raise ValueError("no images were given (the input is empty)")
        manifest = {"format": _STORE_FORMAT, "version": 1, "bands": grid.bands,
                    "unit": "nanomaggy", "dtype": "float32", "pixel_scale": scale,
                    "image_shape": [len(grid.bands)] + list(arr.shape[1:]), "n": n,
                    "masked_pixels": n_masked, "shards": shards}
        (tmp / STORE_MARKER).write_text(json.dumps(manifest, indent=1))
        if path.exists():   # overwrite: the old store goes only once the new one is whole
            old = path.with_name(f".{path.name}.old{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if n_masked:
        warnings.warn(f"{n_masked} {_MASKED_NOTE} in the store", AstroSBGMInputWarning)
    return CutoutStore(path)


def _scale_of(ccd):
    """Pixel scale of an image in arcsec (None without a celestial WCS)."""
    if ccd.wcs is None or not ccd.wcs.has_celestial:
        return None
    from astropy.wcs.utils import proj_plane_pixel_scales
    return float(np.mean(proj_plane_pixel_scales(ccd.wcs.celestial)) * 3600.0)


# --------------------------------------------------------------------------- inputs
def _index_paths(table, base):
    """The cutout files of an index table (rows without one are skipped)."""
    if "file" not in table.colnames:
        raise ValueError(f"the index table has no 'file' column (columns: {table.colnames}); "
                         "give the index.ecsv that make_cutouts(..., output=...) writes")
    out = []
    for name in table["file"]:
        name = str(name).strip()
        if name and name != "--":
            p = Path(name)
            out.append(p if p.is_absolute() or base is None else Path(base) / p)
    return out


def _looks_like_index(X):
    if isinstance(X, (str, os.PathLike)):
        return str(X).lower().endswith(".ecsv")
    return hasattr(X, "colnames")   # an astropy Table


def open_training_set(X, bands, image_size, pixel_scale, input_bands=None, stream="auto"):
    """The on-disk form of a training set, or None for inputs that stay in memory.

    Parameters
    ----------
    X : object
        A training set as `GalaxyDiffusion.fit <astro_sbgm.GalaxyDiffusion.fit>` takes it.
    bands : list of str
        The model's bands.
    image_size : int
        The model's side in pixels.
    pixel_scale : float
        The model's pixel scale, arcsec.
    input_bands : str, optional
        Band names of inputs that do not carry them.
    stream : bool or "auto"
        True: read while training (refused for inputs that are already in
        memory); False: read everything now; ``"auto"``: stream a cutout
        store and a Dataset, and a directory, glob or index table whose
        images would take more than `STREAM_ABOVE_BYTES` on the model grid.

    Returns
    -------
    source, streamed
        ``source`` is a `torch.utils.data.Dataset` of model-grid fluxes (None
        for in-memory inputs: lists, arrays, single images); ``streamed``
        says whether to stream it.

    Raises
    ------
    ValueError
        For an empty directory, glob, index table or Dataset, a store of
        other bands, size or pixel scale than the model, a bad ``stream``,
        or ``stream=True`` with an input held in memory.
    """
    if stream not in (True, False, "auto"):
        raise ValueError(f"stream must be True, False or 'auto', got {stream!r}")
    grid = _Grid(bands, image_size, pixel_scale)
    source, big = None, True
    if isinstance(X, CutoutStore):
        source = _StoreSource(X, grid)
    elif isinstance(X, torch.utils.data.Dataset):
        source = _Items(X, grid, input_bands)
    elif _looks_like_index(X):
        if isinstance(X, (str, os.PathLike)):
            from astropy.table import Table   # reading the table is the io edge
            try:
                table = Table.read(str(X), format="ascii.ecsv")
            except (OSError, ValueError) as err:
                raise ValueError(f"the index table {str(X)!r} cannot be read ({err})") from None
            paths = _index_paths(table, Path(X).parent)
        else:
            paths = _index_paths(X, None)
        source = _Files(paths, grid, input_bands, what="the index table")
        big = None
    elif isinstance(X, (str, os.PathLike)):
        p = Path(X)
        if p.is_dir() and (p / STORE_MARKER).is_file():
            source = _StoreSource(CutoutStore(p), grid)
        elif p.is_dir() or (not p.exists() and any(c in str(X) for c in "*?[")):
            source = _Files(expand_paths(X), grid, input_bands,
                            what=f"the directory or pattern {str(X)!r}")
            big = None
    if source is None:
        if stream is True:
            raise ValueError("stream=True reads images from disk while training; give a "
                             "directory, a glob, an index table, a cutout store or a Dataset "
                             f"(got {type(X).__name__}, which is read into memory)")
        return None, False
    if big is None:   # file lists: stream when large
        big = len(source) * 4 * int(np.prod(grid.shape)) > STREAM_ABOVE_BYTES
    streamed = bool(big) if stream == "auto" else bool(stream)
    return source, streamed


# --------------------------------------------------------------------------- scaler
class _Stats(torch.utils.data.Dataset):
    """Per-image statistics for the flux scaler, computed where the image is read."""

    def __init__(self, source, pick, sky_pick, need_upper, need_sky, percentile=99.9):
        self.source, self.pick = source, pick
        self.sky_pick = sky_pick
        self.need_upper, self.need_sky = need_upper, need_sky
        self.percentile = percentile

    def __len__(self):
        return len(self.pick)

    def __getitem__(self, j):
        flux, n_masked = self.source.flux(int(self.pick[j]))
        per = _percentiles(flux, self.percentile) if self.need_upper else None
        spread = _sky_spread(flux) if self.need_sky and j in self.sky_pick else None
        return per, spread, n_masked


def _as_list(batch):
    return batch


def fit_flux_scaler(scaler, source, max_images=SCALER_IMAGES, num_workers=0):
    """Fit a `~astro_sbgm.preprocessing.FluxScaler` on a subsample, read in one pass.

    At most ``max_images`` images, evenly spaced through the set (first and
    last included), are read once; the k-means truncation point
    (``upper="kmeans"``) uses the per-band 99.9th percentile of each of them
    and the sky sigma (``"auto"``) at most 2,000 of them, evenly spaced among
    those.  With ``max_images >= len(source)`` this is exactly
    ``scaler.fit(images)`` on the whole set.

    Parameters
    ----------
    scaler : `~astro_sbgm.preprocessing.FluxScaler`
        Fitted in place.
    source : `torch.utils.data.Dataset`
        Model-grid fluxes, as `open_training_set` returns.
    max_images : int
        Size of the subsample.
    num_workers : int
        DataLoader worker processes reading it.

    Returns
    -------
    scaler, n_read : FluxScaler, int
        The scaler and the number of images read.

    Warns
    -----
    AstroSBGMInputWarning
        When masked pixels of the subsample were set to 0 (how many).
    """
    if int(max_images) < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images!r}")
    need_upper = scaler.upper == "kmeans"
    need_sky = scaler._needs_sky
    if not (need_upper or need_sky):
        return scaler, 0
    pick = _evenly_spaced(len(source), max_images)
    sky_pick = set(_evenly_spaced(len(pick), 2000).tolist()) if need_sky else set()
    stats = _Stats(source, pick, sky_pick, need_upper, need_sky)
    loader = torch.utils.data.DataLoader(stats, batch_size=32, num_workers=int(num_workers),
                                         collate_fn=_as_list, generator=torch.Generator())
    pers, spreads, n_masked = [], [], 0
    for batch in loader:
        for per, spread, k in batch:
            if per is not None:
                pers.append(per)
            if spread is not None:
                spreads.append(spread)
            n_masked += k
    if n_masked:
        warnings.warn(f"{n_masked} {_MASKED_NOTE} (in the {len(pick)} images read for the "
                      "flux scaling; the others are read while training)",
                      AstroSBGMInputWarning)
    upper = _truncation_from_percentiles(np.concatenate(pers)) if need_upper else None
    sky = _sky_from_spreads(spreads) if need_sky else None
    return scaler._fit_stats(upper, sky), len(pick)


# --------------------------------------------------------------------------- streaming
class _Plan:
    """The batches a DataLoader is to read next (replaced as the trainer's order moves)."""

    def __init__(self):
        self.batches = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


class StreamingData:
    """A training set the `~astro_sbgm.training.Trainer` reads from disk, batch by batch.

    It stands where the in-memory trainer holds a tensor: ``shape`` is
    ``(n, band, y, x)``, and `take` returns the rows of a batch.  Given the
    trainer's permutation and position after each batch, it plans the
    batches that follow to the end of the epoch (this rank's slice of each)
    and has a `torch.utils.data.DataLoader` read them ahead in worker
    processes; a batch that is not the one planned (the first one, one that
    spans two epochs, one after a resume) is read directly, and the plan is
    made again.  The rows returned are therefore always those the trainer
    asked for, whatever the workers did.

    Parameters
    ----------
    source : `torch.utils.data.Dataset`
        Items: scaled float32 tensors ``(band, y, x)``.
    shape : tuple
        ``(n, band, y, x)``.
    num_workers : int
        Worker processes (0: read in this process, when asked).
    pin_memory : bool
        Read into page-locked memory (CUDA).
    prefetch_factor : int
        Batches each worker reads ahead.
    """

    dtype = torch.float32

    def __init__(self, source, shape, num_workers=0, pin_memory=False, prefetch_factor=2):
        self.source = source
        self.shape = tuple(int(s) for s in shape)
        self.num_workers = int(num_workers)
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers!r}")
        self.pin_memory = bool(pin_memory)
        self.prefetch_factor = int(prefetch_factor)
        self._plan = _Plan()
        self._expected = collections.deque()
        self._loader = None
        self._it = None
        self.direct_reads = 0     # batches read outside the plan (diagnostics)

    def __len__(self):
        return self.shape[0]

    def _read(self, idx):
        self.direct_reads += 1
        return torch.stack([self.source[i] for i in idx])

    def _loader_iter(self):
        if self._loader is None:
            kw = {}
            if self.num_workers:
                kw = {"persistent_workers": True, "prefetch_factor": self.prefetch_factor}
            self._loader = torch.utils.data.DataLoader(
                self.source, batch_sampler=self._plan, num_workers=self.num_workers,
                pin_memory=self.pin_memory, generator=torch.Generator(), **kw)
        return iter(self._loader)

    def take(self, idx, perm, pos, batch_size, part=slice(None)):
        """The scaled images of ``idx``, ``(len(idx), band, y, x)``.

        Parameters
        ----------
        idx : list of int
            The rows (this rank's slice of the global batch just drawn).
        perm : `torch.Tensor`
            The trainer's permutation of the current epoch.
        pos : int
            Its position after the batch just drawn.
        batch_size : int
            The global batch size.
        part : slice
            This rank's slice of a global batch.

        Returns
        -------
        `torch.Tensor`
        """
        idx = [int(i) for i in idx]
        if self._it is not None and self._expected and self._expected[0] == idx:
            self._expected.popleft()
            return next(self._it)
        x = self._read(idx)
        order = perm.tolist()
        b = int(batch_size)
        starts = range(int(pos), len(order) - b + 1, b)
        self._plan.batches = [order[p:p + b][part] for p in starts]
        self._expected = collections.deque(self._plan.batches)
        self._it = self._loader_iter()
        return x

    def close(self):
        """Stop the worker processes (the object stays usable: they restart when needed)."""
        it, self._it, self._loader = self._it, None, None
        self._expected.clear()
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()

    def __del__(self):
        try:
            self.close()
        except Exception:   # interpreter shutdown
            pass


def default_num_workers():
    """Worker processes for streamed training: the cores of this process's share, minus one.

    ``os.cpu_count()`` divided by the processes on this node
    (``LOCAL_WORLD_SIZE`` under torchrun), minus one for the training
    process itself, between 1 and 8.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:   # pragma: no cover - not Linux
        cores = os.cpu_count() or 2
    per = max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    return int(min(8, max(1, per - 1)))
