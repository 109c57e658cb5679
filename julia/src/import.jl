# import_model: the export pair (<prefix>.npz + <prefix>.json, schema in README.md "Export
# format") back into a callable Knet model: the way back from Keras (Python's
# `porting convert MODEL.keras --to knet -o PREFIX`) or any other model Python's porting
# describes. Every layer computes with this package's conv4 / deconv4 / pool / mat (Knet's own
# functions when Knet is loaded, else NNlib with Knet's CPU calls), so the imported model is
# exactly what Python's `porting.model.forward_knet` computes (the arithmetic of each kind:
# ../docs/knet.md#conv4, #pool, #mat, #dense, #batchnorm, #layers21, #activations and #softmax).

const IMPORT_KINDS = ("conv", "deconv", "dense", "linear", "pool", "mat", "dropout", "activation",
                      "batchnorm", "layernorm", "groupnorm", "zeropad", "reshape", "add",
                      "concat", "mul", "affine", "upsample", "pixelshuffle", "embed", "rnn",
                      "timedense")
const MERGE_KINDS = ("add", "concat", "mul")
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
        outs[l.name] = l.kind in MERGE_KINDS ? l.f(xs) : l.f(xs[1])
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
# NNlib's gelu (the tanh approximation), in the same order of operations as porting.activations
_gelu_tanh(x::T) where {T} = T(0.5) * x * (one(T) + tanh(T(sqrt(2 / pi)) * (x + T(0.044715) * x * x * x)))

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
    name == "gelu_tanh" && return _gelu_tanh
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

# NNlib's upsample_linear, one spatial dimension after another (X1 first), in the element type
# of x as NNlib v0.9.22 src/upsample.jl computes it (its source_idx_and_λ), with either
# align_corners (Flux's true; Keras's half-pixel centres are false): written here because NNlib
# before 0.8.20 has no align_corners keyword. The Python twin is
# porting.model.kinds.upsample (`_weights`, `_interpolate`).
function _linear_weights(::Type{T}, n_in::Int, n_out::Int, align::Bool) where {T}
    ratio = align ? (n_out > 1 ? T((n_in - 1) / (n_out - 1)) : zero(T)) : T(n_in / n_out)
    i0, i1 = zeros(Int, n_out), zeros(Int, n_out)
    l0, l1 = zeros(T, n_out), zeros(T, n_out)
    for i in 1:n_out
        real = align ? ratio * T(i - 1) : max(zero(T), ratio * (T(i - 1) + T(0.5)) - T(0.5))
        k = floor(Int, real)
        i0[i], i1[i] = k + 1, k + (k < n_in - 1 ? 1 : 0) + 1
        l1[i] = real - T(k)
        l0[i] = one(T) - l1[i]
    end
    return i0, i1, l0, l1
end

function _interpolate(x::AbstractArray{T}, dim::Int, n_out::Int, align::Bool) where {T}
    i0, i1, l0, l1 = _linear_weights(T, size(x, dim), n_out, align)
    shape = ntuple(k -> k == dim ? n_out : 1, ndims(x))
    return reshape(l0, shape) .* selectdim(x, dim, i0) .+ reshape(l1, shape) .* selectdim(x, dim, i1)
end

_per_dim(v, nd) = v isa AbstractVector ? Tuple(v) : ntuple(_ -> v, nd)

"""The output's spatial size of an upsample entry on `x` (Python's UpsampleStage.sizes)."""
function _upsample_size(x, mode, scale, size_)
    nd = ndims(x) - 2
    size_ !== nothing && return Tuple(Int.(size_))
    mode == "nearest" && return ntuple(i -> i <= length(_per_dim(scale, nd)) ?
                                            Int(_per_dim(scale, nd)[i]) * size(x, i) : size(x, i), nd)
    return ntuple(i -> floor(Int, _per_dim(scale, nd)[i] * size(x, i)), nd)
end

function _upsample(x, mode, scale, size_, align)
    out = _upsample_size(x, mode, scale, size_)
    if mode == "nearest"
        return NNlib.upsample_nearest(x, ntuple(i -> out[i] ÷ size(x, i), length(out)))
    end
    y = x
    for i in 1:length(out)
        out[i] == size(y, i) || (y = _interpolate(y, i, out[i], align))
    end
    return y
end

_bias_add(y, b) = b === nothing ? y : y .+ reshape(b, ntuple(i -> i == ndims(y) - 1 ? length(b) : 1, ndims(y)))

# ---- rnn (../docs/knet.md#rnn-packing; the initial state: ../docs/flux.md#recurrent-flux)

"""The initial state an rnn entry starts EVERY call from: `nothing` (zero: the policies
"nothing" and "zero") or the `(H, 1, L or 2L)` array of porting's policy "initial" (e.g. a Flux
`Recur`'s trained `state0`), which the call repeats over the batch as Python's
`porting.model.kinds.rnn.RNNStage.states` does. A state array of the exporting session
("array") fixes the batch size: refused, as Python refuses it."""
function _rnn_initial(d, arrays, name, where)
    policy = d["rnn"][name]
    policy in ("nothing", "zero", 0) && return nothing
    policy == "initial" && return _param(d, arrays, name, where)
    _import_error("$where: rnn.$name = $(repr(policy)): a state array fixes the batch size; " *
                  "reset r.$name (nothing or 0) before exporting")
end

"""Knet's `pool`, with mode 2 (the mean of each window's real cells, cuDNN's
CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING) made exact on the CPU too, where Knet 1.4.10 runs
mode 2 as mode 1 (src/ops20/conv.jl `checkpoolopts`): `pool(x; mode=1) ./ pool(ones; mode=1)`,
the mean over the whole window divided by the share of it inside the input. Python's twin is
porting.model.kinds.pool.PoolStage.forward."""
function _pool(x; mode=0, padding=0, kw...)
    (mode == 2 && any(p -> p != 0, padding)) || return pool(x; mode=mode, padding=padding, kw...)
    ones_ = fill!(similar(x, size(x)[1:end-2]..., 1, 1), 1)
    return pool(x; mode=1, padding=padding, kw...) ./ pool(ones_; mode=1, padding=padding, kw...)
end

# Normalisation by a sample's own statistics (the layernorm and groupnorm kinds; Python's twin
# is porting.model.kinds._normalise, the same order of operations): the mean and the biased
# variance over `dims`, in the element type of x; the denominator by `formula` ("var":
# sqrt(var + eps), Flux >= 0.16.11 and Keras; "eps2": sqrt(var + eps^2), Flux 0.15-0.16.10;
# "std": sqrt(var) + eps, Flux <= 0.14: ../docs/flux.md#normalisation-flux).
function _normalise(x::AbstractArray{T}, dims, eps, formula) where {T}
    n = T(prod(size(x, i) for i in dims))
    mu = sum(x; dims=dims) ./ n
    dev = x .- mu
    var = sum(dev .* dev; dims=dims) ./ n
    e = T(eps)
    den = formula == "std" ? sqrt.(var) .+ e : formula == "eps2" ? sqrt.(var .+ e * e) : sqrt.(var .+ e)
    return dev .* (one(T) ./ den)
end

function _layernorm(x::AbstractArray{T}, k, s, b, eps, formula) where {T}
    formula in ("var", "eps2", "std") ||
        _import_error("layernorm formula $(repr(formula)); expected var, eps2 or std")
    y = _normalise(x, 1:k, eps, formula)
    s === nothing && return y
    return T.(s) .* y .+ T.(b)  # Flux's Scale: one scale and bias per element of size
end

function _groupnorm(x::AbstractArray{T}, c, g, s, b, eps) where {T}
    sz = size(x)
    sz[end - 1] == c || _import_error("groupnorm: input of size $sz; expected $c channels")
    x2 = reshape(x, sz[1:end - 2]..., c ÷ g, g, sz[end])  # consecutive channels per group
    y = reshape(_normalise(x2, 1:ndims(x2) - 2, eps, "var"), sz)
    s === nothing && return y
    shape = ntuple(i -> i == ndims(x) - 1 ? c : 1, ndims(x))
    return reshape(T.(vec(s)), shape) .* y .+ reshape(T.(vec(b)), shape)
end

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
            pkw === nothing || (y = _pool(y; pkw...))
            before || (y = _apply(act, y, d))
            return y
        end
    elseif kind == "dense" || kind == "linear"
        w, b = _param(d, arrays, "w", where), _param(d, arrays, kind == "dense" ? "b" : "bias", where; required=false)
        return x -> _apply(act, b === nothing ? w * mat(x) : w * mat(x) .+ vec(b), d)
    elseif kind == "pool"
        pkw = _keywords(d, "pool", (window=2, padding=0, stride=nothing, mode=0))
        return x -> _pool(x; pkw...)
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
    elseif kind == "layernorm"
        k = length(d["size"])
        s, b = _param(d, arrays, "scale", where; required=false), _param(d, arrays, "bias", where; required=false)
        eps = something(get(d, "eps", nothing), 1e-5)
        formula = string(something(get(d, "formula", nothing), "var"))
        return x -> _layernorm(x, k, s, b, eps, formula)
    elseif kind == "groupnorm"
        c, g = Int(d["channels"]), Int(d["groups"])
        s, b = _param(d, arrays, "scale", where; required=false), _param(d, arrays, "bias", where; required=false)
        eps = something(get(d, "eps", nothing), 1e-5)
        return x -> _groupnorm(x, c, g, s, b, eps)
    elseif kind == "zeropad"
        padding = d["padding"]
        return x -> _zeropad(x, _pad_pairs(padding, ndims(x) - 2))
    elseif kind == "reshape"
        size_ = Tuple(Int.(d["size"]))
        return x -> reshape(x, size_..., :)
    elseif kind == "upsample"
        mode = string(something(get(d, "mode", nothing), "nearest"))
        scale, size_ = get(d, "scale", nothing), get(d, "size", nothing)
        align = something(get(d, "align_corners", nothing), true)
        return x -> _upsample(x, mode, scale, size_, align)
    elseif kind == "pixelshuffle"
        r = Int(d["r"])
        return x -> NNlib.pixel_shuffle(x, r)
    elseif kind == "add"
        return xs -> _apply(act, reduce(.+, xs), d)
    elseif kind == "concat"
        return xs -> cat(xs...; dims=ndims(xs[1]) - 1)
    elseif kind == "mul"
        return xs -> reduce(.*, xs)  # broadcasting: a (1, 1, C, N) gate times (X1, X2, C, N)
    elseif kind == "affine"
        s, b = vec(_param(d, arrays, "scale", where)), vec(_param(d, arrays, "bias", where))
        return function (x::AbstractArray{T}) where {T}
            shape = ntuple(i -> i == max(ndims(x) - 1, 1) ? length(s) : 1, ndims(x))
            return x .* reshape(T.(s), shape) .+ reshape(T.(b), shape)
        end
    elseif kind == "embed"
        w = _param(d, arrays, "w", where)
        return x -> _embed(w, x, where)
    elseif kind == "rnn"
        w = _param(d, arrays, "w", where)
        spec = _rnn_spec(d, w, where)
        get(spec, "resetAfter", true) === false &&
            _import_error("$where: rnn.resetAfter = false (Flux's GRUv3: the reset gate before the " *
                          "recurrent matrix) is no Knet RNN; rebuild it with flux_model (using Flux)")
        last = _rnn_output(d, where) == "last"
        r = _knet_rnn(spec, w, where)
        h0, c0 = _rnn_initial(d, arrays, "h", where), _rnn_initial(d, arrays, "c", where)
        return function (x)
            xk = permutedims(x, SEQ_TO_KNET)  # Knet's (X, B, T)
            B = size(xk, 2)
            # every call from the same initial state: Knet's RNN checks that r.h is (H, B, L)
            # and overwrites it with the final state
            r.h = h0 === nothing ? nothing : repeat(h0, 1, B, 1)
            r.c = c0 === nothing ? nothing : repeat(c0, 1, B, 1)
            y = r(xk)  # Knet's (Y, B, T)
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
a state array is refused (it fixes the batch size); a zero or a constant initial state
("initial": `_rnn_initial`) is taken."""
function _rnn_spec(d, w, where)
    spec = get(d, "rnn", nothing)
    spec isa AbstractDict || _import_error("$where: rnn is missing (Knet's RNN fields)")
    for k in RNN_KEYS
        haskey(spec, k) || _import_error("$where: rnn.$k is missing")
    end
    haskey(RNN_GATES, spec["rnnType"]) ||
        _import_error("$where: rnn.rnnType $(repr(spec["rnnType"])); expected relu, tanh, lstm or gru")
    for k in ("h", "c")  # the policy; "initial" reads params.h / params.c (_rnn_initial)
        spec[k] in ("nothing", "zero", 0, "initial") ||
            _import_error("$where: rnn.$k = $(repr(spec[k])); expected \"nothing\", \"zero\" or " *
                          "\"initial\" (a state array of the exporting session fixes the batch size)")
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
        inputs = kind in MERGE_KINDS ? String.(d["inputs"]) :
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
`MeanPool`, `mat` `Flux.flatten`, batchnorm `BatchNorm` in test mode, layernorm `LayerNorm`
(when the running Flux adds eps by the recorded formula, else the same arithmetic as a
function), groupnorm `GroupNorm` / `InstanceNorm`. A model whose layers
all read the one before is a `Chain`; merges and skips make a graph of Flux layers.
"""
flux_model(prefix::AbstractString) = _flux_model(Val(:flux), prefix)
_flux_model(::Val, prefix) =
    throw(ArgumentError("flux_model: load Flux first (`using Flux`, Julia >= 1.9): the Flux " *
                        "loader is PortingKnet's Flux extension"))
