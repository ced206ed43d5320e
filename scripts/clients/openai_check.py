#!/usr/bin/env python3
"""The official `openai` client against a running self-judge server, unchanged.

Usage: openai_check.py BASE_URL API_KEY
Checks models, chat (plain, logprobs, streaming with usage, best_of through
extra_body), legacy completions (logprobs, best_of, streaming) and that errors raise
the client's own exception types. Prints one line per check; exits non-zero on the
first failure.
"""

import sys

import openai

base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)


def check(name, cond, detail=""):
    if not cond:
        sys.exit(f"FAIL {name}: {detail}")
    print(f"ok   {name}")


model = client.models.list().data[0].id
check("models.list", bool(model), model)

messages = [{"role": "user", "content": "Name a fruit."}]
r = client.chat.completions.create(model=model, messages=messages, max_tokens=6, n=2,
                                   seed=3, logprobs=True, top_logprobs=2)
check("chat: n choices", len(r.choices) == 2, r)
lp = r.choices[0].logprobs.content
check("chat: logprobs", len(lp) > 0 and all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in lp), lp)
check("chat: usage", r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage)

stream = client.chat.completions.create(model=model, messages=messages, max_tokens=6, n=2,
                                        seed=3, stream=True,
                                        stream_options={"include_usage": True})
texts, usage = ["", ""], None
for chunk in stream:
    for c in chunk.choices:
        texts[c.index] += c.delta.content or ""
    if chunk.usage is not None:
        usage = chunk.usage
check("chat stream == chat", texts == [c.message.content for c in r.choices], (texts, r.choices))
check("chat stream usage", usage is not None and usage.completion_tokens == r.usage.completion_tokens, usage)

b = client.chat.completions.create(model=model, messages=messages, max_tokens=6, seed=4,
                                   extra_body={"best_of": 3})
sj = b.model_extra["self_judge"]
check("chat best_of", b.choices[0].message.content == sj["candidates"][sj["winners"][0]], sj)

c = client.completions.create(model=model, prompt="Hello", max_tokens=5, seed=9, logprobs=2)
check("completions: logprobs", len(c.choices[0].logprobs.tokens) == c.usage.completion_tokens, c)
cs = client.completions.create(model=model, prompt="Hello", max_tokens=5, seed=9, stream=True)
check("completions stream == completion", "".join(x.choices[0].text for x in cs if x.choices) == c.choices[0].text)
bo = client.completions.create(model=model, prompt="User: Name a fruit.", max_tokens=5, seed=2,
                               n=2, best_of=4)
sj = bo.model_extra["self_judge"]
check("completions best_of", [x.text for x in bo.choices] == [sj["candidates"][w] for w in sj["winners"]], sj)

try:
    client.chat.completions.create(model="gpt-9", messages=messages)
    check("unknown model raises", False)
except openai.NotFoundError as e:
    check("unknown model raises NotFoundError", "gpt-9" in str(e), e)
try:
    client.chat.completions.create(model=model, messages=messages, frequency_penalty=1.0)
    check("penalty raises", False)
except openai.BadRequestError as e:
    check("unsupported penalty raises BadRequestError", "frequency_penalty" in str(e), e)
try:
    openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
    check("wrong key raises", False)
except openai.AuthenticationError:
    check("wrong key raises AuthenticationError", True)
print("openai client: all checks passed")
