"""Traffic twin: network, demand, kernels, Mesa model, SUMO import/export."""
