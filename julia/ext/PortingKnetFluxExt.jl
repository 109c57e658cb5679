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
                    _upsample_size, _layernorm, _rnn_spec, _rnn_output, _rnn_initial, SEQ_TO_FLUX,
                    EMBED_TO_SEQ, RNN_GATES

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

# --------------------------------------------------------------------------- sequences
# Flux's recurrent layers from 0.15 on (FluxML/Flux.jl@v0.16.9 src/layers/recurrent.jl:
# `RNNCell(σ, Wi, Wh, bias)`, `LSTMCell(Wi, Wh, bias)`, `GRUCell(Wi, Wh, b)`, wrapped in
# `RNN` / `LSTM` / `GRU` / `GRUv3`, which read (in, T, B), called as `layer(x, state)` from the
# export's initial state (zeros, or the policy "initial": a Flux 0.14 `Recur`'s trained
# `state0`, which `reset!` restored); 0.14's `Recur`
# runs one step per call and is refused (../docs/flux.md#recurrent-flux). Python's twins of
# every rule here: porting.rnn.julia (knet_slices, flux_cell, flux_sequence).

"""Knet's packed `r.w` -> per slot (forward and backward alternate) `(W, R, bW, bR)`, gates
stacked in Knet's order (Flux's): each matrix is H rows of `in` stored row after row, so the
column-major reshape to `(in, H)` is its transpose (Knet's `rnnparam(r, slot, id, 1)`); the
biases follow every matrix (../docs/knet.md#rnn-packing)."""
function _rnn_slices(w, spec)
    h, g = spec["hiddenSize"], RNN_GATES[spec["rnnType"]]
    dirs = spec["bidirectional"] ? 2 : 1
    slots = spec["numLayers"] * dirs
    v = vec(w)
    pos = 0
    block(start, nin) = permutedims(reshape(v[start + 1:start + h * nin], nin, h))
    mats = Any[]
    for s in 0:slots - 1
        layer = s ÷ dirs
        nin = layer == 0 ? (spec["skipInput"] ? 0 : spec["inputSize"]) : h * dirs
        W = nin == 0 ? nothing : vcat([block(pos + k * h * nin, nin) for k in 0:g - 1]...)
        pos += g * h * nin
        R = vcat([block(pos + k * h * h, h) for k in 0:g - 1]...)
        pos += g * h * h
        push!(mats, (W, R))
    end
    out = Any[]
    for s in 1:slots
        bW = v[pos + 1:pos + g * h]
        pos += g * h
        bR = v[pos + 1:pos + g * h]
        pos += g * h
        push!(out, (mats[s]..., bW, bR))
    end
    pos == length(v) || _import_error("rnn: the packed weights have $(length(v)) values, $pos read")
    return out
end

"""One slot's Flux recurrent layer: Flux adds one bias where Knet adds two (`bW + bR`); the
GRU's recurrent bias of the new gate is inside Knet's reset product and has no place in
Flux's GRUCell, so it must be zero."""
function _flux_recurrent(spec, slot, where)
    W, R, bW, bR = slot
    W === nothing && _import_error("$where: skipInput (no input matrix) has no Flux counterpart")
    t = spec["rnnType"]
    t == "lstm" && return Flux.LSTM(Flux.LSTMCell(W, R, bW .+ bR))
    t in ("relu", "tanh") &&
        return Flux.RNN(Flux.RNNCell(t == "relu" ? Flux.relu : tanh, W, R, bW .+ bR))
    h = size(R, 2)
    if get(spec, "resetAfter", true) === false
        # Flux's GRUv3: the reset gate before the recurrent matrix of the new gate, which
        # GRUv3Cell holds apart (its Wh's third block is never read: left zero)
        Wh = vcat(R[1:2h, :], zero(R[2h + 1:end, :]))
        return Flux.GRUv3(Flux.GRUv3Cell(W, Wh, bW .+ bR, R[2h + 1:end, :]))
    end
    any(!iszero, bR[2h + 1:end]) &&
        _import_error("$where: a GRU with a nonzero recurrent bias of its new gate: Knet " *
                      "computes tanh(Wn x + r .* (Rn h + bRn) + bWn), Flux's GRUCell has no " *
                      "bias inside the reset product; use import_model (Knet)")
    return Flux.GRU(Flux.GRUCell(W, R, vcat(bW[1:2h] .+ bR[1:2h], bW[2h + 1:end])))
end

"""An rnn layer in Flux: the model's (T, X, B) as Flux's (X, T, B); each layer a Flux
recurrent layer, or for a bidirectional one a (forward, backward) pair, the backward run on
the time-reversed sequence and reversed back, stacked forward first; every step (T, Y, B)
or the last one (Y, B), Knet's y[:, :, end]."""
struct FluxRNN
    layers::Vector{Any}
    states::Vector{Any}  # per layer (a pair for a bidirectional one): nothing (zeros) or its state
    last::Bool
end
Flux.@functor FluxRNN (layers,)

_run(l, x, s) = s === nothing ? l(x) : l(x, s)

function (m::FluxRNN)(x)
    h = permutedims(x, SEQ_TO_FLUX)
    for (l, s) in zip(m.layers, m.states)
        h = l isa Tuple ? vcat(_run(l[1], h, s[1]), reverse(_run(l[2], reverse(h; dims=2), s[2]); dims=2)) :
            _run(l, h, s)
    end
    return m.last ? h[:, end, :] : permutedims(h, SEQ_TO_FLUX)
end

function _flux_rnn(d, arrays, where)
    isdefined(Flux, :initialstates) ||
        _import_error("$where: rnn layers need Flux 0.15 or later (whole-sequence RNN/LSTM/GRU); " *
                      "Flux 0.14's Recur runs one step per call")
    w = _param(d, arrays, "w", where)
    spec = _rnn_spec(d, w, where)
    slots = [_flux_recurrent(spec, s, where) for s in _rnn_slices(w, spec)]
    # the initial state of slot k is h0[:, 1, k] (Knet's (H, 1, L or 2L): directions alternate)
    h0, c0 = _rnn_initial(d, arrays, "h", where), _rnn_initial(d, arrays, "c", where)
    T = eltype(w)
    H = spec["hiddenSize"]
    _h(k) = h0 === nothing ? zeros(T, H) : T.(vec(h0[:, 1, k]))
    _c(k) = c0 === nothing ? zeros(T, H) : T.(vec(c0[:, 1, k]))
    state(k) = h0 === nothing && c0 === nothing ? nothing :
               spec["rnnType"] == "lstm" ? (_h(k), _c(k)) : _h(k)
    states = [state(k) for k in 1:length(slots)]
    if spec["bidirectional"]
        layers = Any[(slots[i], slots[i + 1]) for i in 1:2:length(slots)]
        st = Any[(states[i], states[i + 1]) for i in 1:2:length(slots)]
    else
        layers, st = Any[slots...], Any[states...]
    end
    return FluxRNN(layers, st, _rnn_output(d, where) == "last")
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
    elseif kind == "add" || kind == "concat" || kind == "mul"
        return Any[Merge(Symbol(kind), act, Dict{String,Any}(d))]
    elseif kind == "affine"
        s, b = vec(_param(d, arrays, "scale", where)), vec(_param(d, arrays, "bias", where))
        return Any[function (x)
            shape = ntuple(i -> i == max(ndims(x) - 1, 1) ? length(s) : 1, ndims(x))
            return x .* reshape(s, shape) .+ reshape(b, shape)
        end]
    elseif kind == "embed"
        w = _param(d, arrays, "w", where)
        # Flux's Embedding gathers w[:, x] ((dim, T, B)); a (B,) vector is one step
        return Any[x -> ndims(x) == 1 ? reshape(x, 1, :) : x, Flux.Embedding(w),
                   x -> permutedims(x, EMBED_TO_SEQ)]
    elseif kind == "rnn"
        return Any[_flux_rnn(d, arrays, where)]
    elseif kind == "timedense"
        w, b = _param(d, arrays, "w", where), _param(d, arrays, "b", where; required=false)
        # a Dense on the features of every step of Flux's (H, T, B); softmax over dims=1
        return Any[x -> permutedims(x, SEQ_TO_FLUX), Flux.Dense(w, _vec(b), identity), post,
                   x -> permutedims(x, SEQ_TO_FLUX)]
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
