"""Retrieval: the dual encoder, the hyperbolic retriever and its FAISS index, retrieval metrics."""
