"""Run KServe's own clients (InferenceGRPCClient, InferenceRESTClient) against a server and save what
they got. A separate process: kserve and tritonclient[grpc] both register the protobuf package
`inference` and cannot be imported together (kserve#3099).

usage: python -m tests.services.modelserver.kserve_client GRPC_URL HTTP_URL INPUTS.npz OUT.npz
INPUTS.npz holds `<model>/<input>` arrays; each model is sent over gRPC and REST, binary and typed
(binary only for a model with an FP16 input).
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

DATATYPES = {
    np.dtype(bool): "BOOL",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
}


def request(model: str, tensors: dict[str, np.ndarray], binary: bool) -> InferRequest:
    inputs = []
    for name, x in tensors.items():
        datatype = "BYTES" if x.dtype.kind in "OUS" else DATATYPES[x.dtype]
        data = x.astype(object) if datatype == "BYTES" else x
        tensor = InferInput(name, list(x.shape), datatype)
        tensor.set_data_from_numpy(data, binary_data=binary)
        inputs.append(tensor)
    return InferRequest(model_name=model, infer_inputs=inputs, request_id=f"{model}-{binary}")


async def main(grpc_url: str, http_url: str, source: str, target: str) -> None:
    loaded = np.load(source, allow_pickle=True)
    models: dict[str, dict[str, np.ndarray]] = {}
    for key in loaded.files:
        model, name = key.split("/")
        models.setdefault(model, {})[name] = loaded[key]
    results: dict[str, np.ndarray] = {}
    grpc_client = InferenceGRPCClient(grpc_url, timeout=30)
    rest_client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    try:
        assert await grpc_client.is_server_ready()
        assert await rest_client.is_server_ready(f"http://{http_url}")
        for model, tensors in models.items():
            # FP16 has no typed field in gRPC (and no JSON form in numpy's eyes): binary only
            modes = (True,) if any(x.dtype == np.float16 for x in tensors.values()) else (True, False)
            for binary in modes:
                for transport in ("grpc", "rest"):
                    if transport == "grpc":
                        response = await grpc_client.infer(request(model, tensors, binary))
                    else:
                        response = await rest_client.infer(
                            f"http://{http_url}", request(model, tensors, binary), model_name=model
                        )
                    for output in response.outputs:
                        kind = "binary" if binary else "typed"
                        results[f"{transport}/{kind}/{model}/{output.name}"] = output.as_numpy()
    finally:
        await grpc_client.close()
        await rest_client.close()
    np.savez(target, **results)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
