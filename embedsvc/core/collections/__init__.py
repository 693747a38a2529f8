"""Collections as the API sees them: requests, model bindings and metadata filters (storage is `embedsvc.index`)."""
