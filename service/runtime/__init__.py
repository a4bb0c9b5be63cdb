"""The running service: intake (listener rows), scoring workers, results, delivery, wiring."""
