"""The model lifecycle (release layer): publish a version through its evaluation gates, INT8-optimize it,
release it by canary, and list what the repository holds. See lifecycle/README.md."""
