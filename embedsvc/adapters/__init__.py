"""Drop-in adapters for code written against other libraries, each backed by an embedsvc server:

- `embedsvc.adapters.keyedvectors.RemoteKeyedVectors`: gensim 4's `KeyedVectors` read API (extra `gensim`);
- `embedsvc.adapters.sentence_transformer.RemoteSentenceTransformer`: sentence-transformers' `encode` (no extra;
  `convert_to_tensor` needs torch);
- `embedsvc.adapters.langchain`: `EmbedsvcEmbeddings` and `EmbedsvcVectorStore` (extra `langchain`);
- `embedsvc.adapters.llama_index.EmbedsvcEmbedding`: LlamaIndex's `BaseEmbedding` (extra `llamaindex`).

Each one takes a target (or a ready `embedsvc.client.Client`) and the client's connection options (`api_key`, `tls`,
`ca_file`, `cert_file`, `key_file`, `timeout`), batches its calls, and raises errors whose message carries the
service's code and reason. They import only the client package, never server code.
"""
