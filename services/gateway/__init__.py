"""The embedded gateway: the local stack's single entry point, enforcing mesh.yaml like Kong + Istio.

Run it with `python -m services.gateway --spec mesh/mesh.yaml [--port 8080]`; endpoints come from
`MESHSERVE_DISCOVERY` (services.discovery.from_env).
"""
