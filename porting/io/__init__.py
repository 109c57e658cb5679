"""Weight files in, Julia-indexed NumPy arrays out.

``load(path)`` reads the files people move Knet weights in and returns a dict of names to
**Julia-indexed** arrays: shape equals Julia's ``size()`` and element ``[i-1, j-1, ...]`` equals
Julia's ``[i, j, ...]``, whatever the memory order (most come back Fortran-ordered, zero copy).

>>> import numpy as np, tempfile, os
>>> w = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4))  # Julia (2,3,4)
>>> d = tempfile.mkdtemp(); p = save_npz(os.path.join(d, "w.npz"), {"conv": {"w": w}})
>>> {k: v.shape for k, v in load(p).items()}
{'conv.w': (2, 3, 4)}

Formats (chosen by the file's magic bytes, else by extension; ``format=`` overrides; each is
described in docs/files.md#npz, #mat-v5, #mat-v73, #jld2, #jld2-functions, #hdf5-plain and
#safetensors):

- ``npy``: NPZ.jl ``npzwrite`` (Fortran order, shape = Julia's size) or NumPy. Returned as
  stored: NumPy's logical array already has Julia's shape and indexing. A C-ordered ``.npy``
  written by a NumPy user is taken the same way (its logical shape is taken as Julia's size).
  The single array is named by the file stem.
- ``npz``: NPZ.jl, NumPy or :func:`save_npz`; each member as for ``npy``, names flat.
- ``mat5``: MATLAB (``save -v7``/``-v6``) or scipy ``savemat`` (MAT.jl cannot write v5);
  ``scipy.io.loadmat`` already gives ``(X1, X2, ...)``.
- ``mat73``: MAT.jl ``matwrite`` (its default) or MATLAB ``-v7.3``: HDF5 behind a 512-byte
  MATLAB header. h5py sees the dims reversed; the ``.T`` view restores Julia's order
  (docs/files.md#hdf5-reversed).
- ``jld2``: JLD2.jl (``JLD2.save``, ``jldsave``, ``@save``): HDF5 behind a 512-byte Julia
  header, dims reversed as for ``mat73``; object references followed.
- ``safetensors``: Python / PyTorch writers; returned as stored (see below), read without
  the ``safetensors`` package.
- ``bson``: BSON.jl (``BSON.@save``, Flux's older way to save a model): BSON decoded by
  pymongo's ``bson`` module, BSON.jl's tags into a plain tree (``porting.io.bsonjl``: structs,
  types, Julia-indexed arrays; functions by name, anonymous ones as code never run;
  docs/flux.md#bson-files).

Decisions, stated once:

- **Nothing is squeezed or padded.** A shape is the one the file records, in Julia order.
  MAT v5 cannot hold a 1-D array (a vector is an ``n x 1`` or ``1 x n`` matrix, a scalar
  ``1 x 1``), so a vector saved to v5 by MATLAB or scipy comes back ``(n, 1)`` or ``(1, n)``;
  a Julia ``Vector`` of length ``n`` from MAT v7.3, JLD2 and ``.npy`` comes back ``(n,)``.
  MAT.jl writes a scalar as a 1-element array, ``(1,)`` in v7.3. Consumers should accept
  ``(n,)`` and ``(n, 1)`` biases alike (docs/files.md#mat-v5, #mat-v73).
- A value the file stores as a scalar (HDF5 scalar dataspace: JLD2 numbers) is a plain Python
  ``int``/``float``/``complex``/``bool``; a string is ``str``.
- MATLAB structs, JLD2 groups, ``Dict``\\ s, ``NamedTuple``\\ s and other Julia structs become
  nested dicts; JLD2 tuples and ``Pair``\\ s become Python tuples; MATLAB cell arrays and JLD2
  arrays of references (``Vector{Any}``, ``Vector{Matrix{Float32}}``) become lists in Julia's
  linear (column-major) order.
- A Julia function stored in a JLD2 struct field (``f=relu``) that h5py *can* read comes back as
  its name (``"NNlib.relu"``); one h5py cannot read raises `PortingError` with export advice.
- **safetensors** files are written from Python (row-major, PyTorch layout). They are returned
  exactly as stored; no axis is reversed, because the file does not say who wrote it. If you
  wrote one from Julia by reversing dims yourself, reverse them back with ``a.T``.
- A plain HDF5 file with neither a MAT 7.3 nor a JLD2 header is refused unless ``format=`` says
  how to read it: nothing in it tells whether its dims are Julia's (reversed) or C order.

Every problem with the file (missing, a directory, a FIFO or device, truncated, corrupt, unknown
format, strings or objects where numbers were expected) raises `PortingError` naming the path
and what was expected. h5py and scipy are imported only inside the functions that need them.

Untrusted files (docs/files.md#untrusted-files):

- **Size budget.** Every array's size is known from its header (an ``.npy``/``.npz`` member's
  shape, an HDF5 dataset's ``size * itemsize``, a safetensors entry, a MAT v5 element inflated
  in a stream) and charged before it is read; past the limit, `PortingError` names the member,
  its claimed size and the limit. Default 1 GiB per `load`; ``max_bytes=`` or the environment
  variable ``PORTING_MAX_LOAD_BYTES`` (``512M``, ``16GiB``) changes it.
- **Object budget.** At most 1,000,000 objects (HDF5 groups/datasets, zip members, MAT
  elements) per `load`; ``max_objects=`` or ``PORTING_MAX_LOAD_OBJECTS``. An HDF5 object reached
  by several paths (hard links, object references) is read once and shared.
- **Links.** HDF5 external links, external storage and virtual datasets are refused (never
  followed into another file); soft links are resolved inside the file only.
- **Byte order.** A big-endian array is converted to native order (same values).
- **safetensors** ``BF16`` tensors come back as float32 with the same values.
"""

from __future__ import annotations

from porting.io._core import FORMATS, flatten
from porting.io._detect import detect_format
from porting.io._load import load
from porting.io._npy import save_npz

__all__ = ["FORMATS", "load", "detect_format", "save_npz", "flatten"]
