"""Tools around the networks: benchmarks."""
