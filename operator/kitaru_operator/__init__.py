"""kitaru-k8s operator: kopf handlers over the pure core in `kitaru.core`."""
