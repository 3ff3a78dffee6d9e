"""Index stage: satellite embeddings -> a validated, versioned FAISS index (DESIGN.md section 5)."""
