"""Policy evaluation, throughput benchmarks and experiment configs."""
