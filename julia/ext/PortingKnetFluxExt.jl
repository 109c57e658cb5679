# PortingKnet's Flux extension (loaded when Flux is in the same environment, Julia >= 1.9):
# `PortingKnet.flux_model(prefix)` rebuilds the export pair as Flux layers, so a model that
# Python's porting described (a Keras model converted with `--to knet`, or any Knet export)
# runs in Flux. Flux computes with NNlib, as Knet's CPU path does; the mapping of each kind is in
# ../../docs/knet.md#flux-from-export, and Python's tests check the same mapping
# (tests/test_julia_import.py).
module PortingKnetFluxExt

import Flux
import PortingKnet
import PortingKnet: _param, _keywords, _activation_fn, _apply, _pad_pairs, _import_error, _upsample,
                    _upsample_size, _rnn_unpack, _rnn_initial, _layernorm

"""Layers that read earlier outputs by name (a Flux `Chain` is a line: a model with merges or
skips becomes this graph, whose steps are Flux layers)."""
struct FluxGraph
    steps::Vector{Any}
    names::Vector{String}
    inputs::Vector{Vector{String}}
end
Flux.@functor FluxGraph (steps,)

function (g::FluxGraph)(x)
    outs = Dict{String,Any}("input" => x)
    for (f, name, ins) in zip(g.steps, g.names, g.inputs)
        xs = [outs[i] for i in ins]
        outs[name] = length(ins) == 1 && !(f isa Merge) ? f(xs[1]) : f(xs)
    end
    return outs[g.names[end]]
end

struct Merge
    op::Symbol
    act::Any
    d::Dict{String,Any}
end
(m::Merge)(xs) = m.op === :add ? _apply(m.act, reduce(.+, xs), m.d) :
                 m.op === :mul ? reduce(.*, xs) : cat(xs...; dims=ndims(xs[1]) - 1)

_vec(b) = b === nothing ? false : vec(b)

"""A Flux 0.15+ recurrent layer called from a fixed initial state (Flux's `layer(x, state)`):
the trained `state0` a Flux 0.14 `Recur` restored at `reset!`, carried by the export's
policy "initial"; zeros otherwise."""
struct FromState
    layer::Any
    state::Any
end
Flux.@functor FromState (layer,)
(m::FromState)(x) = m.layer(x, m.state)

_slot(s, l, H, T) = s === nothing ? zeros(T, H) : T.(vec(s[:, 1, l]))

"""The Flux 0.15+ layers of an rnn entry, one per Knet layer (unidirectional, no skipInput),
on Flux's `(features, steps, batch)`: Knet's gates i, f, n, o (LSTM) and r, z, n (GRU) are
Flux's; the two biases are summed except a GRU's recurrent bias of the new gate, which Knet
adds inside `r .* (Rn h + bRn)` and Flux's GRUCell cannot hold (refused when nonzero);
`resetAfter = false` is Flux's `GRUv3` (`Wh` with a zero third block, never read)."""
function _flux_rnn(d, arrays, where)
    s = d["rnn"]
    X, H, L = Int(s["inputSize"]), Int(s["hiddenSize"]), Int(s["numLayers"])
    (s["bidirectional"] || s["skipInput"]) &&
        _import_error("$where: a bidirectional or skipInput rnn has no Flux layer")
    type = s["rnnType"]
    gates = type == "lstm" ? 4 : type == "gru" ? 3 : 1
    w = _param(d, arrays, "w", where)
    T = eltype(w)
    Ws, Rs, bWs, bRs = _rnn_unpack(w, X, H, L, 1, gates, false)
    h0, c0 = _rnn_initial(d, arrays, "h", where), _rnn_initial(d, arrays, "c", where)
    out = Any[]
    for l in 1:L
        Wi, Wh, bW, bR = reduce(vcat, Ws[l]), reduce(vcat, Rs[l]), bWs[l], bRs[l]
        h = _slot(h0, l, H, T)
        if type == "lstm"
            layer = Flux.LSTM(Flux.LSTMCell(Wi, Wh, reduce(vcat, bW .+ bR)))
            push!(out, FromState(layer, (h, _slot(c0, l, H, T))))
        elseif type == "gru" && get(s, "resetAfter", true) !== false
            any(!iszero, bR[3]) && _import_error("$where: layer $l's recurrent bias of the new " *
                "gate is nonzero: Knet adds it inside r .* (Rn h + bRn), Flux's GRUCell has none")
            cell = Flux.GRUCell(Wi, Wh, vcat(bW[1] .+ bR[1], bW[2] .+ bR[2], bW[3]))
            push!(out, FromState(Flux.GRU(cell), h))
        elseif type == "gru"
            Wh3 = vcat(Rs[l][1], Rs[l][2], zero(Rs[l][3]))
            cell = Flux.GRUv3Cell(Wi, Wh3, reduce(vcat, bW .+ bR), Rs[l][3])
            push!(out, FromState(Flux.GRUv3(cell), h))
        else
            σ = type == "relu" ? Flux.relu : tanh
            push!(out, FromState(Flux.RNN(Flux.RNNCell(σ, Wi, Wh, reduce(vcat, bW .+ bR))), h))
        end
    end
    get(d, "output", "sequence") == "last" && push!(out, y -> y[:, end, :])
    return out
end

"""The Flux layers (in order) of one export entry."""
function _flux_layers(d, arrays, where)
    kind = d["kind"]
    act = _activation_fn(d, where)
    elementwise = !(something(get(d, "activation", nothing), "identity") in ("softmax", "logsoftmax"))
    post = elementwise ? (x -> _apply(act, x, d)) : (x -> act(x))
    if kind == "conv"
        w, b = _param(d, arrays, "w", where), _param(d, arrays, "b", where; required=false)
        kw = _keywords(d, "conv", (padding=0, stride=1, dilation=1, mode=0))
        get(kw, :alpha, 1) == 1 || _import_error("$where: conv alpha=$(kw.alpha) has no Flux counterpart")
        groups = get(kw, :groups, 1)
        # Flux's Conv is true convolution (NNlib flips the kernel), Knet's mode 0; CrossCor is mode 1
        layer = kw.mode == 0 ?
            Flux.Conv(w, _vec(b), identity; stride=kw.stride, pad=kw.padding, dilation=kw.dilation, groups=groups) :
            (groups == 1 ? Flux.CrossCor(w, _vec(b), identity; stride=kw.stride, pad=kw.padding, dilation=kw.dilation) :
             _import_error("$where: a grouped cross-correlation (mode 1, groups $groups) has no Flux layer"))
        out = Any[layer]
        before = get(d, "order", "pool-activation") == "activation-pool"
        before && push!(out, post)
        if get(d, "pool", nothing) !== nothing
            append!(out, _flux_layers(Dict{String,Any}("kind" => "pool", "pool" => d["pool"]), arrays, where))
        end
        before || push!(out, post)
        return out
    elseif kind == "dense"
        w, b = _param(d, arrays, "w", where), _param(d, arrays, "b", where; required=false)
        return Any[Flux.flatten, Flux.Dense(w, _vec(b), identity), post]
    elseif kind == "linear"
        w, b = _param(d, arrays, "w", where), _param(d, arrays, "bias", where; required=false)
        return Any[Flux.Dense(w, _vec(b), identity), post]
    elseif kind == "pool"
        kw = _keywords(d, "pool", (window=2, padding=0, stride=nothing, mode=0))
        get(kw, :alpha, 1) == 1 || _import_error("$where: pool alpha=$(kw.alpha) has no Flux counterpart")
        Pool = kw.mode in (0, 3) ? Flux.MaxPool : Flux.MeanPool
        # Knet's mode 1 divides by the whole window, as NNlib's meanpool; mode 2 (the mean of the
        # real cells) is that divided by MeanPool of ones, as import_model's _pool; integer
        # keywords mean every spatial dimension, known from the input
        tup(v, nd) = v isa Integer ? ntuple(_ -> Int(v), nd) : v
        return Any[function (x)
            nd = ndims(x) - 2
            window = tup(kw.window, nd)
            stride = kw.stride === nothing ? window : tup(kw.stride, nd)
            p = Pool(window; pad=tup(kw.padding, nd), stride=stride)
            kw.mode == 2 && any(q -> q != 0, tup(kw.padding, nd)) || return p(x)
            return p(x) ./ p(fill!(similar(x, size(x)[1:end-2]..., 1, 1), 1))
        end]
    elseif kind == "mat"
        return Any[Flux.flatten]
    elseif kind == "dropout"
        return Any[identity]
    elseif kind == "activation"
        return Any[post]
    elseif kind == "batchnorm"
        mean, var = vec(_param(d, arrays, "mean", where)), vec(_param(d, arrays, "var", where))
        p = _param(d, arrays, "bnparams", where; required=false)
        c = length(mean)
        T = eltype(mean)
        eps = something(get(d, "eps", nothing), 1e-5)
        bn = Flux.BatchNorm(c; eps=eps, momentum=something(get(d, "momentum", nothing), 0.1),
                            affine=p !== nothing)
        T == Float64 && (bn = Flux.f64(bn))  # BatchNorm's own statistics are Float32
        copyto!(bn.μ, mean)
        copyto!(bn.σ², var)
        if p !== nothing
            copyto!(bn.γ, vec(p)[1:c])
            copyto!(bn.β, vec(p)[c + 1:end])
        end
        Flux.testmode!(bn)
        return Any[bn]
    elseif kind == "layernorm"
        size_ = Tuple(Int.(d["size"]))
        s, b = _param(d, arrays, "scale", where; required=false), _param(d, arrays, "bias", where; required=false)
        eps = something(get(d, "eps", nothing), 1e-5)
        formula = string(something(get(d, "formula", nothing), "var"))
        # Flux's LayerNorm adds eps by its own version's rule (../../docs/flux.md#normalisation-flux):
        # the Flux layer when that is the recorded formula, else the same arithmetic as a function
        v = pkgversion(Flux)
        own = v >= v"0.16.11" ? "var" : v >= v"0.15.0" ? "eps2" : "std"
        own == formula || return Any[x -> _layernorm(x, length(size_), s, b, eps, formula)]
        ln = Flux.LayerNorm(size_; affine=s !== nothing, eps=eps)
        if s !== nothing
            eltype(s) == Float64 && (ln = Flux.f64(ln))
            copyto!(ln.diag.scale, s)
            copyto!(ln.diag.bias, b)
        end
        return Any[ln]
    elseif kind == "groupnorm"
        c, g = Int(d["channels"]), Int(d["groups"])
        s, b = _param(d, arrays, "scale", where; required=false), _param(d, arrays, "bias", where; required=false)
        eps = something(get(d, "eps", nothing), 1e-5)
        # each sample's own statistics: GroupNorm never tracks them (Flux 0.14 on), InstanceNorm
        # with its default track_stats=false
        gn = g == c ? Flux.InstanceNorm(c; affine=s !== nothing, eps=eps) :
             Flux.GroupNorm(c, g; affine=s !== nothing, eps=eps)
        if s !== nothing
            eltype(s) == Float64 && (gn = Flux.f64(gn))
            copyto!(gn.γ, vec(s))
            copyto!(gn.β, vec(b))
        end
        Flux.testmode!(gn)
        return Any[gn]
    elseif kind == "zeropad"
        padding = d["padding"]
        return Any[function (x)
            pairs = _pad_pairs(padding, ndims(x) - 2)
            return Flux.NNlib.pad_zeros(x, Tuple(Iterators.flatten(pairs)); dims=1:ndims(x) - 2)
        end]
    elseif kind == "reshape"
        size_ = Tuple(Int.(d["size"]))
        return Any[x -> reshape(x, size_..., :)]
    elseif kind == "upsample"
        mode = string(something(get(d, "mode", nothing), "nearest"))
        scale, size_ = get(d, "scale", nothing), get(d, "size", nothing)
        align = something(get(d, "align_corners", nothing), true)
        # Flux's Upsample: nearest, or NNlib's linear with its default align_corners = true;
        # half-pixel centres (Keras's) have no Flux layer: PortingKnet's own interpolation
        (mode != "nearest" && !align) && return Any[x -> _upsample(x, mode, scale, size_, align)]
        return Any[function (x)
            out = _upsample_size(x, mode, scale, size_)
            m = mode == "nearest" ? :nearest : (length(out) == 3 ? :trilinear : :bilinear)
            return Flux.Upsample(m; size=out)(x)
        end]
    elseif kind == "pixelshuffle"
        return Any[Flux.PixelShuffle(Int(d["r"]))]
    elseif kind == "rnn"
        return _flux_rnn(d, arrays, where)
    elseif kind == "timedense"
        # Flux's Dense multiplies the first dimension of (H, steps, batch): every step
        w, b = _param(d, arrays, "w", where), _param(d, arrays, "b", where; required=false)
        return Any[Flux.Dense(w, _vec(b), identity), post]
    elseif kind == "add" || kind == "concat" || kind == "mul"
        return Any[Merge(Symbol(kind), act, Dict{String,Any}(d))]
    elseif kind == "affine"
        s, b = vec(_param(d, arrays, "scale", where)), vec(_param(d, arrays, "bias", where))
        return Any[function (x)
            shape = ntuple(i -> i == max(ndims(x) - 1, 1) ? length(s) : 1, ndims(x))
            return x .* reshape(s, shape) .+ reshape(b, shape)
        end]
    end
    _import_error("$where: kind $(repr(kind)) has no Flux mapping yet")
end

function PortingKnet._flux_model(::Val{:flux}, prefix::AbstractString)
    doc, arrays, stem = PortingKnet._read_export(prefix)
    steps, names, inputs = Any[], String[], Vector{String}[]
    graph = false
    prev = "input"
    for (i, d) in enumerate(doc["layers"])
        name = string(something(get(d, "name", nothing), "layer$i"))
        where = "layer $i ($(repr(name)))"
        kind = string(d["kind"])
        ins = kind in PortingKnet.MERGE_KINDS ? String.(d["inputs"]) : [string(something(get(d, "input", nothing), prev))]
        graph |= kind in PortingKnet.MERGE_KINDS || ins != [prev]
        layers = _flux_layers(d, arrays, where)
        push!(steps, length(layers) == 1 ? layers[1] : Flux.Chain(layers...))
        push!(names, name)
        push!(inputs, ins)
        prev = name
    end
    isempty(steps) && _import_error("$(stem).json has no layers")
    # a chain when every layer reads the one before it; else the graph
    return graph ? FluxGraph(steps, names, inputs) : Flux.Chain(steps...)
end

end # module
