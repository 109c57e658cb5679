# conv4, deconv4, pool, mat: Knet's functions when Knet is loaded, else NNlib with the exact
# calls Knet 1.4.10's CPU path makes (src/ops20/conv.jl there; docs/knet.md#conv4, #deconv4,
# #pool, #mat and #nnlib-versions).

"""
    _spatial(value, nd, name) -> NTuple{nd,Int}

Knet's scalar-or-per-dimension keywords (`padding`, `stride`, ...) as a tuple, in Julia's
spatial order `(X1, ..., Xd)`. Knet itself accepts an `Int` or a `Tuple` (not a `Vector`).
"""
function _spatial(value, nd::Int, name::Symbol)
    value isa Integer && !(value isa Bool) && return ntuple(_ -> Int(value), nd)
    if (value isa Tuple || value isa AbstractVector) && length(value) == nd &&
       all(v -> v isa Integer && !(v isa Bool), value)
        return ntuple(i -> Int(value[i]), nd)
    end
    throw(ArgumentError("$name=$(repr(value)): expected an integer or a tuple of $nd integers " *
                        "(one per spatial dimension)"))
end

_scale!(y, alpha) = alpha == 1 ? y : lmul!(alpha, y)   # exactly Knet's `alpha == 1 ? y : lmul!(alpha, y)`

function _check_data(x, op::Symbol, name::Symbol=:x)
    x isa AbstractArray ||
        throw(ArgumentError("$op: $name must be an array, got $(typeof(x))"))
    eltype(x) <: Union{Float32,Float64} ||
        throw(ArgumentError("$op: $name has element type $(eltype(x)) (size $(size(x))); " *
                            "expected Float32 or Float64"))
    3 <= ndims(x) <= 5 ||
        throw(DimensionMismatch("$op: $name has $(ndims(x)) dimensions (size $(size(x))); expected " *
                                "3, 4 or 5: (spatial..., channels, batch)"))
    return nothing
end

function _conv_geometry(op::Symbol, w, x, padding, stride, dilation, mode)
    _check_data(x, op)
    _check_data(w, op, :w)
    ndims(w) == ndims(x) ||
        throw(DimensionMismatch("$op: w has $(ndims(w)) dimensions (size $(size(w))) but x has " *
                                "$(ndims(x)) (size $(size(x))); expected the same number"))
    eltype(w) == eltype(x) ||
        throw(ArgumentError("$op: w is $(eltype(w)) but x is $(eltype(x)); Knet needs one element type"))
    mode in (0, 1) ||
        throw(ArgumentError("$op: mode=$(repr(mode)): expected 0 (convolution: the kernel rotated " *
                            "180 degrees) or 1 (cross-correlation)"))
    nd = ndims(x) - 2
    return (padding = _spatial(padding, nd, :padding), stride = _spatial(stride, nd, :stride),
            dilation = _spatial(dilation, nd, :dilation), mode = Int(mode))
end

"""
    _as_array(x) -> Array

`x` itself when it is an `Array`; a zero-copy `Array` over its memory when `x` is column-major
contiguous (e.g. a Fortran-ordered NumPy array behind PythonCall's `PyArray`), in which case
the caller must `GC.@preserve x` while using the result; else a copy.
"""
_as_array(x::Array) = x
function _as_array(x::AbstractArray{T}) where {T}
    if isbitstype(T) && _is_column_major(x)
        p = try
            pointer(x)
        catch
            nothing
        end
        p isa Ptr{T} && p != C_NULL && return unsafe_wrap(Array, p, size(x))
    end
    return Array(x)
end

function _is_column_major(x::AbstractArray)
    st = try
        strides(x)
    catch
        return false
    end
    expected = 1
    for (n, s) in zip(size(x), st)
        (n == 1 || s == expected) || return false
        expected *= n
    end
    return true
end

"""
    conv4(w, x; padding=0, stride=1, dilation=1, mode=0, alpha=1)

Knet's `conv4`: `w` is `(W1, ..., Wd, Cin, Cout)`, `x` is `(X1, ..., Xd, Cin, N)`, the result
`(Y1, ..., Yd, Cout, N)` with `Yi = 1 + fld(Xi + 2 padding[i] - ((Wi - 1) dilation[i] + 1), stride[i])`.
`mode=0` is true convolution (kernel rotated 180 degrees), `mode=1` cross-correlation.
Padding is symmetric. Without Knet: `NNlib.conv` with `DenseConvDims(x, w; flipkernel = mode != 0)`,
then `lmul!(alpha, y)`, as Knet's CPU path does (docs/knet.md#conv4, #flip, #conv-size).

```julia
julia> size(PortingKnet.conv4(ones(3, 3, 2, 4), ones(8, 6, 2, 5); padding=1))
(8, 6, 4, 5)
```
"""
function conv4(w, x; padding=0, stride=1, dilation=1, mode=0, alpha=1)
    g = _conv_geometry(:conv4, w, x, padding, stride, dilation, mode)
    knet = knet_module()
    y = GC.@preserve w x begin
        W, X = _as_array(w), _as_array(x)
        if knet === nothing
            cdims = NNlib.DenseConvDims(X, W; stride=g.stride, padding=g.padding,
                                        dilation=g.dilation, flipkernel=(g.mode != 0))
            _scale!(NNlib.conv(X, W, cdims), alpha)
        else
            _call_latest(knet, :conv4, W, X; g..., alpha=alpha)
        end
    end
    return y
end

"""
    deconv4(w, x; padding=0, stride=1, dilation=1, mode=0, alpha=1)

Knet's `deconv4`, the transposed convolution: the gradient of `conv4(w, ·)` with respect to its
input, evaluated at `x`. `w` is `(W1, ..., Wd, Cy, Cx)`, `x` is `(X1, ..., Xd, Cx, N)`, the result
`(Y1, ..., Yd, Cy, N)` with `Yi = (Xi - 1) stride[i] + (Wi - 1) dilation[i] + 1 - 2 padding[i]`.
Same flip rule as `conv4`. Without Knet: `NNlib.∇conv_data` with the `DenseConvDims` of that
convolution, then `lmul!(alpha, y)` (docs/knet.md#deconv4).
"""
function deconv4(w, x; padding=0, stride=1, dilation=1, mode=0, alpha=1)
    g = _conv_geometry(:deconv4, w, x, padding, stride, dilation, mode)
    nd = ndims(x) - 2
    size(x, nd + 1) == size(w, nd + 2) ||
        throw(DimensionMismatch("deconv4: x has $(size(x, nd + 1)) channels but w (size $(size(w))) " *
                                "expects $(size(w, nd + 2)) (its last dimension)"))
    ysize = ntuple(ndims(x)) do i
        i <= nd ? (size(x, i) - 1) * g.stride[i] + (size(w, i) - 1) * g.dilation[i] + 1 - 2 * g.padding[i] :
        i == nd + 1 ? size(w, nd + 1) : size(x, ndims(x))
    end
    all(>(0), ysize) ||
        throw(ArgumentError("deconv4: padding $(g.padding) is too large for x of size $(size(x)) " *
                            "and w of size $(size(w)): the result would have size $ysize"))
    knet = knet_module()
    y = GC.@preserve w x begin
        W, X = _as_array(w), _as_array(x)
        if knet === nothing
            cdims = NNlib.DenseConvDims(similar(X, ysize), W; stride=g.stride, padding=g.padding,
                                        dilation=g.dilation, flipkernel=(g.mode != 0))
            _scale!(NNlib.∇conv_data(X, W, cdims), alpha)
        else
            _call_latest(knet, :deconv4, W, X; g..., alpha=alpha)
        end
    end
    return y
end

# docs/knet.md#pool
const POOL_MODE2_WARNING = "pool(mode=2): Knet's CPU pool runs mode=1 instead (mean counting " *
    "padding as zeros), and so does this; cuDNN's mode 2 on a GPU excludes padding. " *
    "Pass mode=1 to say so and silence this warning."

"""
    pool(x; window=2, padding=0, stride=window, mode=0, alpha=1)

Knet's CPU `pool` on `x` of size `(X1, ..., Xd, C, N)`: `Yi = 1 + fld(Xi + 2 padding[i] - window[i], stride[i])`.
Modes 0 and 3: max (padded cells never win; NaN never wins). Mode 1: mean dividing by
`prod(window)`, so padding counts as zeros. Mode 2: Knet's CPU warns and runs mode 1 (cuDNN's
mode 2 on the GPU excludes padding); so does this function. `stride=nothing` means `window`.
(docs/knet.md#pool, #pool-nan)
"""
function pool(x; window=2, padding=0, stride=nothing, mode=0, alpha=1)
    _check_data(x, :pool)
    mode in 0:3 ||
        throw(ArgumentError("pool: mode=$(repr(mode)): expected 0 or 3 (max), 1 (mean counting " *
                            "padding) or 2 (run as 1 on the CPU)"))
    nd = ndims(x) - 2
    win = _spatial(window, nd, :window)
    pad = _spatial(padding, nd, :padding)
    str = stride === nothing ? win : _spatial(stride, nd, :stride)
    knet = knet_module()
    y = GC.@preserve x begin
        X = _as_array(x)
        if knet === nothing
            m = Int(mode)
            if m == 2
                @warn POOL_MODE2_WARNING maxlog=1
                m = 1
            end
            pdims = NNlib.PoolDims(X, win; padding=pad, stride=str)
            _scale!(m == 1 ? NNlib.meanpool(X, pdims) : NNlib.maxpool(X, pdims), alpha)
        else
            _call_latest(knet, :pool, X; window=win, padding=pad, stride=str, mode=Int(mode),
                         alpha=alpha)
        end
    end
    return y
end

"""
    mat(x; dims=ndims(x)-1)

Knet's `mat`: `reshape(x, prod(size(x)[1:dims]), :)`, in Julia's column-major order (one row
when `dims == 0`). For a conv output `(X1, X2, C, N)` the rows run X1 fastest, then X2, then C
(docs/knet.md#mat).
The result shares memory with `x` when `x` is an `Array`; other arrays are copied first.

```julia
julia> size(PortingKnet.mat(zeros(5, 4, 3, 2)))
(60, 2)
```
"""
function mat(x; dims::Integer=ndims(x) - 1)
    x isa AbstractArray || throw(ArgumentError("mat: x must be an array, got $(typeof(x))"))
    0 <= dims <= ndims(x) ||
        throw(ArgumentError("mat: dims=$dims: expected an integer from 0 to ndims(x) = $(ndims(x))"))
    X = x isa Array ? x : Array(x)
    knet = knet_module()
    knet === nothing || return _call_latest(knet, :mat, X; dims=Int(dims))
    return reshape(X, (dims > 0 ? prod(size(X, i) for i in 1:dims) : 1), :)
end
