"""The request-path stages, one module each; only ``bastion.pipeline.runner`` knows their order."""
