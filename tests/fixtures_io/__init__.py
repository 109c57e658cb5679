"""Writers that produce files the way Julia packages lay them out (see julia_like.py)."""
