"""The measurements of `benchmarks/gpu_suite.py`, one module each (training, capacity, embedding, FAISS,
serving), plus what they share: the device's description and peak FLOP/s, and the suite's sizes."""
