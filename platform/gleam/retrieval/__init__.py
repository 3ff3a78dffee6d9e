"""Measuring retrieval, below every job that retrieves: ranking metrics, embedding spread, exact search.

Depends on numpy and FAISS only, so training validation, index builds, evaluation and the synthetic
world's baseline all score the same way without importing each other.
"""
