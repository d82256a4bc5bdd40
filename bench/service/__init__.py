"""Service benchmarks (issue 5): orchestration at scale and aggregation against the megadetector peer."""
