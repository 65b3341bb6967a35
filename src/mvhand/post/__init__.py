"""After the network: Neural Smooth and filters, submission packaging, metrics and the report."""
