"""The registered model as an MLflow pyfunc: images in, class probabilities with class names out.

What a user has is an image, not an ImageNet-normalised float tensor at the training size. The
logged model therefore takes a DataFrame whose ``image`` column holds, per row, encoded PNG/JPEG
bytes of any size (base64 in JSON, as ``mlflow models serve`` expects binary columns), an image
file path (Python only: the path is read where the model runs), or a ``uint8`` array
``(H, W)`` / ``(H, W, 1|3|4)``. Each image goes through the training run's own evaluation pipeline
(:func:`medattn.data.decode_image` at the run's image size, then :func:`medattn.data.build_transform`
with the run's resize mode and ImageNet normalisation), so a served prediction equals the one
``medattn test`` makes on the same file. The answer is one row per image: ``prob_<class name>`` for
each class and ``prediction`` (the most probable class name).

The model is logged as *models from code* (MLflow 3's recommended form: no pickled object in the
model): :data:`MODEL_CODE` only instantiates :class:`ImageClassifier` from the installed package,
and the weights travel as the artifact ``weights`` — a medattn checkpoint (state_dict, resolved
config, class names) that ``medattn test --ckpt`` also reads and that :func:`model_weights`
downloads when medattn needs the torch module back (test, interpret).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, DataType, Schema
from PIL import Image
from torch import nn

from medattn import checkpoint as ckpt_io
from medattn.config import config_from_flat
from medattn.data import IMAGENET_MEAN, IMAGENET_STD, ImageReadError, build_transform, decode_image
from medattn.data.io import ImageTooLargeError
from medattn.data.transforms import to_rgb
from medattn.errors import MedattnError
from medattn.models import create_model

IMAGE_COLUMN = "image"
"""The input column: encoded image bytes, a file path or a uint8 array per row."""
PREDICTION_COLUMN = "prediction"
PROB_PREFIX = "prob_"
WEIGHTS_ARTIFACT = "weights"
"""Key (and file stem, ``weights.pt``) of the checkpoint among the pyfunc's artifacts."""
WEIGHTS_FILE = "weights.pt"
MODEL_CODE = '''"""medattn's pyfunc (MLflow models from code): the class comes from the installed medattn package."""

from mlflow.models import set_model

from medattn.tracking.pyfunc import ImageClassifier

set_model(ImageClassifier())
'''
EXAMPLE_SIDE = 64
"""Side of the input example's PNG (a smooth gradient: about 1 KB, any size is accepted)."""
PREDICT_BATCH = 32


@dataclass(frozen=True)
class ServingSpec:
    """What the pyfunc needs to know of its training run, also written to the model's metadata."""

    class_names: tuple[str, ...]
    img_size: int
    resize: str
    source_run: str | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], source_run: str | None = None) -> ServingSpec:
        """The spec of a loaded medattn checkpoint (class names default to ``"0"``, ``"1"`` ...)."""
        flat = payload["config"]
        names = [str(n) for n in payload.get("class_names") or []]
        names = names or [str(k) for k in range(int(payload["num_classes"]))]
        return cls(tuple(names), int(flat["img_size"]), str(flat.get("resize", "direct_resize")), source_run)

    def metadata(self) -> dict[str, Any]:
        """The MLmodel ``metadata`` block: class names, image size, resize mode, normalisation, source run."""
        return {
            "class_names": list(self.class_names),
            "img_size": self.img_size,
            "resize": self.resize,
            "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            "input": f"column {IMAGE_COLUMN!r}: PNG/JPEG bytes (base64 in JSON), a file path, or a uint8 array",
            "source_run": self.source_run,
        }

    def columns(self) -> list[str]:
        """Output columns: ``prob_<class>`` per class, then ``prediction``."""
        return [f"{PROB_PREFIX}{name}" for name in self.class_names] + [PREDICTION_COLUMN]


def signature(spec: ServingSpec) -> ModelSignature:
    """Binary ``image`` in; one double per class and the predicted class name out."""
    outputs = [ColSpec(DataType.double, c) for c in spec.columns()[:-1]] + [ColSpec(DataType.string, PREDICTION_COLUMN)]
    return ModelSignature(inputs=Schema([ColSpec(DataType.binary, IMAGE_COLUMN)]), outputs=Schema(outputs))


def input_example(side: int = EXAMPLE_SIDE) -> pd.DataFrame:
    """One small RGB PNG (a gradient) in the ``image`` column: the example the MLflow UI shows."""
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    rgb = np.stack([np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, 255 - ramp) / 2, np.tile(ramp, (side, 1))], -1)
    buffer = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buffer, format="PNG", optimize=True)
    return pd.DataFrame({IMAGE_COLUMN: [buffer.getvalue()]})


def build_eager(payload: Mapping[str, Any]) -> nn.Module:
    """The eager classifier of a medattn checkpoint, weights loaded, in eval mode on the CPU."""
    cfg = config_from_flat(payload["config"])
    m = cfg.model
    model = create_model(
        m.model,
        int(payload["num_classes"]),
        pretrained="none",
        head=m.head,
        nr_layers=m.nr_layers,
        patch_size=m.patch_size,
        img_size=cfg.data.img_size,
        init=m.init,
    )
    model.load_state_dict(payload["model"])
    return model.eval()


def to_image(value: Any, img_size: int) -> Image.Image:
    """One cell of the ``image`` column as an RGB PIL image, decoded as the training pipeline decodes files.

    Raises:
        MedattnError: the cell is neither bytes, a path nor a uint8 array, or does not decode.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return decode_image(io.BytesIO(bytes(value)), img_size)
        except ImageTooLargeError as exc:
            raise MedattnError(f"{len(value)} bytes in the {IMAGE_COLUMN!r} column: {exc}") from None
        except ImageReadError:
            raise MedattnError(
                f"{len(value)} bytes in the {IMAGE_COLUMN!r} column do not decode as an image; send PNG or JPEG "
                "file bytes (base64-encoded in JSON)."
            ) from None
    if isinstance(value, (str, Path)):
        return decode_image(value, img_size)
    array = np.asarray(value)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise MedattnError(
            f"an image must be PNG/JPEG bytes, a file path or a uint8 array (H, W) or (H, W, 1|3|4), "
            f"got {type(value).__name__} {getattr(array, 'dtype', '')} {getattr(array, 'shape', '')}."
        )
    return to_rgb(Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array))


def images_of(model_input: Any) -> list[Any]:
    """The cells to classify: the ``image`` column of a DataFrame (or its only column), or a sequence.

    Raises:
        MedattnError: a DataFrame without an ``image`` column and with several columns.
    """
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN in model_input.columns:
            return list(model_input[IMAGE_COLUMN])
        if len(model_input.columns) == 1:
            return list(model_input.iloc[:, 0])
        raise MedattnError(f"the input has no {IMAGE_COLUMN!r} column; put one image (bytes or path) per row in it.")
    if isinstance(model_input, np.ndarray) and model_input.dtype == np.uint8 and model_input.ndim == 4:
        return list(model_input)  # a batch (N, H, W, C)
    if isinstance(model_input, Mapping) and IMAGE_COLUMN in model_input:
        return list(model_input[IMAGE_COLUMN])
    if isinstance(model_input, Sequence) and not isinstance(model_input, (str, bytes)):
        return list(model_input)
    return [model_input]


def probability_frame(probs: np.ndarray, spec: ServingSpec) -> pd.DataFrame:
    """``(N, C)`` probabilities → a frame of ``prob_<class>`` columns and the ``prediction`` class name."""
    frame = pd.DataFrame(probs.astype(np.float64), columns=spec.columns()[:-1])
    frame[PREDICTION_COLUMN] = [spec.class_names[k] for k in probs.argmax(1)]
    return frame


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """The medattn classifier behind ``models:/<name>@champion``: images in, probabilities out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Rebuild the eager model from the ``weights`` artifact and the run's evaluation transform."""
        payload = ckpt_io.load(context.artifacts[WEIGHTS_ARTIFACT])
        self.spec = ServingSpec.from_payload(payload)
        self.model = build_eager(payload)
        # medattn calibrate's temperature scaling: the logits are divided by it (1: not calibrated)
        self.temperature = float(payload.get("temperature", 1.0))
        self.transform = build_transform(self.spec.img_size, self.spec.resize, train=False)

    # ``pd.DataFrame`` is the one hint MLflow accepts without deriving a schema of its own from it (``Any``
    # draws a warning at import): the logged signature stays the contract.
    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Class probabilities of each image (see the module docstring for the accepted inputs).

        Returns:
            One row per image: ``prob_<class>`` (float64, summing to 1) and ``prediction`` (class name).

        Raises:
            MlflowException: (``INVALID_PARAMETER_VALUE``, HTTP 400 when served) an input it cannot
                use: bytes that are not an image, an image above the pixel budget
                (:data:`medattn.data.io.PIXEL_BUDGET`), a wrong type; the message is medattn's sentence.
        """
        try:
            cells = images_of(model_input)
            chunks = []
            with torch.inference_mode():
                for start in range(0, len(cells), PREDICT_BATCH):
                    batch = [
                        self.transform(to_image(c, self.spec.img_size)) for c in cells[start : start + PREDICT_BATCH]
                    ]
                    logits = self.model(torch.stack(batch)).float() / getattr(self, "temperature", 1.0)
                    chunks.append(torch.softmax(logits, 1).numpy())
        except MedattnError as exc:
            # MLflow's scoring server answers its own invalid-parameter error with HTTP 400 and this
            # sentence, without the stack trace (and server paths) any other exception would carry.
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        probs = np.concatenate(chunks) if chunks else np.zeros((0, len(self.spec.class_names)))
        return probability_frame(probs, self.spec)
