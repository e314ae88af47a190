"""ssd300_postprocess: decoded boxes and class probabilities → at most 200 detections per image.

All requests of a call are selected in one batched pass (detection_selection.py); thresholds
come from the model config's parameters.
"""

import json

import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import from_dlpack, to_dlpack

from detection_selection import select_detections

# In the order select_detections returns them.
OUTPUT_NAMES = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


def _parameter(config, key, cast):
    try:
        return cast(config["parameters"][key]["string_value"])
    except (KeyError, ValueError) as exc:
        raise pb_utils.TritonModelException(f"ssd300_postprocess: parameter '{key}' missing or invalid") from exc


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.rows = int(pb_utils.get_output_config_by_name(config, "detection_scores")["dims"][0])
        self.options = {
            "score_threshold": _parameter(config, "score_threshold", float),
            "candidates_per_class": _parameter(config, "candidates_per_class", int),
            "iou_threshold": _parameter(config, "nms_iou_threshold", float),
            "max_detections": _parameter(config, "max_detections", int),
        }
        if not 0 < self.options["max_detections"] <= self.rows:
            raise pb_utils.TritonModelException(
                f"ssd300_postprocess: max_detections must be in 1..{self.rows} (the outputs' rows)"
            )
        gpu = args["model_instance_kind"] == "GPU"
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if gpu else "cpu")

    def execute(self, requests):
        boxes = [self._input(request, "boxes") for request in requests]
        scores = [self._input(request, "scores") for request in requests]
        with torch.inference_mode():
            outputs = select_detections(torch.cat(boxes), torch.cat(scores), **self.options)
        responses = []
        start = 0
        for batch in boxes:
            stop = start + len(batch)
            tensors = [
                pb_utils.Tensor.from_dlpack(name, to_dlpack(output[start:stop].contiguous()))
                for name, output in zip(OUTPUT_NAMES, self._pad(outputs))
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = stop
        return responses

    def _input(self, request, name):
        return from_dlpack(pb_utils.get_input_tensor_by_name(request, name).to_dlpack()).to(self.device)

    def _pad(self, outputs):
        # select_detections pads to max_detections; the outputs always have `rows` rows.
        boxes, scores, labels, counts = outputs
        missing = self.rows - boxes.shape[1]
        if missing:
            boxes = torch.nn.functional.pad(boxes, (0, 0, 0, missing))
            scores = torch.nn.functional.pad(scores, (0, missing))
            labels = torch.nn.functional.pad(labels, (0, missing))
        return boxes, scores, labels, counts
