"""Serving: the OpenAI-compatible API and the Gradio page around a bundle, in vLLM's manner.

- `engines/`: what generates (vLLM in process, transformers, a remote `vllm serve`); no HTTP;
- `protocol`: the wire format (OpenAI's request, response, chunk and error objects, rrg's fields)
  and the kinds of error, each with its OpenAI error type;
- `completions`: the handler, which returns protocol values or raises those errors; no HTTP;
  `front` (micro-batched vision, retrieval and fusion) and `limits` (slots, queue) serve it;
- `router`: the HTTP routes and exception handlers; `errors`: the one table of statuses and the
  last-resort 500; `guard`: the door (refused paths, API key, body limit and deadline);
  `metrics`: /metrics and its middleware; `app`: assembles them with the page (`ui`, `heatmap`);
- `server`, `http_server`, `launch`: `rrg serve`, uvicorn with a header deadline, a child server.
"""
