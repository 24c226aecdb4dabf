"""Local Kubernetes for development and CI: upstream control plane plus a process-based node."""
