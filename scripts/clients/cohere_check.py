#!/usr/bin/env python3
"""The official `cohere` client (v1 and v2) against a running self-judge server.

Usage: cohere_check.py BASE_URL API_KEY MODEL
"""

import sys

import cohere

base, key, model = sys.argv[1], sys.argv[2], sys.argv[3]
docs = ["Paris is the capital of France.", "Bananas are yellow.", "I like trains."]
query = "What is the capital of France?"


def check(name, cond, detail=""):
    if not cond:
        sys.exit(f"FAIL {name}: {detail}")
    print(f"ok   {name}")


v1 = cohere.Client(api_key=key, base_url=base)
r = v1.rerank(model=model, query=query, documents=docs, top_n=2)
scores = [x.relevance_score for x in r.results]
check("v1: top_n", len(r.results) == 2, r)
check("v1: sorted", scores == sorted(scores, reverse=True), scores)
check("v1: documents returned", all(x.document.text == docs[x.index] for x in r.results), r)

v2 = cohere.ClientV2(api_key=key, base_url=base)
r2 = v2.rerank(model=model, query=query, documents=docs)
check("v2: every document", sorted(x.index for x in r2.results) == [0, 1, 2], r2)
check("v2: same scores as v1", all(abs(a.relevance_score - b) < 1e-6 for a, b in zip(r2.results, scores)), (r2, r))
check("v2: no documents by default", all(getattr(x, "document", None) is None for x in r2.results), r2)
try:
    v2.rerank(model="nope", query=query, documents=docs)
    check("unknown model raises", False)
except cohere.core.api_error.ApiError as e:
    check("unknown model raises ApiError 404", e.status_code == 404, e)
print("cohere client: all checks passed")
