"""Serving: generation engines, the OpenAI-compatible API, the Gradio page."""
