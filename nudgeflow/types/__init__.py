"""The seams between floors, as protocols: upper floors depend on these, not on the
implementations (as faust's `types/` does). docs/architecture.md, "Floors"."""
