"""Every metric name meshserve exports, spelled once.

The names are a contract between the services that register the metrics (prometheus_client objects
created once, at import, in services/common/telemetry.py, services/modelserver/metrics.py,
services/gateway/metrics.py, services/pipeline/shadow.py) and everything that reads them: the PromQL
of the alerts, dashboards and canary analysis (mesh/compile/promql.py), KEDA's scaler query
(mesh/compile/keda.py). A rename here moves writers and readers together;
tests/services/common/test_metric_names.py fails when a name is spelled as a literal anywhere else.
Labels and meanings: observability/METRICS.md. Counters carry `_total`, as PromQL reads them.
"""

from __future__ import annotations

# --- every FastAPI service (services/common/telemetry.py)
HTTP_REQUESTS = "meshserve_http_requests_total"
HTTP_DURATION = "meshserve_http_request_duration_seconds"

# --- the model server (services/modelserver/metrics.py)
INFERENCE_REQUESTS = "meshserve_inference_requests_total"
INFERENCE_DURATION = "meshserve_inference_request_duration_seconds"
INFERENCE_QUEUE_DURATION = "meshserve_inference_queue_duration_seconds"
INFERENCE_COMPUTE_DURATION = "meshserve_inference_compute_duration_seconds"
INFERENCE_BATCH_SIZE = "meshserve_inference_batch_size"
INFERENCE_COUNT = "meshserve_inference_count_total"
INFERENCE_EXEC_COUNT = "meshserve_inference_exec_count_total"
INFERENCE_IN_FLIGHT = "meshserve_inference_in_flight"
INFERENCE_QUEUE_DEPTH = "meshserve_inference_queue_depth"  # the autoscaling signal (KEDA)
INFERENCE_LARGE_DECODES = "meshserve_inference_large_decodes"
MODEL_STATE = "meshserve_model_state"
MODEL_LOAD_FAILURES = "meshserve_model_load_failures_total"
MODEL_EXECUTION_FAILURES = "meshserve_model_execution_failures_total"
MODEL_HEALTHY = "meshserve_model_healthy"
MODEL_EXECUTION_PROVIDER = "meshserve_model_execution_provider"

# --- the embedded gateway, local stack only (services/gateway/metrics.py)
GATEWAY_REQUESTS = "meshserve_gateway_requests_total"
GATEWAY_DURATION = "meshserve_gateway_request_duration_seconds"
GATEWAY_RETRIES = "meshserve_gateway_retries_total"
GATEWAY_RETRIES_SKIPPED = "meshserve_gateway_retries_skipped_total"
GATEWAY_EJECTIONS = "meshserve_gateway_ejections_total"
GATEWAY_EJECTED = "meshserve_gateway_ejected"
GATEWAY_RATE_LIMITED = "meshserve_gateway_rate_limited_total"
GATEWAY_REJECTED = "meshserve_gateway_rejected_total"
GATEWAY_SPEC_RELOADS = "meshserve_gateway_spec_reloads_total"
GATEWAY_SPEC_RELOAD_REFUSED = "meshserve_gateway_spec_reload_refused"
GATEWAY_MIRROR_REQUESTS = "meshserve_gateway_mirror_requests_total"
GATEWAY_MIRROR_AGREEMENT = "meshserve_gateway_mirror_agreement_total"

# --- the business API's mirroring and split (services/pipeline/shadow.py)
PIPELINE_MIRROR_REQUESTS = "meshserve_pipeline_mirror_requests_total"
PIPELINE_MIRROR_AGREEMENT = "meshserve_pipeline_mirror_agreement_total"
PIPELINE_TRAFFIC_WEIGHT = "meshserve_pipeline_traffic_weight_ratio"
