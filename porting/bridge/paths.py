"""Where the Julia side of `porting` lives on disk.

The Julia package `PortingKnet` (the repository's top-level `julia/` folder) is shipped inside the
wheel as package data, `porting/_julia`; in a source checkout it is the `julia/` folder next to
the `porting/` package. `PORTING_JULIA_PACKAGE` (or the `explicit` argument) points elsewhere.

>>> julia_source_file().name  # doctest: +SKIP
'PortingKnet.jl'
"""

from __future__ import annotations

import os
from pathlib import Path

from porting import settings
from porting.errors import PortingError

ENV_PACKAGE = "PORTING_JULIA_PACKAGE"
MODULE_NAME = "PortingKnet"
SOURCE = Path("src") / f"{MODULE_NAME}.jl"

_PORTING_DIR = Path(__file__).resolve().parent.parent


def installed_package_dir() -> Path:
    """`porting/_julia`: where a wheel puts the Julia package (pyproject force-include)."""
    return _PORTING_DIR / "_julia"


def checkout_package_dir() -> Path:
    """`julia/` next to the `porting/` package in a source checkout."""
    return _PORTING_DIR.parent / "julia"


def juliapkg_json() -> Path:
    """The `juliapkg.json` shipped in the `porting` package (read by juliapkg, see doctor)."""
    return _PORTING_DIR / "juliapkg.json"


def julia_package_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The folder holding `src/PortingKnet.jl`, from (in order) `explicit`,
    `PORTING_JULIA_PACKAGE`, the installed package data, the checkout's `julia/` folder.

    An explicit setting that does not hold the package is an error quoting it; it is never
    skipped in favour of another copy.
    """
    for value, where in (
        (explicit, "julia_package argument"),
        (settings.text(ENV_PACKAGE), ENV_PACKAGE),
    ):
        if value is None or value == "":
            continue
        path = Path(value).expanduser()
        if not (path / SOURCE).is_file():
            raise PortingError(
                f"{where}={value}: no {SOURCE.as_posix()} there; expected the folder of the "
                f"{MODULE_NAME} Julia package (the repository's julia/ folder)"
            )
        return path.resolve()
    looked = []
    for path in (installed_package_dir(), checkout_package_dir()):
        if (path / SOURCE).is_file():
            return path
        looked.append(str(path / SOURCE))
    raise PortingError(
        f"the {MODULE_NAME} Julia package was not found (looked for {' and '.join(looked)}); "
        f"reinstall porting, or set {ENV_PACKAGE} to the repository's julia/ folder"
    )


def julia_source_file(explicit: str | os.PathLike | None = None) -> Path:
    """`.../src/PortingKnet.jl`, the file the Julia backends `include`."""
    return julia_package_dir(explicit) / SOURCE
