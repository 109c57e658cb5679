# export_model: a Knet model's parameters to <prefix>.npz plus a JSON description of its layers.
# The JSON schema is documented in julia/README.md ("Export format"); keep the two in step.

const EXPORT_FORMAT = "porting-knet-export"
# The newest version written. Version 2 adds the kinds rnn, batchnorm, deconv, zeropad, embed,
# add and concat, the graph key "input" (the layer a layer reads), relu's keywords and the conv
# keyword "groups" (README.md, "Export format"). An export that uses none of them is written as
# version 1, which is all it uses, so that readers of version 1 still read it.
const EXPORT_VERSION = 2
const V2_KINDS = ("rnn", "batchnorm", "deconv", "zeropad", "embed", "add", "concat", "reshape")
const RELU_KEYWORDS = ("max_value", "negative_slope", "threshold")
function _uses_v2(l)
    l["kind"] in V2_KINDS && return true
    haskey(l, "input") && return true
    any(k -> haskey(l, k), RELU_KEYWORDS) && return true
    c = get(l, "conv", nothing)
    return c isa AbstractDict && haskey(c, "groups")
end
_export_version(layers) = any(_uses_v2, layers) ? EXPORT_VERSION : 1

# A Knet RNN (Knet.Ops20.RNN, src/ops20/rnn.jl) is recognised by these fields, like every layer.
const RNN_FIELDS = (:w, :h, :c, :inputSize, :hiddenSize, :numLayers, :dropout, :inputMode,
                    :direction, :mode)
const RNN_TYPES = ("relu", "tanh", "lstm", "gru")   # Knet's mode 0, 1, 2, 3

const ACTIVATIONS = Dict{Symbol,String}(
    :relu => "relu", :sigm => "sigm", :sigmoid => "sigm", :σ => "sigm", :tanh => "tanh",
    :elu => "elu", :softmax => "softmax", :identity => "identity",
    # Ops21's activations (src/ops21/activation.jl), as the Python layer table names them
    :tanh_ => "tanh", :selu => "selu", :gelu => "gelu", :swish => "swish",
    :hardsigmoid => "hardsigmoid", :hardswish => "hardswish",
)
const ACTIVATION_LIST = "relu, sigm, tanh, elu, selu, gelu, swish, hardsigmoid, hardswish, softmax, identity"

const CONV_DEFAULTS = (padding=0, stride=1, dilation=1, mode=0)
const POOL_DEFAULTS = (window=2, padding=0, stride=nothing, mode=0)

"""
    export_model(prefix, model; conv=(;), pool=(;), softmax_dims=nothing, structure=nothing) -> (npz = "<prefix>.npz", json = "<prefix>.json")

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

Batch normalisation, deconvolutions, Knet's Layers21 types (`Conv`, `Linear`, `BatchNorm`,
`Block`, `Add`, `Op`, `ZeroPad`, `Embed`) and residual graphs are recognised too (README.md,
"Exporting a model", items 5-7). A functional model whose weights live in vectors (Knet's
`predict(w, m, x)`) is exported with `structure`: the path of a JSON structure file (or its
parsed `Dict`) naming, for each layer, the paths of its weights in `model`, e.g. `"w/3"`,
`"m/1/mean"` (README.md, "Structure files").

Layers are recognized by their fields and shapes, never by type name (except an embedding: a
struct named `Embed` whose only field is `w`). Conv keywords come from the
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
                      softmax_dims=nothing, structure=nothing)
    base = replace(String(prefix), r"\.(npz|json)$" => "")
    npz_path, json_path = base * ".npz", base * ".json"
    for path in (npz_path, json_path)
        isdir(path) && throw(ArgumentError("export_model: $path is a directory; expected a file path prefix"))
    end
    conv isa NamedTuple ||
        throw(ArgumentError("export_model: conv=$(repr(conv)); expected a NamedTuple of conv4 keywords"))
    softmax_dims === nothing || softmax_dims == 1 ||
        throw(ArgumentError("export_model: softmax_dims=$(repr(softmax_dims)); expected nothing or 1"))
    opts = (conv=conv, pool=pool, softmax_dims=softmax_dims, src=Ref{Any}(nothing))
    layers = Dict{String,Any}[]
    version = 1
    if structure === nothing
        _collect!(layers, model, opts)
    else
        version = _structure_layers!(layers, model, structure)
    end
    isempty(layers) && throw(ArgumentError("export_model: found no layers in $(typeof(model))"))
    _check_graph(layers)

    arrays = Dict{String,Any}()
    for (i, layer) in enumerate(layers)
        name = get!(layer, "name", "layer$i")
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
        "version" => max(version, _export_version(layers)),
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
    elseif m === identity
        return layers       # an identity branch of an Add, or a no-op in a chain
    elseif _is_rnn(m)
        _push!(layers, _rnn_layer(m, length(layers) + 1), opts)
    elseif _is_l21_conv(m)
        _l21_conv!(layers, m, opts)
    elseif _is_l21_linear(m)
        _l21_linear!(layers, m, opts)
    elseif _is_l21_batchnorm(m)
        _push!(layers, _l21_batchnorm(m, length(layers) + 1), opts)
    elseif _is_l21_add(m)
        _add!(layers, m, opts)
    elseif _is_l21_op(m)
        _push!(layers, _op_layer(m, layers), opts)
    elseif _is_l21_zeropad(m)
        _push!(layers, _zeropad_layer(getproperty(m, :padding), "ZeroPad", length(layers) + 1), opts)
    elseif _is_embed(m)
        _push!(layers, _layer("embed", string(nameof(typeof(m)));
                              arrays=Pair{String,Any}["w" => _embed_weight(m, length(layers) + 1)]), opts)
    elseif _is_bnmoments(m)
        throw(ArgumentError("export_model: layer $(length(layers) + 1) is a bare BNMoments; put the " *
                            "moments in a layer struct with the weight they normalise (fields w, f, " *
                            "m and bnparams) or describe the model with a structure file"))
    elseif _is_param_layer(m) || _is_bn_layer(m)
        _param_layer!(layers, m, opts)
    elseif hasproperty(m, :layers)
        _collect!(layers, getproperty(m, :layers), opts)
    elseif _has_rnn_field(m)
        _field_layers!(layers, m, opts)
    elseif m isa Function
        _push!(layers, _function_layer(m, layers, opts), opts)
    elseif _dropout_prob(m) !== nothing && length(propertynames(m)) == 1
        _push!(layers, _layer("dropout", string(nameof(typeof(m))); dropout=_dropout_prob(m)), opts)
    else
        throw(ArgumentError("export_model: layer $(length(layers) + 1) is a $(typeof(m)), which is " *
                            "not a layer (fields w, b, f), a Knet RNN, a Layers21 layer (Conv, Linear, BatchNorm, " *
                            "Add, Block, Op, ZeroPad, Embed), a chain (field layers), an array list, " *
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
                            "named functions $ACTIVATION_LIST"))
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

_wb_arrays(w, b) = b === nothing ? Pair{String,Any}["w" => w] : Pair{String,Any}["w" => w, "b" => b]

function _wb_layer(w, b, activation, dropout, opts, own_conv, order, julia_type; pool=opts.pool)
    if ndims(w) == 2
        return _layer("dense", julia_type; arrays=_wb_arrays(w, b), activation=activation,
                      dropout=dropout)
    elseif 3 <= ndims(w) <= 5
        nd = ndims(w) - 2
        return _layer("conv", julia_type; arrays=_wb_arrays(w, b), activation=activation,
                      dropout=dropout, conv=_conv_entry(nd, opts.conv, own_conv),
                      pool=_pool_entry(nd, pool), order=order)
    end
    throw(ArgumentError("export_model: a weight of size $(size(w)) is neither dense (2 dimensions) " *
                        "nor conv (3, 4 or 5 dimensions)"))
end

"""The field of `l` holding Ops20 batchnorm moments (`bnmoments()`), or `nothing`."""
function _moments_field(l)
    for f in (:m, :moments, :bnmoments)
        hasproperty(l, f) && _is_bnmoments(getproperty(l, f)) && return f
    end
    return nothing
end

# A tutorial layer with batch normalisation: fields w, f, a moments field (m, moments or
# bnmoments) and optionally b and the bnparams vector (bnparams, bn or g).
_is_bn_layer(m) = !(m isa AbstractArray || m isa Number || m isa Function) &&
                  hasproperty(m, :w) && hasproperty(m, :f) && _moments_field(m) !== nothing

_is_deconv_op(l) = hasproperty(l, :op) && getproperty(l, :op) isa Function &&
                   nameof(getproperty(l, :op)) === :deconv4

function _param_layer!(layers, l, opts)
    tname = string(nameof(typeof(l)))
    desc = "a $tname layer"
    w = _array(getproperty(l, :w), "$desc's w")
    braw = hasproperty(l, :b) ? getproperty(l, :b) : nothing
    b = braw === nothing ? nothing : _array(braw, "$desc's b")
    act = _activation_name(getproperty(l, :f), desc)
    own = NamedTuple(s => getproperty(l, s) for s in keys(CONV_DEFAULTS) if hasproperty(l, s))
    mfield = _moments_field(l)
    if _is_deconv_op(l)
        # f.(deconv4(w, x; ...) .+ b), or with moments f.(batchnorm(deconv4(w, x) .+ b, m, p))
        3 <= ndims(w) <= 5 ||
            throw(ArgumentError("export_model: $desc has op=deconv4 but w of size $(size(w)); expected 3-5 dimensions"))
        layer = _layer("deconv", tname; arrays=_wb_arrays(w, b),
                       activation=mfield === nothing ? act : "identity", dropout=_dropout_prob(l))
        layer["deconv"] = _conv_entry(ndims(w) - 2, opts.conv, own)
        _push!(layers, layer, opts)
        mfield === nothing && return layers
        _push!(layers, _bn_from_moments(l, mfield, desc), opts)
        act == "identity" || _push!(layers, _layer("activation", tname; activation=act, dims=1), opts)
        return layers
    end
    if mfield === nothing
        b === nothing && throw(ArgumentError("export_model: $desc has no field b; expected w, b, f"))
        # The tutorial's Conv computes f.(pool(conv4(w, x) .+ b)): pooling before the activation.
        return _push!(layers, _wb_layer(w, b, act, _dropout_prob(l), opts, own, "pool-activation", tname), opts)
    end
    # With batchnorm, as Knet's cifar10-cnn conv_layer / lin_layer compute it:
    # pool(f.(batchnorm(conv4(w, x) .+ b, m, bnparams))) (no pool for a dense weight).
    _push!(layers, _wb_layer(w, b, "identity", _dropout_prob(l), opts, own, nothing, tname; pool=nothing), opts)
    _push!(layers, _bn_from_moments(l, mfield, desc), opts)
    act == "identity" || _push!(layers, _layer("activation", tname; activation=act, dims=1), opts)
    if ndims(w) >= 3 && opts.pool !== nothing
        _push!(layers, _layer("pool", tname; pool=_pool_entry(ndims(w) - 2, opts.pool)), opts)
    end
    return layers
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
        _push!(layers, _wb_layer(w, b, i == n ? "identity" : "relu", nothing, opts, NamedTuple(),
                                 "activation-pool", julia_type), opts)
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
                        "one of $ACTIVATION_LIST"))
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

# ---- graph bookkeeping ----------------------------------------------------------------------

"""Append `layer`, named by its position, reading `opts.src[]` when a branch set one."""
function _push!(layers, layer, opts)
    haskey(layer, "name") || (layer["name"] = "layer$(length(layers) + 1)")
    src = opts.src[]
    if src !== nothing
        opts.src[] = nothing
        default = isempty(layers) ? "input" : layers[end]["name"]
        src == default || (layer["input"] = src)
    end
    push!(layers, layer)
    return layers
end

"""The name of what the next layer reads: a branch's source, or the last layer (or "input")."""
_current(layers, opts) = opts.src[] !== nothing ? opts.src[] :
                         isempty(layers) ? "input" : layers[end]["name"]

"""Every "input" / "inputs" names an earlier layer or "input"; names are unique."""
function _check_graph(layers)
    seen = Set{String}(["input"])
    for (i, l) in enumerate(layers)
        name = get(l, "name", "layer$i")
        name isa AbstractString ||
            throw(ArgumentError("export_model: layer $i has name $(repr(name)); expected a string"))
        refs = Any[]
        haskey(l, "input") && push!(refs, l["input"])
        haskey(l, "inputs") && append!(refs, l["inputs"] isa AbstractVector ? l["inputs"] : Any[l["inputs"]])
        for r in refs
            (r isa AbstractString && r in seen) ||
                throw(ArgumentError("export_model: layer $i ($name) reads $(repr(r)), which is not " *
                                    "an earlier layer's name or \"input\""))
        end
        name in seen && throw(ArgumentError("export_model: layer $i's name $(repr(name)) is used twice"))
        push!(seen, name)
    end
end

# ---- batch normalisation --------------------------------------------------------------------

# Knet.Ops20.BNMoments (src/ops20/batchnorm.jl): momentum, mean, var, meaninit, varinit.
_is_bnmoments(m) = !(m isa AbstractArray || m isa Number || m isa Function || m isa AbstractDict) &&
                   all(s -> hasproperty(m, s), (:momentum, :mean, :var, :meaninit, :varinit))

function _bn_layer(mean, var, bnparams, eps, momentum, julia_type, desc)
    C = length(mean)
    length(var) == C ||
        throw(ArgumentError("export_model: $desc has var of size $(size(var)) but mean of size $(size(mean)); expected one value per channel each"))
    if bnparams !== nothing
        length(bnparams) == 2C ||
            throw(ArgumentError("export_model: $desc has a bnparams vector of length $(length(bnparams)); " *
                                "expected bnparams(C): 2C = $(2C) values, scale first, then bias"))
    end
    types = unique(map(eltype, bnparams === nothing ? (mean, var) : (mean, var, bnparams)))
    length(types) == 1 ||
        throw(ArgumentError("export_model: $desc mixes element types $(join(types, ", ")) in mean, " *
                            "var and params; expected one (the model's Float32 or Float64)"))
    (eps isa Real && eps > 0) ||
        throw(ArgumentError("export_model: $desc has eps=$(repr(eps)); expected a positive number"))
    (momentum isa Real && 0 <= momentum <= 1) ||
        throw(ArgumentError("export_model: $desc has momentum=$(repr(momentum)); expected a number in [0, 1]"))
    arrays = Pair{String,Any}["mean" => mean, "var" => var]
    bnparams === nothing || push!(arrays, "bnparams" => bnparams)
    layer = _layer("batchnorm", julia_type; arrays=arrays)
    layer["eps"] = Float64(eps)
    layer["momentum"] = Float64(momentum)
    return layer
end

"""Ops20 `batchnorm(x, l.m, l.bnparams)` at inference: the running statistics of `bnmoments`."""
function _bn_from_moments(l, mfield, desc)
    m = getproperty(l, mfield)
    (getproperty(m, :mean) === nothing || getproperty(m, :var) === nothing) &&
        throw(ArgumentError("export_model: $desc's moments ($mfield) hold no running statistics " *
                            "(mean/var are nothing: bnmoments fills them on the first call in " *
                            "training); train or run the model first"))
    mean = _array(getproperty(m, :mean), "$desc's $mfield.mean")
    var = _array(getproperty(m, :var), "$desc's $mfield.var")
    params = nothing                    # no params field, or nothing: non-affine
    for f in (:bnparams, :bn, :g)
        hasproperty(l, f) || continue
        raw = getproperty(l, f)
        raw === nothing || (params = vec(_array(raw, "$desc's $f")))
        break
    end
    eps = hasproperty(l, :eps) ? getproperty(l, :eps) : 1e-5
    return _bn_layer(mean, var, params, eps, getproperty(m, :momentum), "BNMoments", desc)
end

# ---- Layers21 (Knet.Layers21, src/layers21/*.jl in Knet 1.4.10) ---------------------------

_is_struct(m) = !(m isa AbstractArray || m isa Number || m isa Function || m isa AbstractDict ||
                  m isa Tuple || m isa NamedTuple || m isa AbstractString || m === nothing)
_has_all(m, fields) = _is_struct(m) && all(s -> hasproperty(m, s), fields)

_is_l21_conv(m) = _has_all(m, (:w, :bias, :padding, :stride, :dilation, :groups,
                               :crosscorrelation, :channelmajor, :activation, :normalization, :alpha))
_is_l21_linear(m) = _has_all(m, (:w, :bias, :inputsize, :outputsize, :activation, :dropout))
_is_l21_batchnorm(m) = _has_all(m, (:mean, :var, :bias, :scale, :use_estimates, :update, :epsilon))
_is_l21_add(m) = _has_all(m, (:blocks, :activation))
_is_l21_op(m) = _has_all(m, (:f, :args, :kwargs)) && getproperty(m, :f) isa Function
_is_l21_zeropad(m) = _has_all(m, (:padding, :xsize, :y))
# An embedding holds only its weight, so its fields cannot tell it from another one-weight
# layer: a one-field struct (w,) is an embedding when named Embed, as Knet's tutorial and
# Layers21 name it; any other such struct is refused by the walker.
_is_embed(m) = _is_struct(m) && propertynames(m) == (:w,) && nameof(typeof(m)) === :Embed

function _embed_weight(m, index)
    w = _array(getproperty(m, :w), "layer $index (Embed)'s w")
    ndims(w) == 2 ||
        throw(ArgumentError("export_model: layer $index (Embed) has w of size $(size(w)); expected (dim, vocab)"))
    return w
end

"""An activation field (`nothing`, a named function, or `Op(relu; negative_slope=...)`) ->
(name, relu keywords)."""
function _activation_of(f, desc)
    f === nothing && return ("identity", Dict{String,Any}())
    if _is_l21_op(f)
        layer = _op_layer(f, Dict{String,Any}[]; desc=desc)
        layer["kind"] == "activation" && layer["activation"] != "softmax" ||
            throw(ArgumentError("export_model: $desc has activation $(repr(f)); expected an element-wise activation"))
        return (layer["activation"], Dict{String,Any}(k => layer[k] for k in RELU_KEYWORDS if haskey(layer, k)))
    end
    name = _activation_name(f, desc)
    name == "softmax" &&
        throw(ArgumentError("export_model: $desc has activation softmax, which Knet applies over the " *
                            "whole array; use a separate Op(softmax; dims=1) layer"))
    return (name, Dict{String,Any}())
end

function _activation_layer!(layers, name, kw, julia_type, opts)
    name == "identity" && isempty(kw) && return layers
    layer = _layer("activation", julia_type; activation=name, dims=1)
    merge!(layer, kw)
    return _push!(layers, layer, opts)
end

function _is_pairs(p)
    (p isa Tuple || p isa AbstractVector) && !isempty(p) &&
        all(q -> (q isa Tuple || q isa AbstractVector) && length(q) == 2 && all(v -> v isa Integer, q), p)
end

function _zeropad_layer(p, julia_type, index)
    if p isa Integer && !(p isa Bool) && p >= 0
        padding = Int(p)
    elseif _is_pairs(p)
        padding = [Int[q[1], q[2]] for q in p]
        all(q -> all(>=(0), q), padding) ||
            throw(ArgumentError("export_model: layer $index pads by $(repr(p)); expected non-negative sizes"))
    elseif (p isa Tuple || p isa AbstractVector) && all(v -> v isa Integer && v >= 0, p)
        padding = Int[v for v in p]
    else
        throw(ArgumentError("export_model: layer $index has padding=$(repr(p)); expected an integer, " *
                            "one per spatial dimension, or ((lo, hi), ...) per spatial dimension"))
    end
    layer = _layer("zeropad", julia_type)
    layer["padding"] = padding
    return layer
end

"""Layers21 `Conv`: `activation(normalization(alpha * conv(w, x) .+ bias))`, crosscorrelation
read from the layer (its default is true, conv4's is false), asymmetric padding as a ZeroPad."""
function _l21_conv!(layers, c, opts)
    index = length(layers) + 1
    desc = "layer $index (a Layers21 Conv)"
    getproperty(c, :channelmajor) === true &&
        throw(ArgumentError("export_model: $desc has channelmajor=true; expected Knet's default (X..., C, N) layout"))
    getproperty(c, :w) === nothing &&
        throw(ArgumentError("export_model: $desc has no weights yet (w === nothing: Conv(dims...) " *
                            "creates them on the first call); run the model once first"))
    w = _array(getproperty(c, :w), "$desc's w")
    3 <= ndims(w) <= 5 ||
        throw(ArgumentError("export_model: $desc has w of size $(size(w)); expected 3-5 dimensions"))
    nd = ndims(w) - 2
    b = getproperty(c, :bias) === nothing ? nothing : _array(getproperty(c, :bias), "$desc's bias")
    groups = getproperty(c, :groups)
    (groups isa Integer && groups >= 1) ||
        throw(ArgumentError("export_model: $desc has groups=$(repr(groups)); expected a positive integer"))
    pad = getproperty(c, :padding)
    if _is_pairs(pad)
        if all(q -> q[1] == q[2], pad)
            pad = Tuple(Int(q[1]) for q in pad)
        else   # Knet zero-pads first (Ops21.zeropad), then convolves without padding
            _push!(layers, _zeropad_layer(pad, "Conv", index), opts)
            pad = 0
        end
    end
    mode = getproperty(c, :crosscorrelation) ? 1 : 0
    conv = _conv_entry(nd, (padding=pad, stride=getproperty(c, :stride),
                            dilation=getproperty(c, :dilation), mode=mode))
    alpha = getproperty(c, :alpha)
    alpha == 1 || (conv["alpha"] = Float64(alpha))
    groups == 1 || (conv["groups"] = Int(groups))
    actname, actkw = _activation_of(getproperty(c, :activation), desc)
    norm = getproperty(c, :normalization)
    plain = norm === nothing || norm === identity
    layer = _layer("conv", "Conv"; arrays=_wb_arrays(w, b),
                   activation=plain && isempty(actkw) ? actname : "identity", conv=conv)
    _push!(layers, layer, opts)
    if !plain
        _is_l21_batchnorm(norm) ||
            throw(ArgumentError("export_model: $desc has normalization=$(typeof(norm)); expected a Layers21 BatchNorm"))
        _push!(layers, _l21_batchnorm(norm, length(layers) + 1), opts)
    end
    (!plain || !isempty(actkw)) && _activation_layer!(layers, actname, actkw, "Conv", opts)
    return layers
end

"""Layers21 `Linear`: `activation(linear(w, dropout(x)) .+ bias)`, no bias unless one is given.
Ops21 `linear` contracts `w`'s last dimension with the input's first and does not flatten, so it
is written as kind "linear" (the Python side refuses an input of more than one dimension per
sample instead of flattening it as "dense" would)."""
function _l21_linear!(layers, l, opts)
    index = length(layers) + 1
    desc = "layer $index (a Layers21 Linear)"
    getproperty(l, :w) === nothing &&
        throw(ArgumentError("export_model: $desc has no weights yet (w === nothing); run the model once first"))
    w = _array(getproperty(l, :w), "$desc's w")
    ndims(w) == 2 ||
        throw(ArgumentError("export_model: $desc has w of size $(size(w)); expected a matrix (outputsize and inputsize of one dimension each)"))
    b = getproperty(l, :bias) === nothing ? nothing : _array(getproperty(l, :bias), "$desc's bias")
    actname, actkw = _activation_of(getproperty(l, :activation), desc)
    p = getproperty(l, :dropout)
    arrays = b === nothing ? Pair{String,Any}["w" => w] : Pair{String,Any}["w" => w, "bias" => b]
    layer = _layer("linear", "Linear"; arrays=arrays,
                   activation=isempty(actkw) ? actname : "identity", dropout=p isa Real ? Float64(p) : nothing)
    _push!(layers, layer, opts)
    isempty(actkw) || _activation_layer!(layers, actname, actkw, "Linear", opts)
    return layers
end

"""Layers21 `BatchNorm` (per channel): mean, var and the packed [scale; bias] params."""
function _l21_batchnorm(b, index)
    desc = "layer $index (a Layers21 BatchNorm)"
    dims = getproperty(b, :dims)
    if dims !== nothing
        d = Tuple(dims)
        n = length(d) + 1
        d == (ntuple(identity, n - 2)..., n) ||
            throw(ArgumentError("export_model: $desc has dims=$(repr(dims)); expected nothing or " *
                                "(1, ..., N-2, N), per channel (per-activation and channel-major " *
                                "normalisation are not in the layer table)"))
    end
    getproperty(b, :use_estimates) === false &&
        throw(ArgumentError("export_model: $desc has use_estimates=false: it always normalises with " *
                            "the batch's own statistics, which a per-sample model cannot reproduce"))
    for f in (:mean, :var, :scale, :bias)
        getproperty(b, f) === nothing &&
            throw(ArgumentError("export_model: $desc has $f === nothing (BatchNorm fills it on the " *
                                "first call); run the model once first"))
    end
    mean = _array(getproperty(b, :mean), "$desc's mean")
    var = _array(getproperty(b, :var), "$desc's var")
    scale = _array(getproperty(b, :scale), "$desc's scale")
    bias = _array(getproperty(b, :bias), "$desc's bias")
    eltype(scale) == eltype(bias) ||
        throw(ArgumentError("export_model: $desc has scale of $(eltype(scale)) and bias of $(eltype(bias))"))
    # Ops21's batchnorm takes bias before scale; the export packs Ops20's bnparams: scale first.
    params = vcat(vec(scale), vec(bias))
    return _bn_layer(mean, var, params, getproperty(b, :epsilon), getproperty(b, :update), "BatchNorm", desc)
end

"""Layers21 `Add(blocks...; activation)`: every block gets the same input, the outputs are
summed, then the activation. Each block's layers are exported in turn, the first reading the
Add's input; an `identity` block is the input itself."""
function _add!(layers, a, opts)
    src = _current(layers, opts)
    opts.src[] = nothing
    outs = String[]
    for blk in getproperty(a, :blocks)
        n0 = length(layers)
        opts.src[] = src
        _collect!(layers, blk, opts)
        opts.src[] = nothing
        push!(outs, length(layers) == n0 ? src : layers[end]["name"])
    end
    length(outs) >= 2 ||
        throw(ArgumentError("export_model: layer $(length(layers) + 1) is an Add of $(length(outs)) block; expected two or more"))
    actname, actkw = _activation_of(getproperty(a, :activation), "layer $(length(layers) + 1) (an Add)")
    layer = _layer("add", "Add"; activation=isempty(actkw) ? actname : "identity")
    layer["inputs"] = outs
    _push!(layers, layer, opts)
    isempty(actkw) || _activation_layer!(layers, actname, actkw, "Add", opts)
    return layers
end

_kwdict(kw) = Dict{Symbol,Any}(Symbol(k) => v for (k, v) in pairs(kw))

"""Layers21 `Op(f, args...; kwargs...)`, computing `f(x, args...; kwargs...)`: activations
(relu with Ops21's keywords), softmax with dims=1, pool (Ops20 keywords, or Ops21's op=maximum|mean),
mat."""
function _op_layer(o, layers; desc="layer $(length(layers) + 1) (an Op)")
    f = getproperty(o, :f)
    args = getproperty(o, :args)
    kw = _kwdict(getproperty(o, :kwargs))
    name = nameof(f)
    unknown(allowed) = [k for k in keys(kw) if !(k in allowed)]
    if name === :reshape
        # Op(reshape, X1, ..., C, :) or Op(reshape, (X1, ..., C, :)): one sample's new size, the
        # batch (the trailing colon) kept.
        dims = length(args) == 1 && args[1] isa Tuple ? args[1] : args
        (isempty(kw) && length(dims) >= 2 && dims[end] isa Colon &&
         all(d -> d isa Integer && !(d isa Bool) && d >= 1, dims[1:end-1])) ||
            throw(ArgumentError("export_model: $desc is reshape with $(repr(args)); expected " *
                                "Op(reshape, X1, ..., C, :) (positive sizes, the batch last as :)"))
        layer = _layer("reshape", "Op")
        layer["size"] = Int[d for d in dims[1:end-1]]
        return layer
    end
    isempty(args) ||
        throw(ArgumentError("export_model: $desc calls $name with positional arguments $(repr(args)); expected keywords only"))
    if name === :relu && !isempty(kw)
        bad = unknown((:max_value, :negative_slope, :threshold))
        isempty(bad) || throw(ArgumentError("export_model: $desc: relu keywords $bad; expected max_value, negative_slope, threshold"))
        layer = _layer("activation", "Op"; activation="relu", dims=1)
        for (k, v) in kw
            (v isa Real && !isnan(v)) ||
                throw(ArgumentError("export_model: $desc: relu $k=$(repr(v)); expected a number"))
            k === :max_value && isinf(v) && v > 0 && continue     # Knet's default: no cap
            layer[string(k)] = Float64(v)
        end
        return layer
    elseif name in (:softmax, :logsoftmax)
        name === :logsoftmax &&
            throw(ArgumentError("export_model: $desc is logsoftmax, which the layer table does not have"))
        get(kw, :dims, nothing) == 1 ||
            throw(ArgumentError("export_model: $desc is softmax with dims=$(repr(get(kw, :dims, :))); " *
                                "expected dims=1 (Knet's default dims=: normalises over the whole array, batch included)"))
        return _layer("activation", "Op"; activation="softmax", dims=1)
    elseif haskey(ACTIVATIONS, name)
        isempty(kw) || throw(ArgumentError("export_model: $desc: $name with keywords $(collect(keys(kw))); expected none"))
        return _layer("activation", "Op"; activation=ACTIVATIONS[name], dims=1)
    elseif name === :mat
        isempty(kw) || throw(ArgumentError("export_model: $desc: mat with keywords $(collect(keys(kw))); expected none"))
        return _layer("mat", "Op")
    elseif name === :pool
        return _layer("pool", "Op"; pool=_op_pool(kw, layers, desc; ops21=_is_ops21(f)))
    end
    throw(ArgumentError("export_model: $desc calls $name; expected an activation ($ACTIVATION_LIST), " *
                        "relu with keywords, softmax with dims=1, pool or mat"))
end

_is_ops21(f) = (m = parentmodule(f); nameof(m) === :Ops21)

function _op_pool(kw, layers, desc; ops21=false)
    last_conv = findlast(l -> l["kind"] in ("conv", "deconv", "zeropad"), layers)
    nd = nothing
    if last_conv !== nothing
        l = layers[last_conv]
        nd = l["kind"] == "zeropad" ? (l["padding"] isa Integer ? nothing : length(l["padding"])) :
             length(l[l["kind"]]["padding"])
    end
    nd === nothing &&
        throw(ArgumentError("export_model: $desc is a pool with no conv layer before it, so its number of spatial dimensions is unknown"))
    window = get(kw, :window, 2)
    stride = get(kw, :stride, window)
    padding = get(kw, :padding, 0)
    alpha = get(kw, :alpha, 1)
    if ops21 || haskey(kw, :op) || haskey(kw, :includePadding) || haskey(kw, :propagateNaN)   # Ops21.pool
        # Ops21 truncates a window larger than the padded input to fit it (global pooling is
        # window=typemax(Int)); the layer table's pool, as Ops20's, takes the window as given,
        # and the input size is unknown here, so a window that only says "everything" is refused.
        any(>=(typemax(Int32)), _spatial(window, nd, :window)) &&
            throw(ArgumentError("export_model: $desc is Ops21 global pooling (window=$(repr(window)), " *
                                "truncated by Knet to the input); the exported pool needs the real " *
                                "window: use Op(pool; op=..., window=(X1, X2, ...)) with the feature " *
                                "map's spatial size"))
        bad = [k for k in keys(kw) if !(k in (:op, :window, :padding, :stride, :alpha, :includePadding, :propagateNaN, :channelmajor))]
        isempty(bad) || throw(ArgumentError("export_model: $desc: pool keywords $bad"))
        get(kw, :channelmajor, false) && throw(ArgumentError("export_model: $desc: pool with channelmajor=true"))
        op = nameof(get(kw, :op, maximum))
        if op === :maximum
            mode = 0
        elseif op === :mean
            # Ops21 excludes padding from the mean by default (includePadding=false); Knet's
            # CPU pool mode 1 counts it, so the two agree only without padding.
            mode = 1
            get(kw, :includePadding, false) || all(==(0), _spatial(padding, nd, :padding)) ||
                throw(ArgumentError("export_model: $desc: mean pool with padding and includePadding=false " *
                                    "(padding excluded from the count), which the layer table's mean pool (padding counted) does not compute"))
        else
            throw(ArgumentError("export_model: $desc: pool op=$op; expected maximum or mean"))
        end
    else
        bad = [k for k in keys(kw) if !(k in (:window, :padding, :stride, :mode, :alpha))]
        isempty(bad) || throw(ArgumentError("export_model: $desc: pool keywords $bad"))
        mode = get(kw, :mode, 0)
    end
    entry = _pool_entry(nd, (window=window, padding=padding, stride=stride, mode=mode))
    alpha == 1 || (entry["alpha"] = Float64(alpha))
    return entry
end

# ---- functional models: weights in a vector, plus a structure file -----------------------------

"""`x` at `path` ("w/3", "m/1/mean"): Dict keys, field names, 1-based indices, as Julia."""
function _resolve(x, path::AbstractString, where)
    node = x
    here = String[]
    for seg in split(path, '/'; keepempty=false)
        at = isempty(here) ? "the model's top level" : join(here, "/")
        if node isa AbstractDict
            k = findfirst(k -> string(k) == seg, collect(keys(node)))
            k === nothing && throw(ArgumentError("export_model: $where names $(repr(path)): $at has no key $(repr(seg))"))
            node = node[collect(keys(node))[k]]
        elseif node isa Union{AbstractVector,Tuple}
            i = tryparse(Int, seg)
            (i !== nothing && 1 <= i <= length(node)) ||
                throw(ArgumentError("export_model: $where names $(repr(path)): $at holds $(length(node)) " *
                                    "items, numbered 1-$(length(node)) as in Julia; got $(repr(seg))"))
            node = node[i]
        elseif !(node isa AbstractArray) && hasproperty(node, Symbol(seg))
            node = getproperty(node, Symbol(seg))
        else
            throw(ArgumentError("export_model: $where names $(repr(path)): $at is a $(typeof(node)) without $(repr(seg))"))
        end
        push!(here, seg)
    end
    return node
end

"""The layers a structure file describes (README.md, "Structure files"), their weights read
from `model` at the paths the file gives. Returns the file's version."""
function _structure_layers!(layers, model, structure)
    doc = structure isa AbstractString ? JSON.parsefile(structure) : structure
    src = structure isa AbstractString ? "structure file $structure" : "structure"
    doc isa AbstractDict ||
        throw(ArgumentError("export_model: $src is a $(typeof(doc)); expected a JSON object with format and layers"))
    get(doc, "format", nothing) == EXPORT_FORMAT ||
        throw(ArgumentError("export_model: $src has format $(repr(get(doc, "format", nothing))); expected \"$EXPORT_FORMAT\""))
    version = get(doc, "version", nothing)
    (version isa Integer && 1 <= version <= EXPORT_VERSION) ||
        throw(ArgumentError("export_model: $src has version $(repr(version)); expected 1 to $EXPORT_VERSION"))
    ls = get(doc, "layers", nothing)
    (ls isa AbstractVector && !isempty(ls)) ||
        throw(ArgumentError("export_model: $src: layers must be a non-empty list of layer objects"))
    for (i, d) in enumerate(ls)
        d isa AbstractDict || throw(ArgumentError("export_model: $src layer $i is $(repr(d)); expected an object"))
        get(d, "kind", nothing) isa AbstractString ||
            throw(ArgumentError("export_model: $src layer $i has kind $(repr(get(d, "kind", nothing))); expected a string"))
        where = "$src layer $i"
        layer = Dict{String,Any}(string(k) => v for (k, v) in d if string(k) != "params")
        get!(layer, "julia_type", "structure")
        arrays = Pair{String,Any}[]
        params = get(d, "params", nothing)
        params === nothing && (params = Dict{String,Any}())
        params isa AbstractDict || throw(ArgumentError("export_model: $where: params is $(repr(params)); expected an object"))
        for (pname, spec) in params
            spec === nothing && continue
            (spec isa AbstractDict && get(spec, "key", nothing) isa AbstractString) ||
                throw(ArgumentError("export_model: $where: params.$pname is $(repr(spec)); expected {\"key\": \"path/in/model\"}"))
            a = _array(_resolve(model, spec["key"], "$where params.$pname"), "$where params.$pname ($(spec["key"]))")
            sz = get(spec, "size", nothing)
            sz === nothing || collect(size(a)) == sz ||
                throw(ArgumentError("export_model: $where: params.$pname ($(spec["key"])) has size $(size(a)); the structure says $(repr(sz))"))
            et = get(spec, "eltype", nothing)
            et === nothing || string(eltype(a)) == et ||
                throw(ArgumentError("export_model: $where: params.$pname ($(spec["key"])) is $(eltype(a)); the structure says $et"))
            push!(arrays, string(pname) => a)
        end
        layer["arrays"] = arrays
        push!(layers, layer)
    end
    return Int(version)
end
