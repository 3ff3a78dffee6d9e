"""Training stage: GLEAM-C phases on Ray Train (mixture, per-worker loop, phase wiring)."""
