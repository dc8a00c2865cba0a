"""Model descriptors: ModelSpec, the shipped Hugging Face configs and their ingestion, precisions and GGUF
formats, published accuracy."""
