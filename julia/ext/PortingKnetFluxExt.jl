# PortingKnet's Flux extension (loaded when Flux is in the same environment, Julia >= 1.9):
# `PortingKnet.flux_model(prefix)` rebuilds the export pair as Flux layers, so a model that
# Python's porting described (a Keras model converted with `--to knet`, or any Knet export)
# runs in Flux. Flux computes with NNlib, as Knet's CPU path does; the mapping of each kind is in
# ../../docs/knet.md#flux-from-export, and Python's tests check the same mapping
# (tests/test_julia_import.py).
module PortingKnetFluxExt

import Flux
import PortingKnet
import PortingKnet: _param, _keywords, _activation_fn, _apply, _pad_pairs, _import_error, _layernorm

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
(m::Merge)(xs) = m.op === :add ? _apply(m.act, reduce(.+, xs), m.d) : cat(xs...; dims=ndims(xs[1]) - 1)

_vec(b) = b === nothing ? false : vec(b)

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
        # Knet's CPU mean pool (modes 1 and 2) divides by the whole window, as NNlib's meanpool;
        # integer keywords mean every spatial dimension, known from the input
        tup(v, nd) = v isa Integer ? ntuple(_ -> Int(v), nd) : v
        return Any[function (x)
            nd = ndims(x) - 2
            window = tup(kw.window, nd)
            stride = kw.stride === nothing ? window : tup(kw.stride, nd)
            return Pool(window; pad=tup(kw.padding, nd), stride=stride)(x)
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
    elseif kind == "add" || kind == "concat"
        return Any[Merge(Symbol(kind), act, Dict{String,Any}(d))]
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
        ins = kind in ("add", "concat") ? String.(d["inputs"]) : [string(something(get(d, "input", nothing), prev))]
        graph |= kind in ("add", "concat") || ins != [prev]
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
