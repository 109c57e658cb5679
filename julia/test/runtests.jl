# julia --project=julia -e 'import Pkg; Pkg.test()'
#
# 1. The golden vectors in tests/golden/knet_golden.json (the same file the Python tests read),
#    with the tolerance rule stated in its header, on every backend available here: "julia"
#    (Knet) when the environment has Knet, and "julia-nnlib" always.
# 2. export_model round trips: arrays come back bit-identical from the .npz, and running the
#    layers as the .json describes them reproduces the model's own forward pass.

using Test
using PortingKnet
import JSON
import NPZ

const GOLDEN = get(ENV, "PORTING_KNET_GOLDEN",
                   joinpath(@__DIR__, "..", "..", "tests", "golden", "knet_golden.json"))
const ELTYPES = Dict("Float32" => Float32, "Float64" => Float64)

julia_array(spec, T) = reshape(T.(spec["data"]), Int.(spec["size"])...)

inputs(case) = Dict(k => julia_array(v, ELTYPES[case["eltype"]]) for (k, v) in case["inputs"])

_kwarg(v) = v isa AbstractVector ? Tuple(Int.(v)) : v
kwargs(case) = Dict{Symbol,Any}(Symbol(k) => _kwarg(v) for (k, v) in case["kwargs"])

function run_case(case; override...)
    a, kw = inputs(case), merge(kwargs(case), Dict{Symbol,Any}(override))
    op = case["op"]
    op == "conv4" && return PortingKnet.conv4(a["w"], a["x"]; kw...)
    op == "deconv4" && return PortingKnet.deconv4(a["w"], a["x"]; kw...)
    op == "pool" && return PortingKnet.pool(a["x"]; kw...)
    op == "mat" && return PortingKnet.mat(a["x"]; kw...)
    error("unknown op $(repr(op)) in case $(case["name"])")
end

"""Elementwise tolerance: the rule in the golden file's "tolerance" header."""
function tolerance(case, expected::AbstractArray{Float64})
    if case["digits"] !== nothing
        digits, extra = case["digits"], something(case["source_error"], 0.0)
        return map(expected) do e
            exponent = floor(log10(abs(e) > 0 ? abs(e) : 1.0))
            0.5 * 10.0^(exponent - digits + 1) + extra
        end
    end
    T = ELTYPES[case["eltype"]]
    a, kw = inputs(case), case["kwargs"]
    alpha = abs(get(kw, "alpha", 1))
    x = Float64.(a["x"])
    if case["op"] in ("conv4", "deconv4")
        w = Float64.(a["w"])
        K, M = length(w), alpha * sum(abs, w) * maximum(abs, x)
    elseif case["op"] == "pool"
        window = get(kw, "window", 2)
        K = window isa AbstractVector ? prod(window) : window^(ndims(x) - 2)
        M = alpha * maximum(abs, x)
    else
        K, M = 0, 0.0
    end
    return fill(K * eps(T) * M, size(expected))
end

"""(within tolerance?, description of the worst element) for a result `got`."""
function check(case, got)
    expected = julia_array(case["expected"], Float64)
    size(got) == size(expected) || return false, "size $(size(got)), expected $(size(expected))"
    err = abs.(Float64.(got) .- expected)
    tol = tolerance(case, expected)
    ratio = map((e, t) -> t > 0 ? e / t : (e > 0 ? Inf : 0.0), err, tol)
    i = argmax(ratio)
    msg = "$(case["name"]): worst at $(Tuple(i)): got $(got[i]), expected $(expected[i]), " *
          "|error| $(err[i]) vs tolerance $(tol[i])"
    return all(err .<= tol), msg
end

backends() = PortingKnet.knet_module() === nothing ? ["julia-nnlib"] : ["julia", "julia-nnlib"]

# ---- helpers for the export_model tests ---------------------------------------------------

# Tutorial-style layers, defined here as a user script would (export_model never sees these names).
struct TConv; w; b; f; p; end
struct TDense; w; b; f; p; end
struct TChain; layers; end
struct FakeParam; value; end      # stands in for AutoGrad.Param (a `value` field)
relu(x) = max(zero(x), x)

val(p) = p isa FakeParam ? p.value : p
(c::TConv)(x) = c.f.(PortingKnet.pool(PortingKnet.conv4(val(c.w), x) .+ val(c.b)))
(d::TDense)(x) = d.f.(val(d.w) * PortingKnet.mat(x) .+ val(d.b))
(c::TChain)(x) = foldl((y, l) -> l(y), c.layers; init=x)

# Knet's RNN struct (Knet.jl v1.4.10 src/ops20/rnn.jl), field for field: export_model recognises
# an RNN by these fields, so this stands in for Knet.RNN where Knet is not installed.
mutable struct TRNN
    w; h; c
    inputSize::Cint; hiddenSize::Cint; numLayers::Cint; dropout::Float64; seed::Culonglong
    inputMode::Cint; direction::Cint; mode::Cint; algo::Cint; dataType::DataType
    rnnDesc; dropoutDesc; dx; dhx; dcx
end
TRNN(w, X, H; h=nothing, c=nothing, mode=2, layers=1, bi=false, skip=false, dropout=0.0) =
    TRNN(w, h, c, X, H, layers, dropout, 0, skip, bi, mode, 0, eltype(w), nothing, nothing,
         nothing, nothing, nothing)
struct TEmbed; w; b; f; end         # a layer struct of its own, as export_model asks
struct TSeqModel; rnn; out; pdrop; end
struct TBareModel; input; rnn; end

# Deterministic stand-ins for random weights.
fixture(T, dims...) = T.(reshape(sin.(1:prod(dims)) ./ 2, dims...))

const ACT = Dict("relu" => relu, "identity" => identity)

"""Run the layers as the export's JSON describes them: what a loader must do."""
function run_export(doc, arrays, x)
    for l in doc["layers"]
        kind = l["kind"]
        if kind == "pool"
            q = l["pool"]
            x = PortingKnet.pool(x; window=Tuple(q["window"]), padding=Tuple(q["padding"]),
                                 stride=Tuple(q["stride"]), mode=q["mode"])
            continue
        elseif kind == "mat"
            x = PortingKnet.mat(x)
            continue
        elseif kind == "activation"
            x = ACT[l["activation"]].(x)
            continue
        end
        w, b = (arrays[l["params"][name]["key"]] for name in ("w", "b"))
        f = ACT[l["activation"]]
        if kind == "conv"
            c, q = l["conv"], l["pool"]
            z = PortingKnet.conv4(w, x; padding=Tuple(c["padding"]), stride=Tuple(c["stride"]),
                                  dilation=Tuple(c["dilation"]), mode=c["mode"]) .+ b
            pooling = q === nothing ? identity :
                (y -> PortingKnet.pool(y; window=Tuple(q["window"]), padding=Tuple(q["padding"]),
                                       stride=Tuple(q["stride"]), mode=q["mode"]))
            x = l["order"] == "pool-activation" ? f.(pooling(z)) : pooling(f.(z))
        elseif kind == "dense"
            x = f.(w * PortingKnet.mat(x) .+ b)
        else
            error("unexpected layer kind $kind")
        end
    end
    return x
end

function read_export(files)
    doc = JSON.parsefile(files.json)
    arrays = NPZ.npzread(files.npz)
    return doc, arrays
end

# ---- tests --------------------------------------------------------------------------------

@testset "PortingKnet" begin

@testset "versions and backend" begin
    v = PortingKnet.versions()
    @test v["julia"] == string(VERSION)
    @test v["nnlib"] isa String
    @test v["backend"] == PortingKnet.backend_name()
    @test v["backend"] in ("julia", "julia-nnlib")
    @test (v["knet"] === nothing) == (v["backend"] == "julia-nnlib")
    @test (v["knet_error"] === nothing) == (v["backend"] == "julia")
    @test_throws ArgumentError PortingKnet.select_backend!("tensorflow")
    @test PortingKnet.select_backend!("julia-nnlib") == "julia-nnlib"
    @test PortingKnet.select_backend!("auto") == v["backend"]
end

if isfile(GOLDEN)
    golden = JSON.parsefile(GOLDEN)
    @test golden["format"] == "porting-knet-golden" && golden["version"] == 1
    for backend in backends()
        PortingKnet.select_backend!(backend)
        @testset "golden $backend: $(case["name"])" for case in golden["cases"]
            got = run_case(case)
            @test eltype(got) == ELTYPES[case["eltype"]]
            ok, msg = check(case, got)
            ok || @error msg
            @test ok
            # The tolerance is tight enough that the wrong flip fails every case whose kernel
            # is not symmetric under a 180-degree rotation.
            if case["op"] in ("conv4", "deconv4")
                w = inputs(case)["w"]
                nd = ndims(w) - 2
                rotated = w[ntuple(i -> i <= nd ? reverse(axes(w, i)) : axes(w, i), ndims(w))...]
                if w != rotated
                    flipped_ok, _ = check(case, run_case(case; mode=1 - get(case["kwargs"], "mode", 0)))
                    @test !flipped_ok
                end
            end
        end
    end
    PortingKnet.select_backend!("auto")
else
    @warn "golden vectors not found at $GOLDEN (set PORTING_KNET_GOLDEN); skipping them"
end

@testset "argument errors" begin
    w, x = ones(Float32, 3, 3, 2, 4), ones(Float32, 8, 6, 2, 5)
    @test size(PortingKnet.conv4(w, x; padding=1)) == (8, 6, 4, 5)
    @test size(PortingKnet.conv4(w, x; padding=(1, 0), stride=[1, 2])) == (8, 2, 4, 5)
    @test_throws ArgumentError PortingKnet.conv4(w, x; mode=2)
    @test_throws ArgumentError PortingKnet.conv4(w, x; padding=(1, 1, 1))
    @test_throws ArgumentError PortingKnet.conv4(w, Float64.(x))
    @test_throws DimensionMismatch PortingKnet.conv4(ones(Float32, 3, 3, 4), x)
    @test_throws ArgumentError PortingKnet.pool(x; mode=4)
    @test_throws ArgumentError PortingKnet.mat(x; dims=5)
    @test eltype(PortingKnet.conv4(w, x)) == Float32
    # A non-Array input (here a strided view) gives the same result as its copy.
    big = ones(Float32, 8, 6, 2, 10)
    @test PortingKnet.conv4(w, view(big, :, :, :, 1:5)) == PortingKnet.conv4(w, x)
end

@testset "export_model" begin
    model = TChain((TConv(FakeParam(fixture(Float32, 5, 5, 1, 4)), fixture(Float32, 1, 1, 4, 1), relu, 0),
                    TConv(fixture(Float32, 3, 3, 4, 6), fixture(Float32, 1, 1, 6, 1), relu, 0.25),
                    TDense(FakeParam(fixture(Float32, 10, 72)), fixture(Float32, 10), relu, 0.5),
                    TDense(fixture(Float32, 3, 10), fixture(Float32, 3), identity, 0)))
    x = fixture(Float32, 20, 24, 1, 2)   # conv, pool, conv, pool: 3x4x6x2, so mat order matters
    mktempdir() do dir
        files = export_model(joinpath(dir, "lenet"), model)
        @test files == (npz=joinpath(dir, "lenet.npz"), json=joinpath(dir, "lenet.json"))
        @test !any(endswith(".partial"), readdir(dir))
        doc, arrays = read_export(files)
        @test doc["format"] == "porting-knet-export" && doc["version"] == 1
        @test doc["julia_version"] == string(VERSION)
        @test [l["kind"] for l in doc["layers"]] == ["conv", "conv", "dense", "dense"]
        @test [l["name"] for l in doc["layers"]] == ["layer1", "layer2", "layer3", "layer4"]
        @test [l["activation"] for l in doc["layers"]] == ["relu", "relu", "relu", "identity"]
        @test [l["dropout"] for l in doc["layers"]] == [0.0, 0.25, 0.5, 0.0]
        @test [l["julia_type"] for l in doc["layers"]] == ["TConv", "TConv", "TDense", "TDense"]
        conv1 = doc["layers"][1]
        @test conv1["conv"] == Dict("padding" => [0, 0], "stride" => [1, 1], "dilation" => [1, 1], "mode" => 0)
        @test conv1["pool"] == Dict("window" => [2, 2], "padding" => [0, 0], "stride" => [2, 2], "mode" => 0)
        @test conv1["order"] == "pool-activation"
        dense1 = doc["layers"][3]
        @test dense1["conv"] === nothing && dense1["pool"] === nothing && dense1["order"] === nothing
        @test all(l -> l["dims"] === nothing, doc["layers"])
        originals = [(model.layers[i].w, model.layers[i].b) for i in 1:4]
        for (l, (w, b)) in zip(doc["layers"], originals)
            for (name, orig) in (("w", w), ("b", b))
                orig = val(orig)
                entry = l["params"][name]
                @test entry["key"] == "$(l["name"]).$name"
                @test entry["size"] == collect(size(orig)) && entry["eltype"] == "Float32"
                @test arrays[entry["key"]] == orig && eltype(arrays[entry["key"]]) == Float32
            end
        end
        @test run_export(doc, arrays, x) == model(x)

        # Functions as layers: pool (Knet's defaults), mat, an activation; nested chains.
        flat = TChain((TChain((TConv(model.layers[2].w, model.layers[2].b, identity, 0),)),
                       PortingKnet.pool, relu, PortingKnet.mat, model.layers[3]))
        doc, arrays = read_export(export_model(joinpath(dir, "functions"), flat; pool=nothing))
        @test [l["kind"] for l in doc["layers"]] == ["conv", "pool", "activation", "mat", "dense"]
        @test doc["layers"][2]["pool"] == Dict("window" => [2, 2], "padding" => [0, 0],
                                               "stride" => [2, 2], "mode" => 0)
        @test doc["layers"][3]["activation"] == "relu" && doc["layers"][3]["dims"] == 1
        @test all(l -> isempty(l["params"]), doc["layers"][2:4])
        x2 = fixture(Float32, 8, 10, 4, 2)        # conv 3x3: 6x8, pool: 3x4, 3*4*6 = 72
        flat_forward(x) = model.layers[3](PortingKnet.mat(relu.(PortingKnet.pool(
            PortingKnet.conv4(model.layers[2].w, x) .+ model.layers[2].b))))
        @test run_export(doc, arrays, x2) == flat_forward(x2)

        # Conv keywords from export_model's keywords; no pooling.
        files = export_model(joinpath(dir, "nopool.npz"), TChain([model.layers[2]]);
                             conv=(padding=1, mode=1), pool=nothing)
        @test files.json == joinpath(dir, "nopool.json")
        doc, _ = read_export(files)
        @test doc["layers"][1]["conv"]["padding"] == [1, 1] && doc["layers"][1]["conv"]["mode"] == 1
        @test doc["layers"][1]["pool"] === nothing
    end
end

@testset "export_model: arrays and Dicts (Knet's examples)" begin
    ws = Any[fixture(Float64, 5, 5, 1, 3), fixture(Float64, 1, 1, 3, 1), fixture(Float64, 4, 48), fixture(Float64, 4, 1)]
    x = fixture(Float64, 12, 12, 1, 2)
    # lenet.jl style: pool(relu.(conv4(w, x) .+ b)), then a final layer without activation.
    expected = ws[3] * PortingKnet.mat(PortingKnet.pool(relu.(PortingKnet.conv4(ws[1], x) .+ ws[2]))) .+ ws[4]
    mktempdir() do dir
        for model in (ws, Dict("w1" => ws[1], "b1" => ws[2], :w2 => ws[3], :b2 => ws[4]))
            doc, arrays = read_export(export_model(joinpath(dir, "m"), model))
            @test [l["kind"] for l in doc["layers"]] == ["conv", "dense"]
            @test [l["activation"] for l in doc["layers"]] == ["relu", "identity"]
            @test doc["layers"][1]["order"] == "activation-pool"
            @test run_export(doc, arrays, x) == expected
        end
        @test_throws ArgumentError export_model(joinpath(dir, "odd"), ws[1:3])
        @test_throws ArgumentError export_model(joinpath(dir, "key"), Dict("weights" => ws[1]))
        @test_throws ArgumentError export_model(joinpath(dir, "act"),
                                                TChain((TDense(ws[3], ws[4], x -> 2x, 0),)))
        mkdir(joinpath(dir, "isdir.json"))
        @test_throws ArgumentError export_model(joinpath(dir, "isdir"), ws)
        @test !isfile(joinpath(dir, "act.npz")) && !isfile(joinpath(dir, "act.json"))
    end
end

@testset "export_model: Knet RNN" begin
    # Lengths from Knet's getRNNParamsSize, written out: gates * (H*in + H*H + 2H) per slot.
    n_gru = 3 * (5 * 4 + 5 * 5 + 2 * 5)                                   # GRU(4, 5): 165
    n_bilstm = 2 * 4 * (3 * 2 + 3 * 3 + 6) + 2 * 4 * (3 * 6 + 3 * 3 + 6)  # LSTM(2, 3), 2 layers, bi
    gru = TRNN(FakeParam(fixture(Float32, 1, 1, n_gru)), 4, 5; mode=3, dropout=0.5)
    h = fixture(Float64, 3, 2, 4)
    bilstm = TRNN(fixture(Float64, 1, 1, n_bilstm), 2, 3; h=h, c=0, layers=2, bi=true)
    dense = TDense(fixture(Float32, 2, 5), fixture(Float32, 2), identity, 0)
    mktempdir() do dir
        doc, arrays = read_export(export_model(joinpath(dir, "chain"), TChain((gru, dense))))
        @test doc["version"] == 2
        @test [l["kind"] for l in doc["layers"]] == ["rnn", "dense"]
        l = doc["layers"][1]
        @test l["julia_type"] == "TRNN" && l["dropout"] === nothing
        @test l["rnn"] == Dict("inputSize" => 4, "hiddenSize" => 5, "rnnType" => "gru",
                               "numLayers" => 1, "bidirectional" => false, "skipInput" => false,
                               "dropout" => 0.5, "h" => "nothing", "c" => "nothing")
        @test collect(keys(l["params"])) == ["w"]
        @test l["params"]["w"]["size"] == [1, 1, n_gru] && l["params"]["w"]["eltype"] == "Float32"
        @test arrays["layer1.w"] == gru.w.value

        # A struct holding the RNN among its layers, in field order; pdrop skipped.
        doc, arrays = read_export(export_model(joinpath(dir, "fields"),
                                               TSeqModel(bilstm, TDense(fixture(Float64, 2, 6), fixture(Float64, 2), identity, 0), 0.3)))
        @test doc["version"] == 2 && [l["kind"] for l in doc["layers"]] == ["rnn", "dense"]
        r = doc["layers"][1]["rnn"]
        @test (r["rnnType"], r["numLayers"], r["bidirectional"], r["h"], r["c"]) == ("lstm", 2, true, "array", "zero")
        @test sort(collect(keys(doc["layers"][1]["params"]))) == ["h", "w"]
        @test arrays["layer1.h"] == h && arrays["layer1.w"] == bilstm.w

        # Models without an RNN stay version 1.
        doc, _ = read_export(export_model(joinpath(dir, "plain"), TChain((dense,))))
        @test doc["version"] == 1

        # Refused, naming the problem; nothing written.
        function bad(name, m)
            @test_throws ArgumentError export_model(joinpath(dir, name), m)
            @test !isfile(joinpath(dir, "$name.json")) && !isfile(joinpath(dir, "$name.npz"))
        end
        bad("short", TChain((TRNN(fixture(Float32, 1, 1, n_gru - 1), 4, 5; mode=3),)))
        bad("half", TChain((TRNN(fixture(Float16, 1, 1, n_gru), 4, 5; mode=3),)))
        bad("mode", TChain((TRNN(fixture(Float32, 1, 1, n_gru), 4, 5; mode=4),)))
        bad("hsize", TChain((TRNN(fixture(Float32, 1, 1, n_gru), 4, 5; mode=3, h=zeros(Float32, 4, 2, 1)),)))
        bad("htype", TChain((TRNN(fixture(Float32, 1, 1, n_gru), 4, 5; mode=3, h=zeros(Float64, 5, 2, 1)),)))
        bad("hnum", TChain((TRNN(fixture(Float32, 1, 1, n_gru), 4, 5; mode=3, h=1),)))
        bad("bare", TBareModel(fixture(Float32, 4, 10), gru))
        msg = try
            export_model(joinpath(dir, "bare2"), TBareModel(fixture(Float32, 4, 10), gru)); ""
        catch e
            sprint(showerror, e)
        end
        @test occursin("field input of TBareModel holds a bare array of size (4, 10)", msg)
    end
    knet = PortingKnet.knet_module()
    if knet !== nothing   # the real thing: Knet.RNN's fields and r.w as Knet packs them
        r = Base.invokelatest(knet.RNN, 4, 5; rnnType=:gru, bidirectional=true)
        mktempdir() do dir
            doc, arrays = read_export(export_model(joinpath(dir, "knet"), TChain((r,))))
            l = doc["layers"][1]
            @test l["rnn"]["rnnType"] == "gru" && l["rnn"]["bidirectional"] == true
            @test vec(arrays["layer1.w"]) == vec(r.w.value)    # r.w is a Param
        end
    end
end


# ---- Layers21 and Ops20 batchnorm stand-ins --------------------------------------------------
# Field for field as Knet.jl v1.4.10 defines them (src/ops20/batchnorm.jl, src/layers21/*.jl):
# export_model recognises these types by their fields, so they stand in for Knet's where Knet is
# not installed (the cuDNN-only fields hold `nothing`).
mutable struct TBNMoments; momentum::AbstractFloat; mean; var; meaninit; varinit; end
mutable struct L21Conv
    w; wdims::Dims; winit; bias; bdims::Dims; binit
    padding; stride; dilation; groups::Integer; crosscorrelation::Bool; channelmajor::Bool
    activation; normalization; convDesc; alpha::Real; beta::Real
end
L21Conv(w; bias=nothing, padding=0, stride=1, dilation=1, groups=1, crosscorrelation=true,
        activation=nothing, normalization=nothing, alpha=1) =
    L21Conv(w, size(w), nothing, bias, ntuple(i -> i == ndims(w) - 1 ? size(w, ndims(w)) : 1, ndims(w)),
            nothing, padding, stride, dilation, groups, crosscorrelation, false, activation,
            normalization, nothing, alpha, 0)
mutable struct L21BatchNorm
    dims; mean; var; bias; scale; use_estimates; update::Float64; epsilon::Float64
    format; mode; savedMean; savedVar; workspace; reserveSpace; dx; dscale; dbias
end
L21BatchNorm(mean, var, bias, scale; epsilon=1e-5, update=0.1, use_estimates=nothing, dims=nothing) =
    L21BatchNorm(dims, mean, var, bias, scale, use_estimates, update, epsilon, nothing, nothing,
                 nothing, nothing, nothing, nothing, nothing, nothing, nothing)
mutable struct L21Linear; w; bias; winit; binit; inputsize; outputsize; activation; dropout; end
L21Linear(w; bias=nothing, activation=nothing, dropout=0) =
    L21Linear(w, bias, nothing, nothing, size(w, 2), size(w, 1), activation, dropout)
struct Add
    blocks; activation
    Add(blocks...; activation=nothing) = new(Any[blocks...], activation)   # as Knet's
end
struct Block; layers; name; end
struct Op; f; args; kwargs; end
Op(f, args...; kwargs...) = Op(f, args, kwargs)
mutable struct ZeroPad; padding; xsize; y; end
struct Embed; w; end
# A tutorial layer with Ops20 batchnorm, as Knet's cifar10-cnn conv_layer computes it.
struct TConvBN; w; f; m; bnparams; end
struct TDeconv; w; b; f; op; stride; padding; end
deconv4(w, x; o...) = PortingKnet.deconv4(w, x; o...)   # named deconv4, as Knet's
module Ops21; pool(x; o...) = x; end   # a pool defined in a module named Ops21, as Knet's
softmax(x; dims=:) = exp.(x) ./ sum(exp.(x); dims=dims)   # named softmax, as Knet's

"""Knet's inference batchnorm (ops20/batchnorm.jl), written here from its definition."""
knet_bn(x, mean, var, g, b, eps) = g .* (x .- mean) ./ sqrt.(var .+ eltype(x)(eps)) .+ b

@testset "export_model: batchnorm, Layers21, graphs, structure files" begin
    C = 4
    mom = TBNMoments(0.1, fixture(Float32, 1, 1, C, 1), 1 .+ abs.(fixture(Float32, 1, 1, C, 1)), nothing, nothing)
    bnp = fixture(Float32, 2C)
    mktempdir() do dir
        # Ops20 batchnorm in a tutorial struct: conv (no bias), batchnorm, relu, pool.
        l = TConvBN(fixture(Float32, 3, 3, 2, C), relu, mom, bnp)
        doc, arrays = read_export(export_model(joinpath(dir, "bn"), TChain((l,))))
        @test doc["version"] == 2
        @test [x["kind"] for x in doc["layers"]] == ["conv", "batchnorm", "activation", "pool"]
        @test !haskey(doc["layers"][1]["params"], "b")
        bn = doc["layers"][2]
        @test bn["eps"] == 1e-5 && bn["momentum"] == 0.1
        @test arrays[bn["params"]["mean"]["key"]] == mom.mean
        @test arrays[bn["params"]["var"]["key"]] == mom.var
        @test arrays[bn["params"]["bnparams"]["key"]] == bnp
        x = fixture(Float32, 8, 8, 2, 3)
        y = PortingKnet.conv4(l.w, x)
        expected = PortingKnet.pool(relu.(knet_bn(y, mom.mean, mom.var,
                                                   reshape(bnp[1:C], 1, 1, C, 1), reshape(bnp[C+1:end], 1, 1, C, 1), 1e-5)))
        got = PortingKnet.pool(relu.(knet_bn(y, arrays["layer2.mean"], arrays["layer2.var"],
                                             reshape(arrays["layer2.bnparams"][1:C], 1, 1, C, 1),
                                             reshape(arrays["layer2.bnparams"][C+1:end], 1, 1, C, 1), bn["eps"])))
        @test got == expected
        # moments that never ran are refused
        @test_throws ArgumentError export_model(joinpath(dir, "nomoments"),
            TChain((TConvBN(l.w, relu, TBNMoments(0.1, nothing, nothing, nothing, nothing), bnp),)))
        @test_throws ArgumentError export_model(joinpath(dir, "badbnp"),
            TChain((TConvBN(l.w, relu, mom, fixture(Float32, C)),)))

        # Layers21: Conv with normalization and leaky relu, asymmetric padding, groups; Linear.
        b21 = L21BatchNorm(mom.mean, mom.var, fixture(Float32, 1, 1, C, 1), 1 .+ fixture(Float32, 1, 1, C, 1); epsilon=1e-3)
        conv = L21Conv(fixture(Float32, 3, 3, 2, C); bias=fixture(Float32, 1, 1, C, 1), padding=((0, 1), (1, 0)),
                       normalization=b21, activation=Op(relu; negative_slope=0.2))
        dw = L21Conv(fixture(Float32, 3, 3, 1, C); padding=1, groups=C, crosscorrelation=false, activation=relu)
        lin = L21Linear(fixture(Float32, 3, 3 * 3 * C); activation=identity)   # 8x8 -> 9x9 -> 7x7 -> 3x3
        model = Block(Any[conv, dw, Op(PortingKnet.pool; window=2), Op(PortingKnet.mat), lin,
                          Op(softmax; dims=1)], nothing)
        doc, arrays = read_export(export_model(joinpath(dir, "l21"), model))
        kinds = [x["kind"] for x in doc["layers"]]
        @test kinds == ["zeropad", "conv", "batchnorm", "activation", "conv", "pool", "mat", "dense", "activation"]
        @test doc["layers"][1]["padding"] == [[0, 1], [1, 0]]
        c1 = doc["layers"][2]
        @test c1["conv"]["mode"] == 1 && c1["conv"]["padding"] == [0, 0] && c1["activation"] == "identity"
        @test doc["layers"][3]["eps"] == 1e-3
        @test arrays["layer3.bnparams"] == vcat(vec(b21.scale), vec(b21.bias))   # scale first
        @test doc["layers"][4]["activation"] == "relu" && doc["layers"][4]["negative_slope"] == 0.2
        c2 = doc["layers"][5]
        @test c2["conv"]["mode"] == 0 && c2["conv"]["groups"] == C && c2["activation"] == "relu"
        @test !haskey(c2["params"], "b")          # Layers21 Conv: no bias unless given
        @test !haskey(doc["layers"][8]["params"], "b")
        @test doc["layers"][9]["activation"] == "softmax" && doc["layers"][9]["dims"] == 1

        # A residual block: Add(main, identity; activation=relu) after a conv.
        c0 = L21Conv(fixture(Float32, 3, 3, 2, C); padding=1)
        main = Block(Any[L21Conv(fixture(Float32, 3, 3, C, C); padding=1, normalization=b21, activation=relu),
                         L21Conv(fixture(Float32, 3, 3, C, C); padding=1, normalization=b21)], nothing)
        proj = L21Conv(fixture(Float32, 1, 1, C, C); normalization=b21)
        res = Block(Any[c0, Add(main, identity; activation=relu), Add(main, proj)], nothing)
        doc, _ = read_export(export_model(joinpath(dir, "res"), res))
        names = [x["name"] for x in doc["layers"]]
        add1 = doc["layers"][findfirst(x -> x["kind"] == "add", doc["layers"])]
        @test add1["inputs"] == ["layer6", "layer1"] && add1["activation"] == "relu"
        @test !haskey(doc["layers"][2], "input")          # it reads the layer before it
        add2 = doc["layers"][end]
        @test add2["kind"] == "add" && add2["activation"] == "identity"
        first2 = findfirst(==("layer8"), names)
        @test doc["layers"][first2]["kind"] == "conv" && !haskey(doc["layers"][first2], "input")
        proj_first = findfirst(x -> get(x, "input", nothing) == "layer7", doc["layers"])
        @test proj_first !== nothing && doc["layers"][proj_first]["conv"]["padding"] == [0, 0]
        @test add2["inputs"] == ["layer12", doc["layers"][proj_first+1]["name"]]

        # Op(reshape, ..., :) -> reshape with one sample's size; without the colon: refused.
        doc, _ = read_export(export_model(joinpath(dir, "reshape"), Block(Any[lin, Op(reshape, 1, 3, 1, :)], nothing)))
        @test doc["layers"][2]["kind"] == "reshape" && doc["layers"][2]["size"] == [1, 3, 1]
        @test_throws ArgumentError export_model(joinpath(dir, "reshape2"), Block(Any[lin, Op(reshape, 3, 2)], nothing))
        # Embed; deconv in a tutorial struct.
        doc, arrays = read_export(export_model(joinpath(dir, "emb"), TChain((Embed(fixture(Float32, 5, 11)),))))
        @test doc["layers"][1]["kind"] == "embed" && arrays["layer1.w"] == fixture(Float32, 5, 11)
        d = TDeconv(fixture(Float32, 4, 4, 3, 2), fixture(Float32, 1, 1, 3, 1), tanh, deconv4, 2, 1)
        doc, _ = read_export(export_model(joinpath(dir, "deconv"), TChain((d,))))
        @test doc["layers"][1]["kind"] == "deconv" && doc["layers"][1]["activation"] == "tanh"
        @test doc["layers"][1]["deconv"] == Dict("padding" => [1, 1], "stride" => [2, 2], "dilation" => [1, 1], "mode" => 0)

        # Functional model (Knet's cifar10-cnn): weights in w, moments in m, structure file.
        w = Any[fixture(Float32, 3, 3, 2, C), bnp, fixture(Float32, 3, 16 * C), fixture(Float32, 3)]
        m = Any[mom]
        structure = Dict("format" => "porting-knet-export", "version" => 2, "layers" => [
            Dict("kind" => "conv", "params" => Dict("w" => Dict("key" => "w/1")), "conv" => Dict("padding" => 1)),
            Dict("kind" => "batchnorm", "params" => Dict("mean" => Dict("key" => "m/1/mean"),
                 "var" => Dict("key" => "m/1/var"), "bnparams" => Dict("key" => "w/2", "size" => [2C])),
                 "eps" => 1e-5, "momentum" => 0.1),
            Dict("kind" => "activation", "activation" => "relu"),
            Dict("kind" => "pool", "pool" => Dict("window" => 2)),
            Dict("kind" => "mat"),
            Dict("kind" => "dense", "params" => Dict("w" => Dict("key" => "w/3"), "b" => Dict("key" => "w/4")))])
        path = joinpath(dir, "structure.json")
        write(path, JSON.json(structure))
        doc, arrays = read_export(export_model(joinpath(dir, "func"), (w=w, m=m); structure=path))
        @test doc["version"] == 2 && [x["kind"] for x in doc["layers"]] == ["conv", "batchnorm", "activation", "pool", "mat", "dense"]
        @test arrays["layer2.mean"] == mom.mean && arrays["layer2.bnparams"] == bnp && arrays["layer6.b"] == w[4]
        @test doc["layers"][1]["conv"] == Dict("padding" => 1)
        bad = deepcopy(structure); bad["layers"][1]["params"]["w"]["key"] = "w/9"
        @test_throws ArgumentError export_model(joinpath(dir, "bad"), (w=w, m=m); structure=bad)
        bad = deepcopy(structure); bad["layers"][2]["params"]["bnparams"]["size"] = [C]
        @test_throws ArgumentError export_model(joinpath(dir, "bad"), (w=w, m=m); structure=bad)
        @test !isfile(joinpath(dir, "bad.json")) && !isfile(joinpath(dir, "bad.npz"))

        # Refusals: bare softmax Op, logsoftmax, per-activation BatchNorm, batch-statistics BatchNorm.
        @test_throws ArgumentError export_model(joinpath(dir, "r1"), Block(Any[lin, Op(softmax)], nothing))
        @test_throws ArgumentError export_model(joinpath(dir, "r2"),
            Block(Any[c0, L21BatchNorm(mom.mean, mom.var, b21.bias, b21.scale; use_estimates=false)], nothing))
        @test_throws ArgumentError export_model(joinpath(dir, "r4"),       # Ops21 global pooling
            Block(Any[c0, Op(Ops21.pool; window=typemax(Int))], nothing))
        doc, _ = read_export(export_model(joinpath(dir, "ops21pool"), Block(Any[c0, Op(Ops21.pool; window=3)], nothing)))
        @test doc["layers"][2]["pool"] == Dict("window" => [3, 3], "padding" => [0, 0], "stride" => [3, 3], "mode" => 0)
        @test_throws ArgumentError export_model(joinpath(dir, "r3"),
            Block(Any[c0, L21BatchNorm(mom.mean, mom.var, b21.bias, b21.scale; dims=(4,))], nothing))
    end
end

@testset "import_model and flux_model: the export pair back into a model" begin
    model = TChain((TConv(FakeParam(fixture(Float32, 5, 5, 1, 4)), fixture(Float32, 1, 1, 4, 1), relu, 0),
                    TConv(fixture(Float32, 3, 3, 4, 6), fixture(Float32, 1, 1, 6, 1), relu, 0.25),
                    TDense(FakeParam(fixture(Float32, 10, 72)), fixture(Float32, 10), relu, 0.5),
                    TDense(fixture(Float32, 3, 10), fixture(Float32, 3), identity, 0)))
    x = fixture(Float32, 20, 24, 1, 2)
    mktempdir() do dir
        files = export_model(joinpath(dir, "lenet"), model)
        m = import_model(files.json)
        @test m isa PortingKnet.ImportedModel && length(m.layers) == 4
        @test m(x) == model(x)                       # the same functions on the same arrays
        @test sort(collect(keys(m(x; all=true)))) == sort(["input", "layer1", "layer2", "layer3", "layer4"])
        @test_throws ArgumentError import_model(joinpath(dir, "missing"))
        write(joinpath(dir, "bad.json"), "{\"format\": \"something else\"}")
        NPZ.npzwrite(joinpath(dir, "bad.npz"), Dict("a" => zeros(Float32, 2)))
        @test_throws ArgumentError import_model(joinpath(dir, "bad"))
        if Base.find_package("Flux") !== nothing && VERSION >= v"1.9"
            @eval import Flux
            chain = Base.invokelatest(flux_model, files.json)
            y = Base.invokelatest(chain, x)
            @test size(y) == size(model(x)) && isapprox(y, model(x); rtol=1f-5)
        else
            @test_throws ArgumentError flux_model(files.json)
        end
    end
end

@testset "import_model: upsample and pixelshuffle against NNlib's own functions" begin
    NNlib = PortingKnet.NNlib  # PortingKnet's own dependency
    x = fixture(Float32, 4, 3, 8, 2)
    layers = [Dict{String,Any}("name" => "up", "kind" => "upsample", "mode" => "bilinear", "scale" => [2, 2],
                               "size" => nothing, "align_corners" => true, "params" => Dict()),
              Dict{String,Any}("name" => "ps", "kind" => "pixelshuffle", "r" => 2, "params" => Dict()),
              Dict{String,Any}("name" => "near", "kind" => "upsample", "mode" => "nearest", "scale" => 2,
                               "size" => nothing, "align_corners" => true, "params" => Dict())]
    doc = Dict("format" => PortingKnet.EXPORT_FORMAT, "version" => 2, "layers" => layers)
    mktempdir() do dir
        write(joinpath(dir, "r.json"), JSON.json(doc))
        NPZ.npzwrite(joinpath(dir, "r.npz"), Dict("unused" => zeros(Float32, 1)))
        m = import_model(joinpath(dir, "r"))
        # Flux's Upsample(:bilinear) is NNlib's upsample_bilinear with its default align_corners
        want = NNlib.upsample_nearest(NNlib.pixel_shuffle(NNlib.upsample_bilinear(x, (2, 2)), 2), (2, 2))
        @test size(m(x)) == (16, 12, 2, 2)
        @test isapprox(m(x), want; rtol=1f-6)
    end
end

@testset "import_model and flux_model: embed and timedense" begin
    # Python's twins of these rules: porting.rnn.julia (tests/test_julia_import_rnn.py)
    mktempdir() do dir
        w = reshape(Float32.(1:12), 3, 4)          # (dim 3, vocab 4)
        v = reshape(Float32.(1:6), 2, 3)
        b = Float32[10, 20]
        entry(key, size) = Dict("key" => key, "size" => size, "eltype" => "Float32")
        layers = [Dict("name" => "emb", "kind" => "embed", "params" => Dict("w" => entry("emb.w", [3, 4]))),
                  Dict("name" => "td", "kind" => "timedense", "activation" => "identity",
                       "params" => Dict("w" => entry("td.w", [2, 3]), "b" => entry("td.b", [2])))]
        doc = Dict("format" => PortingKnet.EXPORT_FORMAT, "version" => 2, "name" => "seq", "layers" => layers)
        write(joinpath(dir, "seq.json"), JSON.json(doc))
        NPZ.npzwrite(joinpath(dir, "seq.npz"), Dict("emb.w" => w, "td.w" => v, "td.b" => b))
        m = import_model(joinpath(dir, "seq"))
        x = [1 4; 2 3; 3 1]                        # (T = 3, B = 2) 1-based tokens
        y = m(x)
        @test size(y) == (3, 2, 2)                 # (T, V, B)
        @test all(y[t, :, j] == v * w[:, x[t, j]] .+ b for t in 1:3, j in 1:2)
        @test_throws ArgumentError m([0 1; 1 1])   # token 0: Knet indexes from 1
        if Base.find_package("Flux") !== nothing && VERSION >= v"1.9"
            @eval import Flux
            f = Base.invokelatest(flux_model, joinpath(dir, "seq"))
            @test Base.invokelatest(f, x) ≈ y
        end
    end
end

end # @testset "PortingKnet"
