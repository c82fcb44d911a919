"""A local emulated cluster: a stand-in Kubernetes API, emulated LLM server pods, real Prometheus."""
