"""CPU runner for ssd300 (the embedded server has neither a libtorch nor an ONNX Runtime backend).

Loaded only with `--model-config-name cpu`; in production the PyTorch backend runs model.pt (or,
with `--model-config-name onnx`, the ONNX Runtime backend runs model.onnx) and ignores this file.
The config parameter `engine` picks what runs here: "torchscript" (model.pt, torch) or "onnx"
(model.onnx, ONNX Runtime). The embedded server stamps it from the build's weights.json, so
`make model ENGINE=onnx` is the one setting that switches engines.
"""

import json
import os
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from ssd300_common.contract import ENGINE_FILES, METADATA_FILE


class TorchScriptEngine:
    def __init__(self, path, threads):
        import torch

        torch.set_num_threads(threads)
        extra_files = {METADATA_FILE: ""}
        self.torch = torch
        self.model = torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files).eval()
        self.metadata = json.loads(extra_files[METADATA_FILE] or "{}")
        self.threads = torch.get_num_threads()

    def __call__(self, images):
        with self.torch.inference_mode():
            return [output.numpy() for output in self.model(self.torch.from_numpy(images))]


class OnnxRuntimeEngine:
    def __init__(self, path, threads):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # Like torch's intra-op threads: one pool over every core, nodes run one after another.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # Idle pool threads would otherwise spin and take the cores the postprocess runs on.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.metadata = json.loads(self.session.get_modelmeta().custom_metadata_map.get(METADATA_FILE, "{}"))
        self.threads = threads

    def __call__(self, images):
        return self.session.run(None, {self.session.get_inputs()[0].name: images})


ENGINES = {"torchscript": TorchScriptEngine, "onnx": OnnxRuntimeEngine}


def _parameter(config, key, default):
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        threads = int(_parameter(config, "intra_op_threads", "0")) or os.cpu_count() or 1
        engine = _parameter(config, "engine", "torchscript")
        if engine not in ENGINES:
            raise pb_utils.TritonModelException(
                f"ssd300: unknown engine {engine!r} in the config; choose one of {', '.join(ENGINES)}"
            )
        # Forward passes of at most this many images (0: the whole batch at once). On a CPU a
        # large batch costs more per image than a small one, and under load the dynamic batcher
        # forms batches as large as the queue, whatever the preferred size.
        self.max_forward_batch = int(_parameter(config, "max_forward_batch", "0"))
        path = Path(args["model_repository"]) / args["model_version"] / ENGINE_FILES[engine]
        if not path.is_file():
            build = "make model" + (" ENGINE=onnx" if engine == "onnx" else "")
            raise pb_utils.TritonModelException(f"{path} is missing: build it with `{build}`")
        self.engine = ENGINES[engine](path, threads)
        self.input_name = config["input"][0]["name"]
        self.output_names = [output["name"] for output in config["output"]]
        metadata = self.engine.metadata
        logger = pb_utils.Logger
        if metadata.get("weights") == "random":
            logger.log_warn(f"ssd300: {path.name} holds RANDOM weights; detections are meaningless")
        logger.log_info(
            f"ssd300: loaded {path} with {engine} ({metadata.get('weights', 'unknown')} weights, "
            f"{metadata.get('precision', 'fp32')}), {self.engine.threads} threads, forward passes of "
            f"at most {self.max_forward_batch or 'any number of'} images"
        )

    def execute(self, requests):
        batches = [
            pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy() for request in requests
        ]
        images = np.concatenate(batches)
        size = self.max_forward_batch
        if 0 < size < len(images):
            parts = [self.engine(images[start : start + size]) for start in range(0, len(images), size)]
            outputs = [np.concatenate(arrays) for arrays in zip(*parts)]
        else:
            outputs = self.engine(images)
        responses = []
        start = 0
        for batch in batches:
            stop = start + len(batch)
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(output[start:stop]))
                for name, output in zip(self.output_names, outputs)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = stop
        return responses
