# export_model: a Knet model's parameters to <prefix>.npz plus a JSON description of its layers.
# The JSON schema is documented in julia/README.md ("Export format"); keep the two in step.

const EXPORT_FORMAT = "porting-knet-export"
# The newest version written: 2 adds the "rnn" kind. An export without an rnn layer is written as
# version 1, which is all it uses, so that readers of version 1 still read it.
const EXPORT_VERSION = 2
_export_version(layers) = any(l -> l["kind"] == "rnn", layers) ? EXPORT_VERSION : 1

# A Knet RNN (Knet.Ops20.RNN, src/ops20/rnn.jl) is recognised by these fields, like every layer.
const RNN_FIELDS = (:w, :h, :c, :inputSize, :hiddenSize, :numLayers, :dropout, :inputMode,
                    :direction, :mode)
const RNN_TYPES = ("relu", "tanh", "lstm", "gru")   # Knet's mode 0, 1, 2, 3

const ACTIVATIONS = Dict{Symbol,String}(
    :relu => "relu", :sigm => "sigm", :sigmoid => "sigm", :σ => "sigm", :tanh => "tanh",
    :elu => "elu", :softmax => "softmax", :identity => "identity",
)

const CONV_DEFAULTS = (padding=0, stride=1, dilation=1, mode=0)
const POOL_DEFAULTS = (window=2, padding=0, stride=nothing, mode=0)

"""
    export_model(prefix, model; conv=(;), pool=(;), softmax_dims=nothing) -> (npz = "<prefix>.npz", json = "<prefix>.json")

Write `model`'s parameters to `<prefix>.npz` (NPZ.jl: each array Fortran-ordered with Julia's
size, so `numpy.load` gives Julia-indexed arrays) and a description of its layers, in order, to
`<prefix>.json` (schema: README.md, "Export format"). A failed export writes neither file.

`model` may be
- a tutorial-style chain: any struct with a field `layers` (a tuple or vector), whose layers are
  structs with fields `w`, `b`, `f` (and optionally `p` or `pdrop`, the dropout probability):
  `ndims(w) == 2` is a dense layer `f.(w * mat(x) .+ b)`; `ndims(w)` 3, 4 or 5 is a conv layer
  `f.(pool(conv4(w, x) .+ b))`, as in Knet's tutorial `Conv`. `w` and `b` may be Knet `Param`s.
  Chains may nest; a chain may also hold the functions `mat`, `pool` and the activations.
- a vector of arrays alternating weight and bias, as in Knet's examples (`lenet.jl`, `mlp.jl`):
  conv layers compute `pool(relu.(conv4(w, x) .+ b))`, dense layers `relu.(w * mat(x) .+ b)`,
  and the last layer has no activation.
- a `Dict` of such arrays with keys `w1, b1, w2, b2, ...` (strings or symbols), read in
  numeric order, with the vector's conventions.

A Knet `RNN` (fields `w`, `h`, `c`, `inputSize`, `hiddenSize`, `numLayers`, `dropout`,
`inputMode`, `direction`, `mode`) is an `rnn` layer wherever a layer may be: an element of a
chain, or a field of a struct whose fields are its layers in the order it applies them (a struct
without `layers` that holds an RNN; a number field `p` or `pdrop` there is taken for the dropout
probability and skipped, and a bare array field is refused, since its use cannot be told from
the field). Its hyperparameters are written under Knet's keyword names, its packed weight
vector `r.w` as Knet stores it, and its states `r.h`, `r.c` as `"nothing"`, `"zero"` (Knet's `0`)
or `"array"` (the state array, written too). An export with an rnn layer is version 2.

Layers are recognized by their fields and shapes, never by type name. Conv keywords come from the
layer's own fields named `padding`, `stride`, `dilation`, `mode` when it has them, else from
`conv` (a NamedTuple applied to every conv layer), else Knet's defaults. Every conv layer pools
with `pool` (a NamedTuple of Knet `pool` keywords; default: Knet's, window 2) unless
`pool=nothing`, for models whose conv layers do not pool.

A bare `softmax` in a chain is refused, naming the layer: Knet's `softmax(x)` normalizes over the
whole array (batch included), which the per-sample description (`dims=1`) would not reproduce for
a batch of more than one (docs/knet.md#softmax). `softmax_dims=1` exports it as per-sample anyway.

```julia
julia> export_model("lenet", model)
(npz = "lenet.npz", json = "lenet.json")
```
"""
function export_model(prefix::AbstractString, model; conv=NamedTuple(), pool=NamedTuple(),
                      softmax_dims=nothing)
    base = replace(String(prefix), r"\.(npz|json)$" => "")
    npz_path, json_path = base * ".npz", base * ".json"
    for path in (npz_path, json_path)
        isdir(path) && throw(ArgumentError("export_model: $path is a directory; expected a file path prefix"))
    end
    conv isa NamedTuple ||
        throw(ArgumentError("export_model: conv=$(repr(conv)); expected a NamedTuple of conv4 keywords"))
    softmax_dims === nothing || softmax_dims == 1 ||
        throw(ArgumentError("export_model: softmax_dims=$(repr(softmax_dims)); expected nothing or 1"))
    opts = (conv=conv, pool=pool, softmax_dims=softmax_dims)
    layers = Dict{String,Any}[]
    _collect!(layers, model, opts)
    isempty(layers) && throw(ArgumentError("export_model: found no layers in $(typeof(model))"))

    arrays = Dict{String,Any}()
    for (i, layer) in enumerate(layers)
        name = "layer$i"
        layer["name"] = name
        params = Dict{String,Any}()
        for (pname, a) in pop!(layer, "arrays")
            key = "$name.$pname"
            arrays[key] = a
            params[pname] = Dict{String,Any}("key" => key, "size" => collect(size(a)),
                                             "eltype" => string(eltype(a)))
        end
        layer["params"] = params
    end
    knet = _loaded_module(KNET_ID)
    doc = Dict{String,Any}(
        "format" => EXPORT_FORMAT,
        "version" => _export_version(layers),
        "julia_version" => string(VERSION),
        "knet_version" => knet === nothing ? nothing : package_version(knet),
        "nnlib_version" => package_version(NNlib),
        "model_type" => string(nameof(typeof(model))),
        "npz" => basename(npz_path),
        "layers" => layers,
    )
    # Both files are written under temporary names first, then moved into place, the .json
    # last: a failed export leaves no partial file, and a .json always has its .npz.
    tmp_npz, tmp_json = npz_path * ".partial", json_path * ".partial"
    try
        NPZ.npzwrite(tmp_npz, arrays)
        write(tmp_json, JSON.json(doc, 2))
        mv(tmp_npz, npz_path; force=true)
        mv(tmp_json, json_path; force=true)
    finally
        rm(tmp_npz; force=true)
        rm(tmp_json; force=true)
    end
    return (npz=npz_path, json=json_path)
end

# ---- walking the model ---------------------------------------------------------------------

function _collect!(layers, m, opts)
    if m isa AbstractDict
        _dict_layers!(layers, m, opts)
    elseif m isa Union{Tuple,AbstractVector}
        if !isempty(m) && all(_is_arraylike, m)
            _array_layers!(layers, collect(m), opts, "vector")
        else
            foreach(l -> _collect!(layers, l, opts), m)
        end
    elseif _is_rnn(m)
        push!(layers, _rnn_layer(m, length(layers) + 1))
    elseif _is_param_layer(m)
        push!(layers, _param_layer(m, opts))
    elseif hasproperty(m, :layers)
        _collect!(layers, getproperty(m, :layers), opts)
    elseif _has_rnn_field(m)
        _field_layers!(layers, m, opts)
    elseif m isa Function
        push!(layers, _function_layer(m, layers, opts))
    elseif _dropout_prob(m) !== nothing && length(propertynames(m)) == 1
        push!(layers, _layer("dropout", string(nameof(typeof(m))); dropout=_dropout_prob(m)))
    else
        throw(ArgumentError("export_model: layer $(length(layers) + 1) is a $(typeof(m)), which is " *
                            "not a layer (fields w, b, f), a Knet RNN, a chain (field layers), an array list, " *
                            "a Dict of arrays, or one of the functions mat, pool, " *
                            join(sort!(unique(values(ACTIVATIONS))), ", ")))
    end
    return layers
end

_is_param_layer(m) = !(m isa AbstractArray) && all(s -> hasproperty(m, s), (:w, :b, :f))

function _is_arraylike(x)
    x isa AbstractArray && return true
    x isa Number && return true          # e.g. a scalar bias, `w = Any[randn(1,13), 0.0]`
    v = _value(x)
    return v isa AbstractArray || v isa Number
end

"""Unwrap a Knet/AutoGrad `Param` (its `value`), or return `x`."""
function _value(x)
    ag = _loaded_module(AUTOGRAD_ID)
    if ag !== nothing && isdefined(ag, :value)
        x = _call_latest(ag, :value, x)
    end
    if !(x isa AbstractArray || x isa Number) && hasproperty(x, :value)
        x = getproperty(x, :value)      # a Param when AutoGrad is not loaded
    end
    return x
end

function _array(x, what::AbstractString)
    v = _value(x)
    v isa Number && (v = fill(v))       # a 0-dimensional array
    v isa AbstractArray ||
        throw(ArgumentError("export_model: $what is a $(typeof(x)); expected an array or a Knet Param"))
    a = v isa Array ? v : Array(v)      # e.g. a KnetArray or CuArray, copied to the CPU
    isbitstype(eltype(a)) && eltype(a) <: Number ||
        throw(ArgumentError("export_model: $what has element type $(eltype(a)); expected numbers"))
    return a
end

function _activation_name(f, desc::AbstractString)
    name = f isa Function ? get(ACTIVATIONS, nameof(f), nothing) : nothing
    name === nothing &&
        throw(ArgumentError("export_model: $desc has activation $(repr(f)); expected one of the " *
                            "named functions relu, sigm, tanh, elu, softmax, identity"))
    return name
end

function _dropout_prob(m)
    for field in (:p, :pdrop)
        if hasproperty(m, field)
            p = getproperty(m, field)
            p isa Real && return Float64(p)
        end
    end
    return nothing
end

function _layer(kind, julia_type; arrays=Pair{String,Any}[], activation=nothing, conv=nothing,
                pool=nothing, order=nothing, dropout=nothing, dims=nothing)
    return Dict{String,Any}("kind" => kind, "julia_type" => julia_type, "arrays" => arrays,
                            "activation" => activation, "conv" => conv, "pool" => pool,
                            "order" => order, "dropout" => dropout, "dims" => dims)
end

function _check_keywords(what::AbstractString, kw::NamedTuple, defaults::NamedTuple)
    for k in keys(kw)
        k in keys(defaults) ||
            throw(ArgumentError("export_model: $what keyword $k; expected one of " *
                                join(keys(defaults), ", ")))
    end
end

function _conv_entry(nd::Int, sources::NamedTuple...)
    foreach(src -> _check_keywords("conv", src, CONV_DEFAULTS), sources)
    kw = merge(CONV_DEFAULTS, sources...)
    kw.mode in (0, 1) || throw(ArgumentError("export_model: conv mode=$(repr(kw.mode)); expected 0 or 1"))
    return Dict{String,Any}("padding" => collect(_spatial(kw.padding, nd, :padding)),
                            "stride" => collect(_spatial(kw.stride, nd, :stride)),
                            "dilation" => collect(_spatial(kw.dilation, nd, :dilation)),
                            "mode" => Int(kw.mode))
end

function _pool_entry(nd::Int, pool)
    pool === nothing && return nothing
    pool isa NamedTuple ||
        throw(ArgumentError("export_model: pool=$(repr(pool)); expected a NamedTuple of pool keywords or nothing"))
    _check_keywords("pool", pool, POOL_DEFAULTS)
    kw = merge(POOL_DEFAULTS, pool)
    kw.mode in 0:3 || throw(ArgumentError("export_model: pool mode=$(repr(kw.mode)); expected 0 to 3"))
    window = _spatial(kw.window, nd, :window)
    stride = kw.stride === nothing ? window : _spatial(kw.stride, nd, :stride)
    return Dict{String,Any}("window" => collect(window),
                            "padding" => collect(_spatial(kw.padding, nd, :padding)),
                            "stride" => collect(stride), "mode" => Int(kw.mode))
end

function _wb_layer(w, b, activation, dropout, opts, own_conv, order, julia_type)
    if ndims(w) == 2
        return _layer("dense", julia_type; arrays=Pair{String,Any}["w" => w, "b" => b],
                      activation=activation, dropout=dropout)
    elseif 3 <= ndims(w) <= 5
        nd = ndims(w) - 2
        return _layer("conv", julia_type; arrays=Pair{String,Any}["w" => w, "b" => b],
                      activation=activation, dropout=dropout,
                      conv=_conv_entry(nd, opts.conv, own_conv), pool=_pool_entry(nd, opts.pool),
                      order=order)
    end
    throw(ArgumentError("export_model: a weight of size $(size(w)) is neither dense (2 dimensions) " *
                        "nor conv (3, 4 or 5 dimensions)"))
end

function _param_layer(l, opts)
    tname = string(nameof(typeof(l)))
    desc = "a $tname layer"
    w, b = _array(getproperty(l, :w), "$desc's w"), _array(getproperty(l, :b), "$desc's b")
    own = NamedTuple(s => getproperty(l, s) for s in keys(CONV_DEFAULTS) if hasproperty(l, s))
    # The tutorial's Conv computes f.(pool(conv4(w, x) .+ b)): pooling before the activation.
    return _wb_layer(w, b, _activation_name(getproperty(l, :f), desc), _dropout_prob(l), opts,
                     own, "pool-activation", tname)
end

function _array_layers!(layers, ws::AbstractVector, opts, julia_type)
    isodd(length(ws)) &&
        throw(ArgumentError("export_model: a list of arrays must alternate weight and bias " *
                            "(w1, b1, w2, b2, ...); got $(length(ws)) arrays"))
    n = length(ws) ÷ 2
    for i in 1:n
        w, b = _array(ws[2i-1], "array $(2i-1)"), _array(ws[2i], "array $(2i)")
        # Knet's lenet.jl computes pool(relu.(conv4(w, x) .+ b)): pooling after the activation
        # (docs/knet.md#examples).
        push!(layers, _wb_layer(w, b, i == n ? "identity" : "relu", nothing, opts, NamedTuple(),
                                "activation-pool", julia_type))
    end
    return layers
end

function _dict_layers!(layers, d::AbstractDict, opts)
    groups = Dict{Int,Dict{Char,Any}}()
    for (k, v) in d
        m = match(r"^([wb])(\d+)$", string(k))
        m === nothing &&
            throw(ArgumentError("export_model: Dict key $(repr(k)) is not of the form w1, b1, w2, b2, ... " *
                                "(keys: $(join(sort!(string.(collect(keys(d)))), ", ")))"))
        get!(groups, parse(Int, m.captures[2]), Dict{Char,Any}())[m.captures[1][1]] = v
    end
    ws = Any[]
    for i in sort!(collect(keys(groups)))
        g = groups[i]
        (haskey(g, 'w') && haskey(g, 'b')) ||
            throw(ArgumentError("export_model: Dict has $(haskey(g, 'w') ? "w$i but no b$i" : "b$i but no w$i")"))
        push!(ws, g['w'], g['b'])
    end
    return _array_layers!(layers, ws, opts, "dict")
end

function _function_layer(f::Function, layers, opts)
    name = nameof(f)
    name === :mat && return _layer("mat", "function")
    index = length(layers) + 1
    # dims: the dimension softmax normalizes over. Knet's bare `softmax(x)` uses dims=:, the whole
    # array with the batch included, which no per-sample Keras layer computes: recording dims=1
    # would describe another function, so it is refused unless the caller says per sample
    # (docs/knet.md#softmax).
    if name === :softmax && opts.softmax_dims === nothing
        throw(ArgumentError("export_model: layer $index is Knet's bare `softmax`, which normalizes " *
                            "over the whole array (dims=:, the batch included); the exported " *
                            "description would be per sample (dims=1) and would not match it " *
                            "for a batch of more than one. Pass `softmax_dims=1` to export it " *
                            "as a per-sample softmax, knowing the two differ"))
    end
    haskey(ACTIVATIONS, name) &&
        return _layer("activation", "function"; activation=ACTIVATIONS[name], dims=1)
    if name === :pool
        # Knet's pool with its defaults; the number of spatial dimensions is the last conv's.
        last_conv = findlast(l -> l["kind"] == "conv", layers)
        last_conv === nothing &&
            throw(ArgumentError("export_model: layer $index is the function pool but no conv layer " *
                                "precedes it, so its number of spatial dimensions is unknown"))
        nd = length(layers[last_conv]["conv"]["padding"])
        return _layer("pool", "function"; pool=_pool_entry(nd, NamedTuple()))
    end
    throw(ArgumentError("export_model: layer $index is the function $name; expected mat, pool or " *
                        "one of relu, sigm, tanh, elu, softmax, identity"))
end

# ---- Knet RNN -------------------------------------------------------------------------------

_is_rnn(m) = !(m isa AbstractArray || m isa Number || m isa AbstractDict || m isa Function) &&
             all(s -> hasproperty(m, s), RNN_FIELDS)

_has_rnn_field(m) = !(m isa AbstractArray || m isa Number || m isa AbstractDict || m isa Function) &&
                    any(f -> _is_rnn(getproperty(m, f)), propertynames(m))

"""A struct holding an RNN among its fields (not a chain): its fields are its layers, in order."""
function _field_layers!(layers, m, opts)
    tname = string(nameof(typeof(m)))
    for f in propertynames(m)
        v = getproperty(m, f)
        if f in (:p, :pdrop) && v isa Real
            continue    # the model's dropout probability: nothing to compute at inference
        elseif _is_arraylike(v)
            u = _value(v)
            what = u isa AbstractArray ? "a bare array of size $(size(u))" : "the number $(repr(u))"
            throw(ArgumentError("export_model: field $f of $tname holds $what next to " *
                                "a Knet RNN; export_model cannot tell from a field how the model " *
                                "applies it (an embedding w[:, x], a product w * x, ...): give it " *
                                "a layer struct of its own (fields w, b, f) or export a chain"))
        end
        _collect!(layers, v, opts)
    end
    return layers
end

"""Knet's getRNNParamsSize: the length of the packed weight vector."""
function _rnn_params_size(X, H, L, mode, direction, inputMode)
    gates = (1, 1, 4, 3)[mode+1] * (1 + direction)
    winput = inputMode == 1 ? 0 : H * X
    n = 0
    for _ in 1:L
        n += gates * (H * H + winput + 2H)
        winput = (1 + direction) * H * H
    end
    return n
end

function _rnn_int(r, field, desc, valid)
    v = getproperty(r, field)
    (v isa Integer && Int(v) in valid) ||
        throw(ArgumentError("export_model: $desc has $field=$(repr(v)); expected an integer in $valid"))
    return Int(v)
end

"""`nothing`, `0` or a state array (possibly a Param, a KnetArray) -> (policy, array or nothing)."""
function _rnn_state(s, desc, name, H, slots, T)
    s === nothing && return ("nothing", nothing)
    s isa Number && iszero(s) && return ("zero", nothing)
    s isa Number &&
        throw(ArgumentError("export_model: $desc has $name=$(repr(s)); expected nothing, 0 or a state array"))
    a = _array(s, "$desc's $name")
    sz = size(a)
    (ndims(a) <= 3 && size(a, 1) == H && size(a, 3) == slots && size(a, 2) >= 1) ||
        throw(ArgumentError("export_model: $desc has $name of size $sz; expected (H, B, L or 2L) = ($H, B, $slots)"))
    eltype(a) == T ||
        throw(ArgumentError("export_model: $desc has $name of element type $(eltype(a)) but w is $T"))
    return ("array", a)
end

function _rnn_layer(r, index)
    desc = "layer $index (a Knet RNN, $(nameof(typeof(r))))"
    mode = _rnn_int(r, :mode, desc, 0:3)
    direction = _rnn_int(r, :direction, desc, 0:1)
    inputMode = _rnn_int(r, :inputMode, desc, 0:1)
    X, H, L = (_rnn_int(r, f, desc, 1:typemax(Int32)) for f in (:inputSize, :hiddenSize, :numLayers))
    p = getproperty(r, :dropout)
    (p isa Real && 0 <= p < 1) ||
        throw(ArgumentError("export_model: $desc has dropout=$(repr(p)); expected a number in [0, 1)"))
    w = _array(getproperty(r, :w), "$desc's w")
    eltype(w) in (Float32, Float64) ||
        throw(ArgumentError("export_model: $desc has weights of element type $(eltype(w)); expected Float32 or Float64"))
    n = _rnn_params_size(X, H, L, mode, direction, inputMode)
    length(w) == n ||
        throw(ArgumentError("export_model: $desc has a weight vector w of length $(length(w)); expected $n " *
                            "for $(RNN_TYPES[mode+1]) inputSize=$X hiddenSize=$H numLayers=$L " *
                            "bidirectional=$(direction == 1) skipInput=$(inputMode == 1)"))
    slots = L * (1 + direction)
    hpolicy, h = _rnn_state(getproperty(r, :h), desc, "h", H, slots, eltype(w))
    cpolicy, c = _rnn_state(getproperty(r, :c), desc, "c", H, slots, eltype(w))
    arrays = Pair{String,Any}["w" => w]
    h === nothing || push!(arrays, "h" => h)
    c === nothing || push!(arrays, "c" => c)
    layer = _layer("rnn", string(nameof(typeof(r))); arrays=arrays)
    layer["rnn"] = Dict{String,Any}(
        "inputSize" => X, "hiddenSize" => H, "rnnType" => RNN_TYPES[mode+1], "numLayers" => L,
        "bidirectional" => direction == 1, "skipInput" => inputMode == 1, "dropout" => Float64(p),
        "h" => hpolicy, "c" => cpolicy,
    )
    return layer
end
