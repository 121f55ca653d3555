"""The trivial apps the adapter benchmarks serve, bare and with backend_kit."""
