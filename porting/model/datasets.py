"""Inputs for `verify_data`, read a batch at a time: `.npy` / `.npz` files, folders of them, or
folders of images.

Layout. Array files hold samples **batch last, Julia-indexed** by default, as the rest of the
toolkit: `(X1, X2, C, N)` for images (NPZ.jl's `.npy` files are exactly that), `(F, N)` for
feature vectors. `layout="nhwc"` reads TensorFlow's batch-first `(N, H, W, C)` / `(N, F)`
instead; each batch is then mapped to Julia's layout with `spatial` (porting.layout). Images are
decoded by Pillow to `(H, W, C)` and mapped the same way.

Memory. A `.npy` file is memory-mapped, and so is every member of an `.npz` archive stored
without compression (what `np.savez` writes; docs/files.md#npz-stored); only the samples of the current batch are read.
A compressed member (`np.savez_compressed`) cannot be mapped: it is read whole (refused when it
needs more than half the machine's memory) and the report says so. Images are decoded one batch
at a time.

Every file is hostile until read: a wrong shape, a non-numeric dtype, an empty folder, a file
that is not an image gives one `PortingError` naming the file.

>>> import numpy as np, tempfile, os
>>> d = tempfile.mkdtemp()
>>> np.save(os.path.join(d, "x.npy"), np.zeros((4, 4, 3, 5), np.float32))
>>> src = open_data(os.path.join(d, "x.npy"), (4, 4, 3), np.float32)
>>> src.n, [x.shape for _, x in src.batches(2)]
(5, [(4, 4, 3, 2), (4, 4, 3, 2), (4, 4, 3, 1)])
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from porting.errors import PortingError

__all__ = ["open_data", "DataSource", "ImageOptions", "LAYOUTS", "IMAGE_SUFFIXES"]

LAYOUTS = ("julia", "nhwc")
ARRAY_SUFFIXES = (".npy", ".npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class ImageOptions:
    """How image files become model inputs: decoded by Pillow as RGB (or grayscale for a
    one-channel model), channels reordered (`channels="bgr"`), resized to `resize` (H, W) with
    bilinear filtering when given (else every image must already have the model's size), then
    `(pixel * scale - mean) / std` per channel."""

    resize: tuple[int, int] | None = None
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channels: str = "rgb"

    def describe(self) -> str:
        size = (
            f"resized to {self.resize[0]}x{self.resize[1]} (H x W, bilinear)"
            if self.resize
            else "not resized"
        )
        return (
            f"images decoded by Pillow, {self.channels.upper()}, {size}, "
            f"(pixel * {self.scale:.6g} - mean {list(self.mean)}) / std {list(self.std)}"
        )


@dataclass
class _Chunk:
    """One array of samples: where it came from and how to read a range of them."""

    label: str  # the file (and member) shown in messages and in the report
    array: Any  # a memory map or an array, in the file's own layout
    n: int


@dataclass
class DataSource:
    """Samples to verify on, read in batches (`batches`), each Julia-indexed `(size..., B)` in
    the model's dtype. `label(i)` names sample `i` (its file, and its index there)."""

    path: str
    kind: str  # "npy", "npz", "folder of arrays", "folder of images"
    sample_size: tuple[int, ...]  # Julia size of one sample
    dtype: np.dtype
    layout: str
    spatial: str
    n: int = 0
    notes: list[str] = field(default_factory=list)
    _chunks: list[_Chunk] = field(default_factory=list, repr=False)
    _images: list[Path] = field(default_factory=list, repr=False)
    _image_options: ImageOptions | None = field(default=None, repr=False)

    def label(self, i: int) -> str:
        if self._images:
            return self._images[i].name
        for c in self._chunks:
            if i < c.n:
                return f"{c.label}[{i}]"
            i -= c.n
        raise IndexError(i)

    def describe(self) -> str:
        what = (
            self._image_options.describe()
            if self._image_options
            else ("Julia-indexed, batch last" if self.layout == "julia" else "NHWC, batch first")
        )
        return f"{self.path} ({self.kind}, {self.n} samples, {what})"

    def batches(self, batch: int, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """`(first sample index, x)` for consecutive batches of at most `batch` samples."""
        if self._images:
            for lo in range(start, self.n, batch):
                hi = min(lo + batch, self.n)
                yield lo, self._read_images(lo, hi)
            return
        offset = 0
        pending: list[np.ndarray] = []
        pending_n = 0
        first = start
        for c in self._chunks:
            lo = max(0, start - offset)
            while lo < c.n:
                take = min(batch - pending_n, c.n - lo)
                pending.append(self._read(c, lo, lo + take))
                pending_n += take
                lo += take
                if pending_n == batch:
                    yield first, _join(pending)
                    first += pending_n
                    pending, pending_n = [], 0
            offset += c.n
        if pending_n:
            yield first, _join(pending)

    def _read(self, c: _Chunk, lo: int, hi: int) -> np.ndarray:
        from porting import layout

        try:
            part = c.array[..., lo:hi] if self.layout == "julia" else c.array[lo:hi]
            x = np.array(part, order="K")  # a copy: the batch no longer reads the map
        except (OSError, ValueError) as e:  # a truncated memory map
            raise PortingError(f"{c.label}: cannot read samples {lo}..{hi - 1}: {e}") from None
        _release(c.array, part)
        x = _as_model_dtype(x, self.dtype, c.label)
        if self.layout == "nhwc":
            x = layout.activations_from_tf(x, self.spatial) if x.ndim > 2 else x.T
        return np.asfortranarray(x)

    def _read_images(self, lo: int, hi: int) -> np.ndarray:
        from porting import layout

        opts = self._image_options
        assert opts is not None
        h, w, c = _tf_image_shape(self.sample_size, self.spatial)
        out = np.empty((hi - lo, h, w, c), dtype=np.float64)
        for j, p in enumerate(self._images[lo:hi]):
            out[j] = _decode(p, (h, w, c), opts)
        mean = np.asarray(opts.mean, np.float64)
        std = np.asarray(opts.std, np.float64)
        out *= opts.scale
        out -= mean
        out /= std
        return np.asfortranarray(layout.activations_from_tf(out.astype(self.dtype), self.spatial))


def _release(a: Any, part: Any) -> None:
    """Drop the pages of memory map `a` that slice `part` read from this process's resident
    set (the file stays in the page cache): without it a map read to the end counts the whole
    file in the process's peak memory, which would then grow with the number of samples."""
    import mmap

    m = getattr(a, "_mmap", None)
    if not isinstance(m, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        base = np.frombuffer(m, np.uint8).ctypes.data
        contiguous = part.flags.c_contiguous or part.flags.f_contiguous
        lo = part.ctypes.data - base if contiguous else 0
        hi = lo + part.nbytes if contiguous else len(m)
        start = lo // mmap.PAGESIZE * mmap.PAGESIZE
        if hi > start:
            m.madvise(mmap.MADV_DONTNEED, start, min(hi, len(m)) - start)
    except (OSError, ValueError, TypeError):
        pass  # only memory accounting: the batch itself is already copied


def _join(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.asfortranarray(np.concatenate(parts, axis=-1))


def _as_model_dtype(x: np.ndarray, dtype: np.dtype, label: str) -> np.ndarray:
    if x.dtype == dtype:
        return x
    if np.issubdtype(dtype, np.floating) and x.dtype.kind == "f" and x.dtype.itemsize in (2, 4, 8):
        return x.astype(dtype)
    if np.issubdtype(dtype, np.integer) and x.dtype.kind in "iu":
        return x.astype(dtype)
    want = (
        "a floating-point array (float16/32/64)" if dtype.kind == "f" else "integer token indices"
    )
    raise PortingError(f"{label}: dtype {x.dtype} (shape {x.shape}); expected {want}")


def _tf_image_shape(size: tuple[int, ...], spatial: str) -> tuple[int, int, int]:
    from porting import layout

    if len(size) != 3:
        raise PortingError(
            f"images need a model whose input is an image (X1, X2, C); this one takes {size}"
        )
    h, w = layout.spatial_to_tf(tuple(size[:2]), spatial)
    return int(h), int(w), int(size[2])


def _decode(p: Path, hwc: tuple[int, int, int], opts: ImageOptions) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - Pillow is a dependency
        from porting.errors import MissingDependencyError

        raise MissingDependencyError("reading images needs Pillow: pip install pillow") from None
    h, w, c = hwc
    if c not in (1, 3):
        raise PortingError(f"{p}: the model takes {c} channels; images give 1 (gray) or 3 (RGB)")
    try:
        with Image.open(p) as im:
            if im.format not in ("PNG", "JPEG"):
                raise PortingError(f"{p}: a {im.format} image; expected PNG or JPEG")
            conv = im.convert("L" if c == 1 else "RGB")
            if opts.resize is not None:
                conv = conv.resize((opts.resize[1], opts.resize[0]), Image.Resampling.BILINEAR)
            a = np.asarray(conv, dtype=np.float64)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise PortingError(f"{p}: not a readable PNG or JPEG image ({type(e).__name__})") from None
    if a.ndim == 2:
        a = a[:, :, None]
    if opts.channels == "bgr" and c == 3:
        a = a[:, :, ::-1]
    if a.shape != (h, w, c):
        raise PortingError(
            f"{p}: image of {a.shape[0]}x{a.shape[1]} pixels (H x W); the model takes "
            f"{h}x{w}: give --resize {h},{w}"
        )
    return a


# ----------------------------------------------------------------------------- opening


def open_data(
    path: str | os.PathLike[str],
    sample_size: tuple[int, ...],
    dtype: npt.DTypeLike,
    *,
    layout: str = "julia",
    spatial: str = "reverse",
    images: ImageOptions | None = None,
) -> DataSource:
    """The samples at `path` (a `.npy`, an `.npz`, or a folder of either or of PNG/JPEG images)
    for a model taking Julia-size `sample_size` in `dtype`; checked before any batch is read."""
    from porting import files
    from porting._checks import check_choice

    check_choice(layout, "layout", LAYOUTS)
    dtype = np.dtype(dtype)
    sample_size = tuple(int(s) for s in sample_size)
    p = Path(os.fspath(path))
    src = DataSource(str(p), "", sample_size, dtype, layout, spatial)
    if p.is_dir():
        entries = sorted(e for e in p.iterdir() if not e.name.startswith("."))
        if not entries:
            raise PortingError(f"{p}: an empty folder; expected .npy/.npz files or PNG/JPEG images")
        arrays = [e for e in entries if e.suffix.lower() in ARRAY_SUFFIXES]
        imgs = [e for e in entries if e.suffix.lower() in IMAGE_SUFFIXES]
        for e in entries:
            if e not in arrays and e not in imgs or not e.is_file():
                raise PortingError(
                    f"{e}: not a .npy/.npz file or a PNG/JPEG image (the folder {p} may hold "
                    "only one kind of those)"
                )
        if arrays and imgs:
            raise PortingError(
                f"{p}: holds both arrays ({arrays[0].name}) and images ({imgs[0].name}); "
                "expected one kind"
            )
        if imgs:
            src.kind = "folder of images"
            src._images = imgs
            src._image_options = images or ImageOptions()
            _tf_image_shape(sample_size, spatial)  # refuses a model that takes no image
            src.n = len(imgs)
            _check_image_options(src._image_options, sample_size[-1])
            return src
        src.kind = "folder of arrays"
        for e in arrays:
            _add_file(src, e)
    else:
        files.input_file(p, "a .npy or .npz file, or a folder of them or of images", what="--data")
        if p.suffix.lower() not in ARRAY_SUFFIXES:
            raise PortingError(
                f"{p}: expected a .npy or .npz file, or a folder of them or of PNG/JPEG images"
            )
        src.kind = p.suffix.lower()[1:]
        _add_file(src, p)
    src.n = sum(c.n for c in src._chunks)
    if src.n == 0:
        raise PortingError(f"{p}: holds no samples")
    return src


def _check_image_options(opts: ImageOptions, channels: int) -> None:
    from porting._checks import check_choice

    check_choice(opts.channels, "channels", ("rgb", "bgr"))
    for name, v in (("mean", opts.mean), ("std", opts.std)):
        if len(v) not in (1, channels):
            raise PortingError(
                f"--{name} has {len(v)} values; expected 1 or {channels} (one per channel)"
            )
        if not all(np.isfinite(v)):
            raise PortingError(f"--{name} {list(v)}: expected finite numbers")
    if any(s == 0 for s in opts.std):
        raise PortingError(f"--std {list(opts.std)}: a zero would divide by zero")
    if not (np.isfinite(opts.scale) and opts.scale != 0):
        raise PortingError(f"--scale {opts.scale}: expected a finite nonzero number")
    if opts.resize is not None and not all(1 <= s <= 1 << 15 for s in opts.resize):
        raise PortingError(f"--resize {opts.resize}: expected sizes of 1..32768 pixels")


def _add_file(src: DataSource, p: Path) -> None:
    if p.suffix.lower() == ".npy":
        _add_chunk(src, str(p), _map_npy(p))
        return
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as e:
        raise PortingError(f"{p}: not a readable .npz archive ({e})") from None
    with zf:
        members = [i for i in zf.infolist() if not i.is_dir()]
        if not members:
            raise PortingError(f"{p}: an .npz archive with no arrays")
        for info in members:
            label = f"{p}:{info.filename.removesuffix('.npy')}"
            if not info.filename.endswith(".npy"):
                raise PortingError(f"{label}: an .npz member that is not a .npy array")
            if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
                arr = _map_member(p, zf, info, label)
            else:
                arr = _read_member(zf, info, label)
                src.notes.append(
                    f"{label} is compressed: read whole into memory (np.savez writes members "
                    "that are memory-mapped instead)"
                )
            _add_chunk(src, label, arr)


def _add_chunk(src: DataSource, label: str, arr: np.ndarray) -> None:
    from porting.model.convert import tf_sample_shape

    want = src.sample_size
    if arr.dtype.kind not in "fiu" or arr.dtype.kind == "f" and arr.dtype.itemsize not in (2, 4, 8):
        raise PortingError(
            f"{label}: dtype {arr.dtype} (shape {arr.shape}); expected floating-point inputs"
        )
    if src.layout == "julia":
        size, n = tuple(arr.shape[:-1]), (arr.shape[-1] if arr.ndim else 0)
        shown = f"{(*want, 'N')} (Julia-indexed, batch last)"
    else:
        want = tf_sample_shape(want, src.spatial)
        size, n = tuple(arr.shape[1:]), (arr.shape[0] if arr.ndim else 0)
        shown = f"{('N', *want)} (--layout nhwc, batch first)"
    if size != tuple(want) or arr.ndim != len(want) + 1:
        hint = ""
        if (
            src.layout == "julia"
            and arr.ndim == len(want) + 1
            and tuple(arr.shape[1:]) == tuple(tf_sample_shape(want, src.spatial))
        ):
            hint = "; it looks batch-first (N, H, W, C): give --layout nhwc"
        raise PortingError(f"{label}: shape {arr.shape}; the model takes {shown}{hint}")
    if n:
        src._chunks.append(_Chunk(label, arr, int(n)))


def _map_npy(p: Path) -> np.ndarray:
    try:
        arr: np.ndarray = np.load(p, mmap_mode="r", allow_pickle=False)
        return arr
    except (ValueError, OSError, EOFError) as e:
        raise PortingError(f"{p}: not a readable .npy array ({e})") from None


def _map_member(p: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> np.ndarray:
    """A stored (uncompressed) `.npy` member as a read-only memory map into the archive."""
    from numpy.lib import format as npformat

    with open(p, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise PortingError(f"{label}: a damaged .npz member header")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        fh.seek(start)
        try:
            version = npformat.read_magic(fh)
            read = (
                npformat.read_array_header_1_0
                if version == (1, 0)
                else npformat.read_array_header_2_0
            )
            shape, fortran, dt = read(fh)
        except (ValueError, OSError, EOFError) as e:
            raise PortingError(f"{label}: not a readable .npy member ({e})") from None
        data_at = fh.tell()
    if dt.hasobject:
        raise PortingError(f"{label}: an array of Python objects; expected numbers")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if data_at - start + nbytes > info.file_size:
        raise PortingError(f"{label}: the member is shorter than its header says ({shape})")
    if nbytes == 0:
        return np.empty(shape, dt)
    return np.memmap(
        p, dtype=dt, mode="r", offset=data_at, shape=tuple(shape), order="F" if fortran else "C"
    )


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> np.ndarray:
    from numpy.lib import format as npformat

    from porting._checks import check_fits_memory

    check_fits_memory(label, info.file_size)
    try:
        with zf.open(info) as fh:
            return npformat.read_array(fh, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise PortingError(f"{label}: not a readable .npy member ({e})") from None
