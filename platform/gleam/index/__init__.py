"""Index stage: satellite embeddings -> a validated, versioned FAISS index (docs/architecture.md, "Index")."""
