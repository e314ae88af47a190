"""Server-side runtime helpers: the embedded tritonserver for development and tests, and the
canary health check the serving image's probes run. Nothing here builds the model."""
