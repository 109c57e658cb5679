"""Knet models saved in JLD2 files (`Knet.save`, `JLD2.@save`), converted without Julia
(docs/files.md#knet-save, #jld2, #jld2-functions).

>>> from porting.knetfile import load_model                             # doctest: +SKIP
>>> fm = load_model("model.jld2", key="q_networks/1")                   # doctest: +SKIP
>>> fm.model.output_sizes, print(fm.report())                           # doctest: +SKIP

- `load_model(path, key=None, structure=None, geometry=None)` -> `FileModel`: the
  `porting.model.KnetModel` and, per layer, where its weights and every geometry value came
  from (the file, a flag, the structure file or Knet's default).
- `entries(tree)` / `porting inspect FILE`: what a file holds, as paths usable as ``key``
  (items numbered from 1, as in Julia).
- `Geometry`: values the file does not store (conv4/pool keywords of a tutorial `Conv`).
- Modules: `tree` (reading, paths), `arrays` (Param / KnetArray / CuArray weights), `functions`
  (activation type names), `recognise` (layers), `structure` (a structure file for arrays-only
  files), `cli` (command-line pieces).

Only NumPy is imported here; h5py comes with `porting.io` when a file is read.
"""

from porting.knetfile.load import CAVEAT, Entry, FileModel, entries, load_model
from porting.knetfile.recognise import Geometry, Setting
from porting.knetfile.tree import read, select

__all__ = [
    "CAVEAT",
    "Entry",
    "FileModel",
    "Geometry",
    "Setting",
    "entries",
    "load_model",
    "read",
    "select",
]
