//! Reranking for search stacks: Cohere's and Jina's `/v1/rerank`, Cohere's
//! `/v2/rerank` and TEI's `/rerank`, all answered by the judge service.

pub mod routes;
pub mod schemas;
