"""Calibration of a SUMO scenario's demand to observed counts: ``python -m twins calibrate``.

    python -m twins calibrate scenario=sumo scenario.sumocfg=PATH observed.counts=COUNTS.csv \\
        [calibrate.iterations=4 calibrate.ensemble=16 calibrate.method=em hydra.run.dir=...]

The unknowns are route flows per interval (:mod:`.demand`); the twin runs candidate demands as worlds of one
batch and measures which counts each route's vehicles make (:mod:`.measure`); a Poisson maximum-likelihood
(EM) or least-squares fit (:mod:`.fit`) updates the flows, and the loop repeats; an ensemble of bootstrap
refits carries the uncertainty. The run folder holds ``calibration.json``, ``fit.parquet``,
``demand.parquet``, ``ensemble.parquet``, ``figures/calibration.png``, ``calibrated.rou.xml`` and
``calibrated.sumocfg`` (:mod:`.run`). ``scenario=sumo scenario.sumocfg=RUN/calibrated.sumocfg
scenario.demand=calibrated`` then draws each replication's demand from the ensemble (:mod:`.ensemble`).
"""
