"""Corpus stage: dataset adapters, the synthetic world and the Ray Data `prepare` job."""
