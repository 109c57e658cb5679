"""How to install QKeras here without replacing the installed TensorFlow wheel."""

from __future__ import annotations

__all__ = ["install_hint"]


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def install_hint() -> str:
    """The command that installs QKeras in this environment without replacing its TensorFlow
    wheel: `porting[quant]` pulls `tensorflow` (through tf_keras), right only where the
    `tensorflow` wheel is the one installed."""
    cpu, full = _dist_version("tensorflow-cpu"), _dist_version("tensorflow")
    if cpu and not full:
        minor = ".".join(cpu.split(".")[:2])
        return (
            f'pip install --no-deps qkeras==0.9.0 "tf_keras~={minor}.0" '
            "tensorflow-model-optimization && pip install networkx keras-tuner scikit-learn "
            "tqdm pyparser dm-tree mock (tensorflow-cpu is installed: 'porting[quant]' would "
            "pull the full tensorflow wheel next to it, through tf_keras)"
        )
    if full:
        return "pip install 'porting[quant]' (qkeras and the tf_keras matching TensorFlow)"
    return (
        "first TensorFlow (pip install 'porting[tf-cpu]'), then QKeras as README "
        '"Quantized layers" says'
    )
