"""The validated configuration: nudgeflow.yaml, worker settings, topic names, and
the engine built from them (docs/architecture.md, "Floors")."""
