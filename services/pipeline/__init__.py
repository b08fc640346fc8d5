"""Pipeline services: the stage services (image-preprocess, classification-postprocess) and the business API.

Each runs as its own process: `python -m services.pipeline --service <name> --port P` builds the app the
spec names (`<pipeline>-<stage>` for a stage, `<pipeline>` for the business API).
"""
