# import_model: the export pair (<prefix>.npz + <prefix>.json, schema in README.md "Export
# format") back into a callable Knet model: the way back from Keras (Python's
# `porting convert MODEL.keras --to knet -o PREFIX`) or any other model Python's porting
# describes. Every layer computes with this package's conv4 / deconv4 / pool / mat (Knet's own
# functions when Knet is loaded, else NNlib with Knet's CPU calls), so the imported model is
# exactly what Python's `porting.model.forward_knet` computes (the arithmetic of each kind:
# ../docs/knet.md#conv4, #pool, #mat, #dense, #batchnorm, #layers21, #activations and #softmax).

const IMPORT_KINDS = ("conv", "deconv", "dense", "linear", "pool", "mat", "dropout", "activation",
                      "batchnorm", "zeropad", "reshape", "add", "concat", "embed", "rnn",
                      "timedense")
const IMPORT_ELTYPES = Dict("Float32" => Float32, "Float64" => Float64)

# Sequence layouts (../docs/knet.md#embed, #rnn-packing; Python's twins, with these constants:
# porting.rnn.julia). Between layers a sequence is (T, X, B); Knet's RNN reads and writes
# (X, B, T); Flux's recurrent layers (0.15 and later) (X, T, B); w[:, x] of (T, B) tokens is
# (dim, T, B).
const SEQ_TO_KNET = (2, 3, 1)
const KNET_TO_SEQ = (3, 1, 2)
const SEQ_TO_FLUX = (2, 1, 3)
const EMBED_TO_SEQ = (2, 1, 3)
const RNN_GATES = Dict("relu" => 1, "tanh" => 1, "lstm" => 4, "gru" => 3)
const RNN_KEYS = ("inputSize", "hiddenSize", "rnnType", "numLayers", "bidirectional",
                  "skipInput", "dropout", "h", "c")

"""One layer of an imported model: `f(x)` (merges: `f(xs)`), reading the layers named in
`inputs` ("input" is the model's input)."""
struct ImportedLayer
    name::String
    kind::String
    inputs::Vector{String}
    f::Function
end

"""
    ImportedModel

A model read by `import_model`: its layers in order, each reading earlier outputs by name.
`m(x)` runs it on `x` (Knet's layout, `(X1, ..., C, N)`, batch last) and returns the last
layer's output; `m(x; all=true)` returns every layer's output by name.
"""
struct ImportedModel
    name::String
    input_size::Union{Nothing,Vector{Int}}
    layers::Vector{ImportedLayer}
end

function (m::ImportedModel)(x; all::Bool=false)
    outs = Dict{String,Any}("input" => x)
    for l in m.layers
        xs = [outs[i] for i in l.inputs]
        outs[l.name] = l.kind in ("add", "concat") ? l.f(xs) : l.f(xs[1])
    end
    return all ? outs : outs[m.layers[end].name]
end

Base.show(io::IO, m::ImportedModel) =
    print(io, "ImportedModel(", repr(m.name), ", ", length(m.layers), " layers)")

_import_error(msg) = throw(ArgumentError("import_model: " * msg))

# --------------------------------------------------------------------------- activations

const _SELU_LAMBDA = 1.0507009873554805
const _SELU_LAMBDA_ALPHA = 1.7580993408473773

# Knet's formulas (ops20/activation.jl, ops21/activation.jl) in the element type of x; the
# Python twin is porting.model.stages.activate (the same cases, the same order of operations).
_sigm(x::T) where {T} = x >= 0 ? one(T) / (one(T) + exp(-x)) : (z = exp(x); z / (one(T) + z))
_elu(x::T) where {T} = x >= 0 ? x : exp(x) - one(T)
_selu(x::T) where {T} = x >= 0 ? T(_SELU_LAMBDA) * x : T(_SELU_LAMBDA_ALPHA) * (exp(x) - one(T))
_hardsigmoid(x::T) where {T} = x <= -3 ? zero(T) : x >= 3 ? one(T) : (x + T(3)) / T(6)
_hardswish(x::T) where {T} = x <= -3 ? zero(T) : x >= 3 ? x : x * (x + T(3)) / T(6)
_swish(x) = x * _sigm(x)

function _relu_with(max_value, negative_slope, threshold)
    return function (x::T) where {T}
        max_value !== nothing && x >= T(max_value) && return T(max_value)
        x >= T(threshold) && return x
        return negative_slope == 0 ? zero(T) : T(negative_slope) * (x - T(threshold))
    end
end

function _softmax(x; dims)
    e = exp.(x .- maximum(x; dims=dims))
    return e ./ sum(e; dims=dims)
end

function _logsoftmax(x; dims)
    z = x .- maximum(x; dims=dims)
    return z .- log.(sum(exp.(z); dims=dims))
end

function _gelu_unavailable(x)
    _import_error("gelu needs Knet's erf (Knet loaded): NNlib's gelu is the tanh approximation, " *
                  "not the exact x * (1 + erf(x / sqrt(2))) / 2 the model description means")
end

"""The element-wise function (or, for softmax / logsoftmax, the array function) of an
activation entry."""
function _activation_fn(d::AbstractDict, where::AbstractString)
    name = something(get(d, "activation", nothing), "identity")
    dims = something(get(d, "dims", nothing), 1)
    name == "identity" && return identity
    name == "relu" && any(k -> get(d, k, nothing) !== nothing, RELU_KEYWORDS) &&
        return _relu_with(get(d, "max_value", nothing), something(get(d, "negative_slope", nothing), 0),
                          something(get(d, "threshold", nothing), 0))
    name == "relu" && return x -> max(x, zero(x))
    name == "sigm" && return _sigm
    name == "tanh" && return tanh
    name == "elu" && return _elu
    name == "selu" && return _selu
    name == "swish" && return _swish
    name == "hardsigmoid" && return _hardsigmoid
    name == "hardswish" && return _hardswish
    name == "gelu" && return knet_module() === nothing ? _gelu_unavailable : getproperty(knet_module(), :gelu)
    name == "softmax" && return x -> _softmax(x; dims=dims)
    name == "logsoftmax" && return x -> _logsoftmax(x; dims=dims)
    _import_error("$where: unknown activation $(repr(name))")
end

_elementwise(name) = !(name in ("softmax", "logsoftmax"))

function _apply(f, x, d)
    name = something(get(d, "activation", nothing), "identity")
    name == "identity" && return x
    return _elementwise(name) ? f.(x) : f(x)
end

# --------------------------------------------------------------------------- reading

function _keywords(d, key, defaults::NamedTuple)
    entry = get(d, key, nothing)
    entry === nothing && return defaults
    pairs = Dict{Symbol,Any}()
    for (k, v) in entry
        v === nothing && continue
        pairs[Symbol(k)] = v isa AbstractVector ? Tuple(Int.(v)) : v
    end
    return merge(defaults, NamedTuple(pairs))
end

function _param(d, arrays, what, where; required=true)
    params = something(get(d, "params", nothing), Dict{String,Any}())
    entry = get(params, what, nothing)
    if entry === nothing
        required && _import_error("$where: params.$what is missing")
        return nothing
    end
    key = entry["key"]
    haskey(arrays, key) || _import_error("$where: params.$what names $(repr(key)), which the .npz does not hold")
    a = arrays[key]
    want = Tuple(Int.(entry["size"]))
    size(a) == want || _import_error("$where: params.$what has size $(size(a)) in the .npz but $want in the .json")
    T = get(IMPORT_ELTYPES, entry["eltype"], nothing)
    T === nothing && _import_error("$where: params.$what has eltype $(repr(entry["eltype"])); expected Float32 or Float64")
    eltype(a) == T || _import_error("$where: params.$what is $(eltype(a)) in the .npz but $(entry["eltype"]) in the .json")
    return a
end

"""Knet's grouped conv (Ops21 `groups`): each block of Cin/groups input channels makes its
block of Cout/groups outputs, one conv4 each: the same products and sums per output."""
function _grouped_conv4(w, x, groups; kw...)
    groups == 1 && return conv4(w, x; kw...)
    nd = ndims(x) - 2
    cin, cout = size(w, nd + 1), size(w, nd + 2) ÷ groups
    pieces = map(1:groups) do g
        xg = selectdim(x, nd + 1, (g - 1) * cin + 1:g * cin)
        wg = selectdim(w, nd + 2, (g - 1) * cout + 1:g * cout)
        conv4(collect(wg), collect(xg); kw...)
    end
    return cat(pieces...; dims=nd + 1)
end

function _zeropad(x, pairs)
    nd = ndims(x) - 2
    out = ntuple(i -> i <= nd ? size(x, i) + pairs[i][1] + pairs[i][2] : size(x, i), ndims(x))
    y = zeros(eltype(x), out)
    idx = ntuple(i -> i <= nd ? (pairs[i][1] + 1:pairs[i][1] + size(x, i)) : Colon(), ndims(x))
    y[idx...] = x
    return y
end

function _pad_pairs(p, nd)
    p isa Integer && return ntuple(_ -> (Int(p), Int(p)), nd)
    return ntuple(i -> p[i] isa AbstractVector ? (Int(p[i][1]), Int(p[i][2])) : (Int(p[i]), Int(p[i])), nd)
end

_bias_add(y, b) = b === nothing ? y : y .+ reshape(b, ntuple(i -> i == ndims(y) - 1 ? length(b) : 1, ndims(y)))

function _layer_fn(d::AbstractDict, arrays, where::AbstractString)
    kind = d["kind"]
    act = _activation_fn(d, where)
    if kind == "conv" || kind == "deconv"
        w, b = _param(d, arrays, "w", where), _param(d, arrays, "b", where; required=false)
        defaults = (padding=0, stride=1, dilation=1, mode=0)
        kw = kind == "conv" ? _keywords(d, "conv", defaults) : _keywords(d, "deconv", defaults)
        groups = get(kw, :groups, 1)
        ckw = (padding=kw.padding, stride=kw.stride, dilation=kw.dilation, mode=kw.mode,
               alpha=get(kw, :alpha, 1))
        pkw = get(d, "pool", nothing) === nothing ? nothing : _keywords(d, "pool", (window=2, padding=0, stride=nothing, mode=0))
        before = get(d, "order", "pool-activation") == "activation-pool"
        return function (x)
            y = kind == "conv" ? _grouped_conv4(w, x, groups; ckw...) : deconv4(w, x; ckw...)
            y = _bias_add(y, b)
            before && (y = _apply(act, y, d))
            pkw === nothing || (y = pool(y; pkw...))
            before || (y = _apply(act, y, d))
            return y
        end
    elseif kind == "dense" || kind == "linear"
        w, b = _param(d, arrays, "w", where), _param(d, arrays, kind == "dense" ? "b" : "bias", where; required=false)
        return x -> _apply(act, b === nothing ? w * mat(x) : w * mat(x) .+ vec(b), d)
    elseif kind == "pool"
        pkw = _keywords(d, "pool", (window=2, padding=0, stride=nothing, mode=0))
        return x -> pool(x; pkw...)
    elseif kind == "mat"
        return x -> mat(x)
    elseif kind == "dropout"
        return identity  # inference
    elseif kind == "activation"
        return x -> _apply(act, x, d)
    elseif kind == "batchnorm"
        mean, var = vec(_param(d, arrays, "mean", where)), vec(_param(d, arrays, "var", where))
        p = _param(d, arrays, "bnparams", where; required=false)
        eps = something(get(d, "eps", nothing), 1e-5)
        return function (x::AbstractArray{T}) where {T}
            shape = ntuple(i -> i == max(ndims(x) - 1, 1) ? length(mean) : 1, ndims(x))
            m = reshape(T.(mean), shape)
            ivar = one(T) ./ sqrt.(reshape(T.(var), shape) .+ T(eps))
            p === nothing && return (x .- m) .* ivar
            c = length(mean)
            g, bb = reshape(T.(vec(p)[1:c]), shape), reshape(T.(vec(p)[c + 1:end]), shape)
            return g .* (x .- m) .* ivar .+ bb
        end
    elseif kind == "zeropad"
        padding = d["padding"]
        return x -> _zeropad(x, _pad_pairs(padding, ndims(x) - 2))
    elseif kind == "reshape"
        size_ = Tuple(Int.(d["size"]))
        return x -> reshape(x, size_..., :)
    elseif kind == "add"
        return xs -> _apply(act, reduce(.+, xs), d)
    elseif kind == "concat"
        return xs -> cat(xs...; dims=ndims(xs[1]) - 1)
    elseif kind == "embed"
        w = _param(d, arrays, "w", where)
        return x -> _embed(w, x, where)
    elseif kind == "rnn"
        w = _param(d, arrays, "w", where)
        spec = _rnn_spec(d, w, where)
        last = _rnn_output(d, where) == "last"
        r = _knet_rnn(spec, w, where)
        return function (x)
            y = r(permutedims(x, SEQ_TO_KNET))  # Knet's (Y, B, T)
            return last ? y[:, :, end] : permutedims(y, KNET_TO_SEQ)
        end
    elseif kind == "timedense"
        w, b = _param(d, arrays, "w", where), _param(d, arrays, "b", where; required=false)
        return function (x)
            yk = permutedims(x, SEQ_TO_KNET)  # (H, B, T)
            h, nb, nt = size(yk)
            z = reshape(_bias_add(w * reshape(yk, h, :), b), :, nb, nt)  # (V, B, T)
            return permutedims(_apply(act, z, d), KNET_TO_SEQ)  # softmax over V: dims=1 here
        end
    end
    _import_error("$where: kind $(repr(kind)) is not imported yet; expected one of " *
                  join(IMPORT_KINDS, ", "))
end

# --------------------------------------------------------------------------- sequences

"""`(T, B)` 1-based tokens (a `(B,)` vector: one step) -> `w[:, x]` as `(T, dim, B)`."""
function _embed(w, x, where)
    tokens = ndims(x) == 1 ? reshape(x, 1, :) : x
    vocab = size(w, 2)
    all(t -> 1 <= t <= vocab, tokens) ||
        _import_error("$where: token indices must be in 1:$vocab (Knet indexes from 1)")
    return permutedims(w[:, tokens], EMBED_TO_SEQ)
end

"""The `rnn` object of an entry (Knet's RNN fields), its keys and the packed length checked;
a state array is refused (it fixes the batch size: the model starts from zero)."""
function _rnn_spec(d, w, where)
    spec = get(d, "rnn", nothing)
    spec isa AbstractDict || _import_error("$where: rnn is missing (Knet's RNN fields)")
    for k in RNN_KEYS
        haskey(spec, k) || _import_error("$where: rnn.$k is missing")
    end
    haskey(RNN_GATES, spec["rnnType"]) ||
        _import_error("$where: rnn.rnnType $(repr(spec["rnnType"])); expected relu, tanh, lstm or gru")
    for k in ("h", "c")
        spec[k] in ("nothing", 0) ||
            _import_error("$where: rnn.$k = $(repr(spec[k])); expected \"nothing\" or 0 (a zero initial state)")
    end
    g, h, x = RNN_GATES[spec["rnnType"]], spec["hiddenSize"], spec["inputSize"]
    dirs = spec["bidirectional"] ? 2 : 1
    n = 0
    for l in 1:spec["numLayers"]
        nin = l == 1 ? (spec["skipInput"] ? 0 : x) : h * dirs
        n += dirs * g * (h * nin + h * h + 2h)
    end
    length(w) == n || _import_error("$where: params.w has $(length(w)) values; rnn's fields need $n")
    return spec
end

function _rnn_output(d, where)
    output = something(get(d, "output", nothing), "sequence")
    output in ("sequence", "last") ||
        _import_error("$where: output = $(repr(output)); expected \"sequence\" or \"last\"")
    return output
end

"""Knet's `RNN` (Knet.jl v1.4.10 src/ops20/rnn.jl: `RNN(inputSize, hiddenSize; rnnType,
numLayers, bidirectional, skipInput, dropout, atype)`), its packed weights `r.w` (a
`Param` of size `(1, 1, n)` in cuDNN's order, ../docs/knet.md#rnn-packing) replaced by the
export's, which Python packs in that order (porting.rnn.params.pack). Needs Knet."""
function _knet_rnn(spec, w, where)
    K = knet_module()
    K === nothing && _import_error("$where: an rnn layer needs Knet loaded (Knet's RNN); " *
                                   "without Knet use flux_model (Flux's recurrent layers)")
    T = eltype(w)
    r = K.RNN(spec["inputSize"], spec["hiddenSize"]; rnnType=Symbol(spec["rnnType"]),
              numLayers=spec["numLayers"], bidirectional=spec["bidirectional"],
              skipInput=spec["skipInput"], dropout=spec["dropout"], atype=Array{T})
    n = length(K.value(r.w))  # r.w is a Param (AutoGrad): its array is value(r.w)
    n == length(w) || _import_error("$where: Knet's RNN holds $n weights, the export $(length(w))")
    r.w = K.Param(reshape(Array{T}(vec(w)), 1, 1, :))
    r.h, r.c = nothing, nothing  # zero initial states, final states not kept
    return r
end

"""
    import_model(prefix) -> ImportedModel

Read `<prefix>.json` and `<prefix>.npz` (as Python's `porting.model.save_export` writes them,
e.g. from `porting convert MODEL.keras --to knet -o PREFIX`) into an `ImportedModel`: `m(x)`
runs it with Knet's functions on `x` in Knet's layout, batch last. Every size and element type
the .json records is checked against the .npz; a problem throws an `ArgumentError` naming the
layer.
"""
function import_model(prefix::AbstractString)
    doc, arrays, stem = _read_export(prefix)
    layers = ImportedLayer[]
    prev = "input"
    for (i, d) in enumerate(doc["layers"])
        name = string(something(get(d, "name", nothing), "layer$i"))
        where = "layer $i ($(repr(name)))"
        kind = string(d["kind"])
        inputs = kind in ("add", "concat") ? String.(d["inputs"]) :
                 [string(something(get(d, "input", nothing), prev))]
        push!(layers, ImportedLayer(name, kind, inputs, _layer_fn(d, arrays, where)))
        prev = name
    end
    isempty(layers) && _import_error("$(stem).json has no layers")
    size_ = get(doc, "input_size", nothing)
    return ImportedModel(string(get(doc, "name", "model")), size_ === nothing ? nothing : Int.(size_), layers)
end

"""The parsed .json, the .npz's arrays and the prefix of an export pair (format and version
checked)."""
function _read_export(prefix::AbstractString)
    stem = endswith(prefix, ".json") || endswith(prefix, ".npz") ? splitext(prefix)[1] : prefix
    for ext in (".json", ".npz")
        isfile(stem * ext) || _import_error("$(stem)$ext: no such file; expected the export pair " *
                                            "<prefix>.json + <prefix>.npz")
    end
    doc = JSON.parsefile(stem * ".json")
    get(doc, "format", nothing) == EXPORT_FORMAT ||
        _import_error("$(stem).json is not a porting export (format $(repr(get(doc, "format", nothing))))")
    version = get(doc, "version", nothing)
    version isa Integer && 1 <= version <= EXPORT_VERSION ||
        _import_error("$(stem).json has version $(repr(version)); expected 1 to $EXPORT_VERSION")
    return doc, NPZ.npzread(stem * ".npz"), stem
end

"""
    flux_model(prefix) -> Flux.Chain (or a graph of Flux layers)

The export pair as Flux layers (needs `using Flux`, Julia >= 1.9: the PortingKnetFluxExt
extension): Knet's mode-0 conv is Flux's `Conv`, mode 1 `CrossCor`, pools `MaxPool` /
`MeanPool`, `mat` `Flux.flatten`, batchnorm `BatchNorm` in test mode. A model whose layers
all read the one before is a `Chain`; merges and skips make a graph of Flux layers.
"""
flux_model(prefix::AbstractString) = _flux_model(Val(:flux), prefix)
_flux_model(::Val, prefix) =
    throw(ArgumentError("flux_model: load Flux first (`using Flux`, Julia >= 1.9): the Flux " *
                        "loader is PortingKnet's Flux extension"))
