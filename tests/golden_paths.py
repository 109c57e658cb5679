"""Where the data written by other projects lives (`shared/golden`, never copied into this
repository): `PORTING_GOLDEN_DIR`, else `shared/golden` beside the checkout (as CI lays it
out), else this workplace's `/work/shared/golden`. Tests skip with the reason when absent."""

from __future__ import annotations

import os
from pathlib import Path

SEARCHED = "PORTING_GOLDEN_DIR, <repo>/../shared/golden, /work/shared/golden"


def golden_dir(needs: str = "") -> Path | None:
    """The first candidate folder holding `needs` (a file or folder inside it), or None."""
    env = os.environ.get("PORTING_GOLDEN_DIR")
    for cand in (
        Path(env) if env else None,
        Path(__file__).resolve().parents[1].parent / "shared" / "golden",
        Path("/work/shared/golden"),
    ):
        if cand is not None and (cand / needs).exists():
            return cand
    return None
