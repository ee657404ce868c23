"""Tiny real models, one per model-server task: no download, a few thousand random weights.

The tests use them, and so does `make run` for local stand-ins of real models. Each maker saves
what `save_pretrained` saves for a Hugging Face model (the model and its image processor or
tokenizer, the tokenizer built here from a small vocabulary) or, for tables, a scikit-learn model
trained here and converted to ONNX by skl2onnx. Same seed, same model; each takes well under a
second or two.

`install_in_hf_cache` places a saved folder where the Hugging Face hub cache keeps a downloaded
repo, so that with HF_HUB_OFFLINE=1 `pipeline(model="Org/name")` finds it exactly as it finds a
model downloaded earlier.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

FIRE_LABELS = ("Fire", "Normal", "Smoke")
DETECTION_LABELS = ("person", "car", "dog")
SEGMENTATION_LABELS = ("background", "road", "sky", "tree")
SENTIMENT_LABELS = ("negative", "positive")
IRIS_LABELS = ("setosa", "versicolor", "virginica")
LAND_COVER_LABELS = ("water", "vegetation", "bare")


def make_image_classifier(
    folder: Path,
    labels: tuple[str, ...] = FIRE_LABELS,
    seed: int = 0,
    image_size: int = 32,
    hidden: int = 16,
    layers: int = 1,
) -> Path:
    """Save a randomly initialised ViTForImageClassification and its ViTImageProcessor to `folder`."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    torch.manual_seed(seed)
    heads = max(2, hidden // 64)
    config = ViTConfig(
        image_size=image_size,
        patch_size=max(1, image_size // 4),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 4,
        # Wide weights: scores that differ between images, so wrong pairings would show.
        initializer_range=0.5,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    folder.mkdir(parents=True, exist_ok=True)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def make_zero_shot_classifier(folder: Path, seed: int = 0, image_size: int = 32, hidden: int = 16) -> Path:
    """Save a randomly initialised CLIPModel with its CLIPProcessor (byte-level tokenizer, no merges) to `folder`."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    _quiet()
    torch.manual_seed(seed)
    specials = ["<|startoftext|>", "<|endoftext|>"]
    # Every byte as a word piece, alone and word-final: any text tokenizes, with no merges at all.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(specials + alphabet + [c + "</w>" for c in alphabet])}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=32)
    text = {
        "vocab_size": len(vocab),
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 32,
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
        "initializer_range": 0.5,
    }
    vision = {
        "image_size": image_size,
        "patch_size": max(1, image_size // 4),
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "initializer_range": 0.5,
    }
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=hidden)
    folder.mkdir(parents=True, exist_ok=True)
    CLIPModel(config).save_pretrained(folder)
    images = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def make_object_detector(
    folder: Path,
    labels: tuple[str, ...] = DETECTION_LABELS,
    seed: int = 0,
    image_size: int = 32,
    hidden: int = 16,
    detections: int = 6,
) -> Path:
    """Save a randomly initialised YolosForObjectDetection (no pretrained backbone) and its image processor."""
    import torch
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessor

    _quiet()
    torch.manual_seed(seed)
    config = YolosConfig(
        image_size=[image_size, image_size],
        patch_size=max(1, image_size // 4),
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        num_detection_tokens=detections,
        initializer_range=0.5,
        **_label_maps(labels),
    )
    folder.mkdir(parents=True, exist_ok=True)
    _spread(YolosForObjectDetection(config)).save_pretrained(folder)
    YolosImageProcessor(size={"height": image_size, "width": image_size}, do_pad=False).save_pretrained(folder)
    return folder


def make_semantic_segmenter(
    folder: Path, labels: tuple[str, ...] = SEGMENTATION_LABELS, seed: int = 0, image_size: int = 32, hidden: int = 16
) -> Path:
    """Save a randomly initialised SegformerForSemanticSegmentation and its SegformerImageProcessor."""
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    _quiet()
    torch.manual_seed(seed)
    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[hidden, hidden * 2],
        patch_sizes=[3, 3],
        strides=[2, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=hidden,
        initializer_range=0.5,
        **_label_maps(labels),
    )
    folder.mkdir(parents=True, exist_ok=True)
    _spread(SegformerForSemanticSegmentation(config)).save_pretrained(folder)
    SegformerImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def make_text_classifier(
    folder: Path, labels: tuple[str, ...] = SENTIMENT_LABELS, seed: int = 0, hidden: int = 16, max_length: int = 64
) -> Path:
    """Save a randomly initialised BertForSequenceClassification and a WordPiece tokenizer of a small vocabulary."""
    import string

    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    _quiet()
    torch.manual_seed(seed)
    words = ["the", "a", "is", "not", "good", "bad", "fire", "smoke", "great", "awful", "movie", "day"]
    pieces = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *pieces, *("##" + p for p in pieces)]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(tokens)}, model_max_length=max_length)
    config = BertConfig(
        vocab_size=len(tokens),
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=max_length,
        initializer_range=0.5,
        **_label_maps(labels),
    )
    folder.mkdir(parents=True, exist_ok=True)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tabular_data(rows: int = 90, features: int = 4, classes: int = 3, seed: int = 0):
    """Synthetic rows (float32 [rows, features]) and class indexes [rows], clustered so a model can learn them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(classes, features))
    y = np.arange(rows) % classes
    x = (centres[y] + rng.normal(0, 1, size=(rows, features))).astype(np.float32)
    return x, y


def make_tabular_classifier(
    path: Path,
    labels: tuple[str, ...] = IRIS_LABELS,
    features: int = 4,
    seed: int = 0,
    data: tuple[Any, Any] | None = None,
    zipmap: bool = False,
    input_name: str = "float_input",
) -> Path:
    """Train a LogisticRegression on `data` (rows, classes) or on synthetic rows of `labels`; save it as ONNX.

    The graph's outputs: the class of each row (STRING [N], or INT64 [N] when `data`'s classes are
    integers) and the probabilities: FP32 [N, C] (`label`, `probabilities`) or, with `zipmap`,
    skl2onnx's sequence of {class: probability} maps (`output_label`, `output_probability`).
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    if data is None:
        x, y = tabular_data(features=features, classes=len(labels), seed=seed)
        y = np.array(labels, dtype=object)[y]
    else:  # integer classes stay integers (an INT64 label output); any other class is a string
        x, y = np.asarray(data[0], dtype=np.float32), list(data[1])
        y = (
            np.asarray(y, dtype=np.int64)
            if all(isinstance(v, int) for v in y)
            else np.asarray([str(v) for v in y], dtype=object)
        )
    model = LogisticRegression(max_iter=500).fit(x, y)
    return save_sklearn_onnx(model, path, x.shape[1], {"zipmap": zipmap}, input_name)


def make_tabular_regressor(
    path: Path, features: int = 4, seed: int = 0, data: tuple[Any, Any] | None = None, input_name: str = "float_input"
) -> Path:
    """Train a Ridge regression on `data` (rows, values) or synthetic rows; save it as ONNX (`variable` [N, 1])."""
    import numpy as np
    from sklearn.linear_model import Ridge

    if data is None:
        x, _ = tabular_data(features=features, seed=seed)
        y = x @ np.random.default_rng(seed + 1).normal(size=features) + 0.5
    else:
        x, y = np.asarray(data[0], dtype=np.float32), np.asarray(data[1], dtype=np.float64)
    return save_sklearn_onnx(Ridge().fit(x, y), path, x.shape[1], None, input_name)


def save_sklearn_onnx(
    model: Any, path: Path, features: int, options: dict | None = None, input_name: str = "float_input"
) -> Path:
    """Convert a fitted scikit-learn model to ONNX (one float input [N, features]; skl2onnx `options`, e.g.
    {"zipmap": False} for a plain probability tensor) and write it to `path`."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onnx_model = to_onnx(
        model,
        initial_types=[(input_name, FloatTensorType([None, features]))],
        options={id(model): options} if options else None,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onnx_model.SerializeToString())
    return path


def make_band_segmenter(
    path: Path,
    weights: Any,
    bias: Any,
    labels: tuple[str, ...] | None = LAND_COVER_LABELS,
    smooth: bool = False,
    tile: int | None = None,
    input_name: str = "bands",
) -> Path:
    """A multi-band semantic segmenter as ONNX (onnx's helper): a 1x1 convolution of the bands, `weights`
    [classes, bands] and `bias` [classes], into class scores `logits` FP32 [N, K, H, W] (with `smooth`, then
    averaged over 3x3 pixels). Its input is FP32 [N, C, H, W] (H and W any size, or `tile`); `labels` go into
    its metadata_props as a JSON list indexed by class id."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weights = np.asarray(weights, dtype=np.float32)
    classes, bands = weights.shape
    side = tile or "W"
    nodes = [helper.make_node("Conv", [input_name, "w", "b"], ["scores" if smooth else "logits"])]
    initializers = [
        numpy_helper.from_array(weights.reshape(classes, bands, 1, 1), "w"),
        numpy_helper.from_array(np.asarray(bias, dtype=np.float32), "b"),
    ]
    if smooth:
        nodes.append(
            helper.make_node(
                "AveragePool", ["scores"], ["logits"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0
            )
        )
    graph = helper.make_graph(
        nodes,
        "band_segmenter",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", bands, tile or "H", side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes, tile or "H", side])],
        initializers,
    )
    return _save_onnx(graph, path, labels)


def make_band_classifier(
    path: Path, weights: Any, bias: Any, labels: tuple[str, ...] | None = LAND_COVER_LABELS, input_name: str = "bands"
) -> Path:
    """A multi-band tile classifier as ONNX: each band's mean over the tile, then `weights` [classes, bands] and
    `bias`: class scores `logits` FP32 [N, K]."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weights = np.asarray(weights, dtype=np.float32)
    classes, bands = weights.shape
    nodes = [
        helper.make_node("GlobalAveragePool", [input_name], ["means"]),
        helper.make_node("Flatten", ["means"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "band_classifier",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", bands, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.asarray(bias, dtype=np.float32), "b")],
    )
    return _save_onnx(graph, path, labels)


def _save_onnx(graph: Any, path: Path, labels: tuple[str, ...] | None) -> Path:
    import json

    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="constellation")
    model.ir_version = 8  # what ONNX Runtime releases of the last years all read
    if labels is not None:
        helper.set_model_props(model, {"labels": json.dumps(list(labels))})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def _label_maps(labels: tuple[str, ...]) -> dict[str, dict]:
    return {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}


def _spread(model: Any, scale: float = 0.5) -> Any:
    """Redraw every weight from N(0, scale): distinct detection tokens, several classes per mask, varied scores."""
    import torch

    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, scale)
    return model


def _quiet() -> None:
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def install_in_hf_cache(hf_home: Path, repo_id: str, folder: Path) -> Path:
    """Copy a saved model into HF_HOME's hub cache as `repo_id`'s main revision; return the snapshot."""
    repo = Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))
    files = sorted(p for p in Path(folder).iterdir() if p.is_file())
    digest = hashlib.sha1()
    for path in files:
        digest.update(path.name.encode() + path.read_bytes())
    commit = digest.hexdigest()  # any 40-hex revision will do; this one changes with the files
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copy2(path, snapshot / path.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
