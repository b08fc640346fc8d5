"""The benchmark's peer: KServe's Python ModelServer serving one ONNX file with onnxruntime.

Our own code, written as a KServe user would write a custom v2 model (kserve docs, "custom
model"): decode with KServe, run the session, hand the numpy output back and let KServe encode
it (binary when the request asks for it). Runs under its own venv (.venv-kserve) so kserve's
pins never touch the project's. Usage (the benchmark starts it):

    .venv-kserve/bin/python loadtests/bench/peers/kserve_onnx.py --model_name digits \
        --onnx models/digits/2/model.onnx --intra_op 1 --inter_op 1 --http_port 8080
"""

from __future__ import annotations

import argparse

import kserve
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.utils.utils import generate_uuid


class OnnxModel(Model):
    """One onnxruntime session on the CPU provider, thread settings as given."""

    def __init__(self, name: str, onnx_path: str, intra_op: int, inter_op: int) -> None:
        super().__init__(name)
        self.onnx_path = onnx_path
        self.intra_op = intra_op
        self.inter_op = inter_op
        self.session: ort.InferenceSession | None = None

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op
        options.inter_op_num_threads = self.inter_op
        self.session = ort.InferenceSession(self.onnx_path, options, providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        feeds = {tensor.name: tensor.as_numpy() for tensor in payload.inputs}
        names = [o.name for o in self.session.get_outputs()]
        arrays = self.session.run(names, feeds)
        outputs = []
        for name, array in zip(names, arrays, strict=True):
            output = InferOutput(name=name, shape=list(array.shape), datatype="FP32")
            output.set_data_from_numpy(array, binary_data=False)
            outputs.append(output)
        return InferResponse(
            response_id=payload.id or generate_uuid(),  # KServe's JSON encoder insists on an id
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--intra_op", type=int, default=1)
    parser.add_argument("--inter_op", type=int, default=1)
    args, _ = parser.parse_known_args()
    model = OnnxModel(args.model_name, args.onnx, args.intra_op, args.inter_op)
    model.load()
    ModelServer().start([model])


if __name__ == "__main__":
    main()
