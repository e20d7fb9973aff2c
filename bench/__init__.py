"""pamfr's benchmark: see bench/README.md."""
