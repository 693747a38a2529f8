"""Text encoders as the API uses them: validation, truncation and chunking, and the dynamic batcher."""
