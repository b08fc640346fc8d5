"""The local stack: one supervisor that runs the whole mesh from mesh.yaml as processes on loopback."""
