"""Flux.jl models saved with BSON.jl (``BSON.@save "model.bson" model``), converted without
Julia (docs/flux.md#bson-files, #layer-fields).

>>> from porting.flux import load_model                                  # doctest: +SKIP
>>> fm = load_model("model.bson", key="model")                           # doctest: +SKIP
>>> fm.model.output_sizes, print(fm.report())                            # doctest: +SKIP

- `load_model(path, key=None)` -> `FluxModel`: the `porting.model.KnetModel` (the shared
  model description) and, per layer, the Flux struct it came from.
- `inspect_text(path)`: what the file holds (`porting inspect FILE.bson`).
- Modules: `recognise` (Flux layer structs -> model layers; `recurrent` and `resample`
  hold the recurrent layers and Upsample / PixelShuffle), `functions` (activations by
  NNlib name; anonymous functions read as code, never run), `load` (files, keys, report),
  `build` (Flux's constructors in Python, onto which a `Flux.state` tree is loaded:
  `build.load_state(build.Chain(build.Conv((5, 5), (1, 6), "relu"), ...), state)`),
  `structure` (structure files in Python: a `build.Chain` for a JLD2 file of ``Flux.state``,
  a user struct's forward for a BSON.jl file; `structure.load_structured`).

This package reads files through `porting.io` (the BSON reader) and builds `porting.model`
layers; it imports no other source-format package (`porting.knetfile`).
"""

from porting.flux.load import SOURCE, FluxModel, entries, inspect_text, load_model, read

__all__ = ["SOURCE", "FluxModel", "entries", "inspect_text", "load_model", "read"]
