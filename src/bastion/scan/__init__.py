"""Tool-poisoning defence (issue 15): what Bastion finds in the definitions and results that pass it.

``findings`` is the shape every detector reports in (``Finding``); the detectors, the pins and
the redaction live in the modules beside it.
"""
