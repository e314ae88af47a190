"""CPU runner for ssd300's model.pt (the embedded server has no libtorch backend).

Loaded only with `--model-config-name cpu`; in production the PyTorch backend runs model.pt
directly and ignores this file.
"""

import json
import os
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

MODEL_FILE = "model.pt"
METADATA_FILE = "weights.json"


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = config.get("parameters", {})
        threads = int(parameters.get("intra_op_threads", {}).get("string_value", "0"))
        torch.set_num_threads(threads or os.cpu_count() or 1)
        # Forward passes of at most this many images (0: the whole batch at once). On a CPU a
        # large batch costs more per image than a small one, and under load the dynamic batcher
        # forms batches as large as the queue, whatever the preferred size.
        self.max_forward_batch = int(parameters.get("max_forward_batch", {}).get("string_value", "0"))
        path = Path(args["model_repository"]) / args["model_version"] / MODEL_FILE
        if not path.is_file():
            raise pb_utils.TritonModelException(f"{path} is missing: build it with `make model`")
        extra_files = {METADATA_FILE: ""}
        self.model = torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files).eval()
        self.input_name = config["input"][0]["name"]
        self.output_names = [output["name"] for output in config["output"]]
        metadata = json.loads(extra_files[METADATA_FILE] or "{}")
        logger = pb_utils.Logger
        if metadata.get("weights") == "random":
            logger.log_warn("ssd300: model.pt holds RANDOM weights; detections are meaningless")
        logger.log_info(
            f"ssd300: loaded {path} ({metadata.get('weights', 'unknown')} weights), "
            f"{torch.get_num_threads()} threads, forward batches of at most "
            f"{self.max_forward_batch or 'any number of'} images"
        )

    def execute(self, requests):
        batches = [
            pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy() for request in requests
        ]
        images = torch.from_numpy(np.concatenate(batches))
        with torch.inference_mode():
            if 0 < self.max_forward_batch < len(images):
                parts = [self.model(chunk) for chunk in images.split(self.max_forward_batch)]
                outputs = [torch.cat(tensors) for tensors in zip(*parts)]
            else:
                outputs = self.model(images)
        responses = []
        start = 0
        for batch in batches:
            stop = start + len(batch)
            tensors = [
                pb_utils.Tensor(name, output[start:stop].numpy())
                for name, output in zip(self.output_names, outputs)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = stop
        return responses
