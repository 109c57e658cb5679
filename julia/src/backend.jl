# Which library computes: Knet when the active environment can load it, else NNlib.
# Knet is never a dependency of this package; it is looked up by its registered UUID.

const KNET_ID = Base.PkgId(Base.UUID("1902f260-5fb4-5aff-8c31-6271790ab950"), "Knet")
const AUTOGRAD_ID = Base.PkgId(Base.UUID("6710c13c-97f1-543f-91c5-74e8f7d95b35"), "AutoGrad")

mutable struct KnetState
    tried::Bool                     # a load was attempted (it is attempted once per session)
    mod::Union{Module,Nothing}      # Knet, when it loaded
    error::Union{String,Nothing}    # why Knet is not available
    wanted::Bool                    # false after select_backend!("julia-nnlib")
end

const KNET = KnetState(false, nothing, nothing, true)
const KNET_LOCK = ReentrantLock()

"""
    knet_module() -> Union{Module,Nothing}

Knet, loaded on first use when the active environment has it; `nothing` when it is absent, fails
to load, or `select_backend!("julia-nnlib")` is in effect. Never installs anything.
"""
function knet_module()
    KNET.wanted || return nothing
    lock(KNET_LOCK) do
        if !KNET.tried
            KNET.tried = true
            KNET.mod, KNET.error = _load_knet()
        end
    end
    return KNET.mod
end

function _load_knet()
    if Base.locate_package(KNET_ID) === nothing
        msg = "Knet is not installed in the active Julia environment ($(Base.active_project())); " *
              "Knet 1.4.10 installs on Julia <= 1.9 only (this is Julia $(VERSION)): " *
              "there run `import Pkg; Pkg.add(name=\"Knet\", version=\"1.4.10\")`"
        return nothing, msg
    end
    try
        return Base.require(KNET_ID), nothing
    catch err
        return nothing, "Knet is installed but failed to load: " * sprint(showerror, err)
    end
end

"""
    backend_name() -> String

`"julia"` when `conv4` & co. run Knet itself, `"julia-nnlib"` when they run NNlib with Knet's
CPU arithmetic (no Knet in this environment, or `select_backend!("julia-nnlib")`).
"""
backend_name() = knet_module() === nothing ? "julia-nnlib" : "julia"

"""
    select_backend!(name) -> String

`"auto"` (Knet when it loads, else NNlib; the default), `"julia"` (Knet, or an error saying why
it is unavailable) or `"julia-nnlib"` (NNlib even when Knet is present). Returns `backend_name()`.
"""
function select_backend!(name::AbstractString)
    if name == "julia-nnlib"
        KNET.wanted = false
    elseif name == "auto" || name == "julia"
        KNET.wanted = true
        if name == "julia" && knet_module() === nothing
            throw(ArgumentError("backend \"julia\" needs Knet: $(KNET.error)"))
        end
    else
        throw(ArgumentError("backend=$(repr(name)): expected \"auto\", \"julia\" or \"julia-nnlib\""))
    end
    return backend_name()
end

"""
    versions() -> Dict{String,Any}

What runs, for reports: `"julia"`, `"knet"` (or `nothing`), `"nnlib"`, `"porting_knet"`
(version strings), `"backend"` (`backend_name()`) and `"knet_error"` (why Knet is not used, or
`nothing`). Loads Knet if the environment has it.
"""
function versions()
    knet = knet_module()
    reason = KNET.wanted ? KNET.error : "Knet not used: select_backend!(\"julia-nnlib\") is in effect"
    return Dict{String,Any}(
        "julia" => string(VERSION),
        "knet" => knet === nothing ? nothing : package_version(knet),
        "nnlib" => package_version(NNlib),
        "porting_knet" => package_version(@__MODULE__),
        "backend" => backend_name(),
        "knet_error" => knet === nothing ? reason : nothing,
    )
end

"""
    package_version(mod) -> Union{String,Nothing}

The version of the package that defines `mod`: `pkgversion` on Julia >= 1.9; before that, the
`version` entry of the package's own Project.toml (which is what `pkgversion` reads).
"""
function package_version(mod::Module)
    v = isdefined(Base, :pkgversion) ? Base.pkgversion(mod) : _project_version(mod)
    return v === nothing ? nothing : string(v)
end

function _project_version(mod::Module)
    dir = pkgdir(mod)
    dir === nothing && return nothing
    for name in ("JuliaProject.toml", "Project.toml")
        file = joinpath(dir, name)
        if isfile(file)
            toml = Base.require(TOML_ID)          # a standard library, by UUID (Julia < 1.9 only)
            v = get(Base.invokelatest(toml.parsefile, file), "version", nothing)
            return v === nothing ? nothing : VersionNumber(v)
        end
    end
    return nothing
end

_loaded_module(id::Base.PkgId) = Base.root_module_exists(id) ? Base.root_module(id) : nothing

"""
    _call_latest(mod, name, args...; kwargs...)

`mod.name(args...; kwargs...)`, looked up and called in the latest world: Knet may have been
loaded during this very call, after the caller was compiled.
"""
_call_latest(mod::Module, name::Symbol, args...; kwargs...) =
    Base.invokelatest(_call_now, mod, name, args...; kwargs...)
_call_now(mod::Module, name::Symbol, args...; kwargs...) = getfield(mod, name)(args...; kwargs...)
