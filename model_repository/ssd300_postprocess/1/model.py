"""ssd300_postprocess: each class's ranked candidates → at most 200 detections per image.

Thresholds come from the model config's parameters; a request may override them with request
parameters of the same names (they pass through the ensembles), e.g. the COCO evaluation's
``nms_iou_threshold: 0.5``. Requests sharing the same settings are selected in one batched pass
(detection_selection.py: the rank sweep on a CPU instance, the fixed-point NMS on a GPU one).
A GPU instance selects on the GPU and returns host tensors: the ~5 KB of results per image are
only read on the host, and all of an execute's results are copied there with one sync.
"""

import json

import torch
import triton_python_backend_utils as pb_utils
from detection_selection import SETTINGS, selection_for, to_host
from torch.utils.dlpack import from_dlpack

# In the order select_detections returns them.
OUTPUT_NAMES = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.rows = int(pb_utils.get_output_config_by_name(config, "detection_scores")["dims"][0])
        # Candidates per class that ssd300 ranks (its outputs' dims): candidates_per_class's limit.
        self.candidates = int(pb_utils.get_input_config_by_name(config, "scores")["dims"][1])
        configured = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        try:
            self.defaults = self._validated({key: configured[key] for key in SETTINGS})
        except (KeyError, ValueError) as exc:
            raise pb_utils.TritonModelException(f"ssd300_postprocess config: {exc}") from exc
        threads = int(configured.get("intra_op_threads", "0"))
        if threads > 0:
            torch.set_num_threads(threads)
        gpu = args["model_instance_kind"] == "GPU"
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if gpu else "cpu")
        if gpu:
            # Kernels and allocations without an explicit device go to the instance's GPU, not
            # cuda:0 (several GPUs in one pod).
            torch.cuda.set_device(self.device)
        self.select_detections = selection_for(self.device)

    def _validated(self, values):
        """Typed and range-checked settings; ValueError names the offending one."""
        settings = {}
        for key, value in values.items():
            argument, cast = SETTINGS[key]
            if isinstance(value, bool):
                raise ValueError(f"{key} must be a number, got {value!r}")
            try:
                number = float(value)
                if cast is int and not number.is_integer():
                    raise ValueError
                number = cast(number)
            except (TypeError, ValueError, OverflowError):
                raise ValueError(
                    f"{key} must be {'an integer' if cast is int else 'a number'}, got {value!r}"
                ) from None
            settings[argument] = number
        limits = {
            "score_threshold": (0.0, 1.0),
            "iou_threshold": (0.0, 1.0),
            "max_detections": (1, self.rows),
            "candidates_per_class": (1, self.candidates),
        }
        for argument, (low, high) in limits.items():
            if argument in settings and not low <= settings[argument] <= high:
                name = next(key for key, (arg, _) in SETTINGS.items() if arg == argument)
                raise ValueError(f"{name} must be within [{low}, {high}], got {settings[argument]}")
        return settings

    def _settings_for(self, request):
        overrides = {k: v for k, v in json.loads(request.parameters() or "{}").items() if k in SETTINGS}
        return tuple(sorted({**self.defaults, **self._validated(overrides)}.items()))

    def execute(self, requests):
        responses = [None] * len(requests)
        groups = {}
        for index, request in enumerate(requests):
            try:
                groups.setdefault(self._settings_for(request), []).append(index)
            except ValueError as exc:
                error = pb_utils.TritonError(f"ssd300_postprocess: {exc}", pb_utils.TritonError.INVALID_ARG)
                responses[index] = pb_utils.InferenceResponse(error=error)
        # Each group's outputs stay on the instance's device until all of them are copied to the
        # host at once: one sync per execute, whatever the number of groups and requests.
        selected = [
            self._select([requests[i] for i in indices], dict(settings))
            for settings, indices in groups.items()
        ]
        host = iter(to_host([output for outputs, _ in selected for output in outputs]))
        for indices, (_, sizes) in zip(groups.values(), selected):
            outputs = [next(host) for _ in OUTPUT_NAMES]
            start = 0
            for index, size in zip(indices, sizes):
                tensors = [
                    pb_utils.Tensor(name, output[start : start + size].numpy())
                    for name, output in zip(OUTPUT_NAMES, outputs)
                ]
                responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += size
        return responses

    def _select(self, requests, settings):
        """One batched selection over ``requests``: its padded outputs, on the instance's device,
        and the number of images of each request."""
        boxes = [self._input(request, "boxes") for request in requests]
        scores = [self._input(request, "scores") for request in requests]
        with torch.inference_mode():
            outputs = self._pad(self.select_detections(torch.cat(boxes), torch.cat(scores), **settings))
        return outputs, [len(batch) for batch in boxes]

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
