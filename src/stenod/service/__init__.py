"""The service layer: what the CLI, the API, the batch pipeline and job workers share."""
