"""Engine core: worlds, noise, twin base class, outcomes, statistics, run folders."""
