"""`rrg-eval --server URL`: drafts through a running rrg server, as any OpenAI client would ask for them.

Each study's image file goes, base64-encoded, in the completions request's `image` field; greedy
decoding (temperature 0); `--concurrency N` requests in flight at once, so the server can batch
them. Finished drafts reach `on_done` as they arrive (in completion order), for the resumable
predictions.jsonl.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

import openai
from tqdm import tqdm

from eval.generation import OnDone, Study

API_KEY_ENV = "RRG_API_KEY"


class ServerError(ValueError):
    """The server refused or failed a request; names the study and what the server said."""


def client_for(url: str, api_key: str | None = None, timeout: float = 300.0) -> openai.OpenAI:
    """An OpenAI client for an rrg server's base URL (with or without the /v1)."""
    base = url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    key = api_key or os.environ.get(API_KEY_ENV) or "no-key"
    return openai.OpenAI(base_url=base, api_key=key, timeout=timeout, max_retries=2)


def served_model(client: openai.OpenAI) -> str:
    """The model to ask for: the server's LoRA adapter (the card with a parent, as vLLM lists adapters),
    else the first model it lists."""
    try:
        models = client.models.list().data
    except openai.APIConnectionError as error:
        raise ServerError(f"cannot reach the server at {client.base_url}: {error}") from error
    except openai.APIStatusError as error:
        raise ServerError(f"{client.base_url}models answered {error.status_code}: {error.message}") from error
    if not models:
        raise ServerError(f"the server at {client.base_url} lists no model")
    adapters = [m for m in models if (m.model_extra or {}).get("parent")]
    return (adapters or models)[0].id


def _draft(client: openai.OpenAI, model: str, study: Study, max_tokens: int) -> dict:
    image = base64.b64encode(study.image.read_bytes()).decode("ascii")
    try:
        completion = client.completions.create(
            model=model, prompt="", max_tokens=max_tokens, temperature=0, extra_body={"image": image}
        )
    except openai.APIStatusError as error:
        raise ServerError(f"study {study.id}: the server answered {error.status_code}: {error.message}") from error
    except openai.APIConnectionError as error:
        raise ServerError(f"study {study.id}: lost the server ({error})") from error
    rrg = (completion.model_extra or {}).get("rrg") or {}
    return {
        "id": study.id,
        "prediction": completion.choices[0].text,
        "reference": study.report,
        "neighbors": [n["id"] for n in rrg.get("neighbors", [])],
    }


def server_predictions(
    client: openai.OpenAI,
    model: str,
    studies: Sequence[Study],
    concurrency: int = 4,
    max_tokens: int = 128,
    progress: bool = True,
    on_done: OnDone | None = None,
    done_before: int = 0,
) -> list[dict]:
    """Greedy drafts of the studies from the server, `concurrency` requests at a time."""
    records = []
    with (
        tqdm(total=done_before + len(studies), initial=done_before, desc="drafting via server",
             unit="study", disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=concurrency) as pool,
    ):
        futures = [pool.submit(_draft, client, model, s, max_tokens) for s in studies]
        try:
            for future in as_completed(futures):
                record = future.result()
                if on_done is not None:
                    on_done([record])
                records.append(record)
                bar.update(1)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return records
