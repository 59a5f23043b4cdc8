"""A small OpenAI-compatible completions server around a real tiny transformers model (through ``FakeLLM``), for the
routing and failover math of the ``openai`` judge backend without vLLM. It answers the parts of vLLM's API the backend
uses: ``/v1/models``, ``/tokenize`` and ``/v1/completions`` with token-id prompts, ``stop``, ``logprob_token_ids``,
``echo`` + ``logprobs``, ``return_token_ids``, ``n``, and runtime LoRA adapters (``/v1/load_lora_adapter``,
``/v1/unload_lora_adapter``; ``lora=False`` answers 404 as an engine without them). The real engine is tested in
``test_openai_vllm.py``."""

import copy

from fake_vllm import FakeLLM, FakeParams


def stub_app(
    model, tokenizer, *, name="tiny", max_model_len=4096, label_ids=True, tokenize=None, fail=None, lora=True
):
    """The app; ``app.state.prompts`` records every prompt received. ``label_ids=False``: an engine that ignores
    ``logprob_token_ids``; ``tokenize``: a tokenizer for ``/tokenize`` (default ``tokenizer``); ``fail``: a
    callable returning an HTTP status to answer instead (e.g. 503 once an engine is 'dead'). ``app.state.models``
    maps each served name to its model; ``app.state.adapter_loads`` lists the adapter names loaded, in order."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI()
    app.state.models = {name: FakeLLM(model, tokenizer)}
    app.state.adapter_loads = []
    app.state.prompts = []
    vocab = model.config.vocab_size
    tokenize = tokenize or tokenizer

    @app.get("/v1/models")
    async def models():
        data = [{"id": n, "object": "model", "max_model_len": max_model_len} for n in app.state.models]
        return {"object": "list", "data": data}

    if lora:

        @app.post("/v1/load_lora_adapter")
        async def load_lora_adapter(request: Request):
            from peft import PeftModel

            body = await request.json()
            if body["lora_name"] in app.state.models:
                return JSONResponse({"error": {"message": "The lora adapter is already loaded."}}, status_code=400)
            merged = PeftModel.from_pretrained(copy.deepcopy(model), body["lora_path"]).merge_and_unload().eval()
            app.state.models[body["lora_name"]] = FakeLLM(merged, tokenizer)
            app.state.adapter_loads.append(body["lora_name"])
            return "Success"

        @app.post("/v1/unload_lora_adapter")
        async def unload_lora_adapter(request: Request):
            body = await request.json()
            if app.state.models.pop(body["lora_name"], None) is None:
                return JSONResponse({"error": {"message": "not loaded"}}, status_code=404)
            return "Success"

    @app.post("/tokenize")
    async def tokenize_endpoint(request: Request):
        body = await request.json()
        ids = tokenize.encode(body["prompt"], add_special_tokens=body.get("add_special_tokens", True))
        return {"tokens": ids, "count": len(ids), "max_model_len": max_model_len}

    @app.post("/v1/completions")
    async def completions(request: Request):
        if fail is not None and (status := fail()):
            return JSONResponse({"error": "engine down"}, status_code=status)
        body = await request.json()
        if body.get("model") not in app.state.models:
            return JSONResponse({"error": {"message": f"model {body.get('model')} does not exist"}}, status_code=404)
        ids = list(body["prompt"])
        if any(t >= vocab for t in ids):
            return JSONResponse({"error": {"message": "token id out of vocabulary"}}, status_code=400)
        app.state.prompts.append(ids)
        echo = bool(body.get("echo"))
        params = FakeParams(
            max_tokens=body.get("max_tokens", 16),
            temperature=body.get("temperature", 1.0),
            top_p=body.get("top_p", 1.0),
            seed=body.get("seed"),
            n=body.get("n", 1),
            stop=body.get("stop") or [],
            include_stop_str_in_output=body.get("include_stop_str_in_output", False),
            skip_special_tokens=body.get("skip_special_tokens", True),
            logprob_token_ids=(body.get("logprob_token_ids") if label_ids else None),
            prompt_logprobs=0 if echo else None,
        )
        out = app.state.models[body["model"]].generate([{"prompt_token_ids": ids}], [params])[0]
        choices = []
        for i, o in enumerate(out.outputs):
            logprobs = None
            if body.get("logprobs") is not None:
                top = [{f"token_id:{t}": v.logprob for t, v in step.items()} for step in (o.logprobs or [])]
                tokens = o.token_ids
                token_logprobs = [None] * len(tokens)
                if echo:
                    prompt_lp = [None] + [out.prompt_logprobs[k][ids[k]].logprob for k in range(1, len(ids))]
                    token_logprobs = prompt_lp + token_logprobs
                    top = [None] * len(ids) + top
                logprobs = {"token_logprobs": token_logprobs, "top_logprobs": top}
            choice = {"index": i, "text": o.text, "finish_reason": o.finish_reason, "logprobs": logprobs}
            if body.get("return_token_ids"):
                choice["token_ids"] = o.token_ids
            choices.append(choice)
        return {"object": "text_completion", "model": body["model"], "choices": choices}

    return app
