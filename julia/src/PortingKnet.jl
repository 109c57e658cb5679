"""
    PortingKnet

The Julia side of the `porting` toolkit: Knet's `conv4`, `deconv4`, `pool` and `mat` with Knet's
exact CPU semantics; `export_model`, which writes a Knet model's parameters to `.npz` plus a
JSON description that Python reads without Julia; and `import_model`, which reads that pair
back into a callable model (the way back: a Keras model that Python's porting converted).

Knet itself is used when the active environment can load it (Knet 1.4.10 installs only on
Julia <= 1.9); otherwise the same arithmetic runs on NNlib, the library Knet's CPU path calls.
`backend_name()` says which: `"julia"` (Knet) or `"julia-nnlib"`.

Arrays are Julia arrays in Knet's layout, `(X1, ..., Xd, C, N)` for data and
`(W1, ..., Wd, Cin, Cout)` for kernels. `conv4` with `mode=0` (the default) computes true
convolution (the kernel rotated 180 degrees in every spatial dimension); `mode=1` computes
cross-correlation, which is what TensorFlow, Keras and PyTorch call convolution.

The array functions are not exported, so that `using Knet, PortingKnet` stays unambiguous:
call them as `PortingKnet.conv4` etc.
"""
module PortingKnet

import JSON
import NNlib
import NPZ

# The standard libraries by their registered UUIDs, not by name: a name is looked up through
# LOAD_PATH, and an embedding (juliacall, a `JULIA_LOAD_PATH` without `@stdlib`) may leave the
# standard library out of it while the project does not list them. By UUID, LinearAlgebra comes
# from the system image. TOML is needed only before Julia 1.9 (see `_project_version`) and is
# loaded there, on first use, the same way.
const LinearAlgebra = Base.require(Base.PkgId(Base.UUID("37e2e46d-f89d-539d-b4ee-838fcccc9c8e"), "LinearAlgebra"))
const TOML_ID = Base.PkgId(Base.UUID("fa267f1f-6049-4f14-aa54-33bafae1ed76"), "TOML")
const lmul! = LinearAlgebra.lmul!

export export_model, import_model, flux_model

include("backend.jl")
include("ops.jl")
include("export.jl")
include("import.jl")

end # module
