"""Sweeps and reports: the papers' grids as Ray Tune trials, and their tables and figures.

:mod:`.spec` (the TOML grid, validated), :mod:`.trial` (one trial: resumable training, publish
once), :mod:`.runner` (Ray Tune), :mod:`.report` and :mod:`.tables` (Table 1, standardized
scores, curves, similarity), :mod:`.paper` (the papers' own numbers, as shipped data).
Ray is optional (``pip install 'spp[sweep]'``); nothing here imports it at module level.
"""
