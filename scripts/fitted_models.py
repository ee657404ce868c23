"""Stand-in models fitted to the sample data in a second or two, so that the sample comparisons show something.

tiny_models.py makes real models of every task with random weights: what they predict means nothing,
and two of them tie. These start from the same tiny architectures and fit what decides their answers
to labelled sample data, with scikit-learn (no gradient descent, no download):

- image classification (ViT), text classification (BERT), semantic segmentation (Segformer): the encoder
  is left random; the classification layer is a logistic regression fitted on the features it receives
  (captured with a forward hook), so the model is exactly as good as those features and its training data;
- object detection (YOLOS): objects sit in the cells of a grid (scripts/comparison_samples.py); each
  detection token attends to its cell's patches only (weights set, not learnt), its class comes from a
  logistic regression on what it saw, its box from a least-squares fit to the cell's box.

A worse twin is made by fitting on less data, noisier labels or boxes of the wrong size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _captured_inputs(model: Any, layer: Any, batches: Callable[[], Any]) -> np.ndarray:
    """What `layer` receives when `model` runs `batches()` (a dict of tensors): one row per item, per pixel for a
    1x1 convolution."""
    import torch

    seen: list[torch.Tensor] = []
    hook = layer.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach()))
    try:
        with torch.inference_mode():
            model.eval()
            model(**batches())
    finally:
        hook.remove()
    features = seen[0]
    if features.ndim == 4:  # a 1x1 convolution's input: every pixel is an item
        features = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    return features.numpy().astype(np.float64)


def _fit_linear(layer: Any, features: np.ndarray, classes: np.ndarray, count: int, c: float = 1.0) -> None:
    """Set `layer` (Linear, or 1x1 Conv2d) to a logistic regression of `classes` (0..count-1) on `features`."""
    import torch
    from sklearn.linear_model import LogisticRegression

    fitted = LogisticRegression(C=c, max_iter=5000).fit(features, classes)
    weight = np.zeros((count, features.shape[1]))
    bias = np.full(count, -30.0)  # a class never seen in training is never predicted
    if len(fitted.classes_) == 2:  # scikit-learn keeps one row for two classes: split it in halves
        rows = [-fitted.coef_[0] / 2, fitted.coef_[0] / 2]
        offsets = [-fitted.intercept_[0] / 2, fitted.intercept_[0] / 2]
    else:
        rows, offsets = list(fitted.coef_), list(fitted.intercept_)
    for cls, row, offset in zip(fitted.classes_, rows, offsets, strict=True):
        weight[int(cls)], bias[int(cls)] = row, offset
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32).reshape(layer.weight.shape))
        layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))


def fit_image_classifier(
    folder: Path, images: Sequence[Any], classes: Sequence[int], labels: Sequence[str], seed: int = 0
) -> Path:
    """A ViT (tiny_models' architecture, random encoder) whose classifier is fitted to `images` (PIL) and their
    class indexes."""
    from transformers import ViTForImageClassification, ViTImageProcessor

    from tiny_models import make_image_classifier

    make_image_classifier(folder, tuple(labels), seed=seed)
    model = ViTForImageClassification.from_pretrained(folder)
    processor = ViTImageProcessor.from_pretrained(folder)
    features = _captured_inputs(model, model.classifier, lambda: processor(list(images), return_tensors="pt"))
    _fit_linear(model.classifier, features, np.asarray(classes), len(labels), c=10.0)
    model.save_pretrained(folder)
    return folder


def fit_text_classifier(
    folder: Path, texts: Sequence[str], classes: Sequence[int], labels: Sequence[str], seed: int = 0, hidden: int = 64
) -> Path:
    """A BERT of one layer whose words are those of `texts` (a word-piece vocabulary of them, and of letters for
    any other word), and whose [CLS] token attends to every token alike (its query weights are zero): what
    reaches the classifier depends on the words used, not their order; the classifier is fitted to `texts` and
    their class indexes."""
    import string

    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    torch.manual_seed(seed)
    words = sorted({word for text in texts for word in text.lower().split()})
    pieces = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *words,
        *(p for p in pieces if p not in words),
        *("##" + p for p in pieces),
    ]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(tokens)}, model_max_length=64)
    config = BertConfig(
        vocab_size=len(tokens),
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=64,
        initializer_range=0.5,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.query.weight.zero_()
        model.bert.encoder.layer[0].attention.self.query.bias.zero_()
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    features = _captured_inputs(
        model, model.classifier, lambda: dict(tokenizer(list(texts), padding=True, return_tensors="pt"))
    )
    _fit_linear(model.classifier, features, np.asarray(classes), len(labels), c=10.0)
    model.save_pretrained(folder)
    return folder


def fit_semantic_segmenter(
    folder: Path,
    images: Sequence[Any],
    masks: Sequence[np.ndarray],
    labels: Sequence[str],
    seed: int = 0,
    image_size: int = 64,
    pixels: int = 20_000,
) -> Path:
    """A Segformer (tiny_models' architecture, random encoder) whose per-pixel classifier is fitted to `images`
    and their class-id `masks`, on at most `pixels` pixels drawn from them (the masks at the decoder's
    resolution, nearest)."""
    from PIL import Image
    from transformers import SegformerForSemanticSegmentation, SegformerImageProcessor

    from tiny_models import make_semantic_segmenter

    make_semantic_segmenter(folder, tuple(labels), seed=seed, image_size=image_size)
    model = SegformerForSemanticSegmentation.from_pretrained(folder)
    processor = SegformerImageProcessor.from_pretrained(folder)
    classifier = model.decode_head.classifier
    batch = processor(list(images), return_tensors="pt")
    features = _captured_inputs(model, classifier, lambda: batch)
    side = int(round((features.shape[0] / len(images)) ** 0.5))  # the decoder's square resolution
    small = [
        np.asarray(Image.fromarray(np.asarray(m, dtype=np.uint8)).resize((side, side), Image.NEAREST)) for m in masks
    ]
    classes = np.concatenate([m.reshape(-1) for m in small])
    chosen = np.random.default_rng(seed).permutation(len(classes))[:pixels]
    _fit_linear(classifier, features[chosen], classes[chosen], len(labels), c=10.0)
    model.save_pretrained(folder)
    return folder


def grid_detector(
    folder: Path,
    images: Sequence[Any],
    cells: Sequence[Sequence[int | None]],
    boxes: Sequence[Sequence[float]],
    labels: Sequence[str],
    image_size: int = 32,
    patch: int = 8,
) -> Path:
    """A YOLOS of one detection token per cell of a 2x2 grid: token k attends to the patches of cell k alone; its
    class (one of `labels`, or none) is a logistic regression fitted on what it saw in `images`, whose cells hold
    `cells[i][k]` (a label index, or None for an empty cell); its box is fitted (least squares) to `boxes[k]`
    (centre x, centre y, width, height, as fractions of the image)."""
    import torch
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessor

    hidden, slot, quadrant, colour, strength = 16, 3, 7, 12, 10.0
    config = YolosConfig(
        image_size=[image_size, image_size],
        patch_size=patch,
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=hidden,
        num_detection_tokens=4,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = YolosForObjectDetection(config).eval()
    side = image_size // patch
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
        embeddings = model.vit.embeddings
        for c in range(3):  # a patch's token: its mean colour
            embeddings.patch_embeddings.projection.weight[c, c] = 1.0 / (patch * patch)
        for k in range(4):  # token k: who it is; a patch: which cell it lies in
            embeddings.detection_tokens[0, k, slot + k] = strength
        for p in range(side * side):
            row, col = divmod(p, side)
            embeddings.position_embeddings[0, 1 + p, quadrant + (row >= side // 2) * 2 + (col >= side // 2)] = strength
        attention = model.vit.encoder.layer[0].attention
        for k in range(4):  # token k's query matches cell k's keys only
            attention.attention.key.weight[k, quadrant + k] = 1.0
            attention.attention.query.weight[k, slot + k] = 4.0
        for c in range(3):  # and brings back their mean colour
            attention.attention.value.weight[c, c] = 1.0
            attention.output.dense.weight[colour + c, c] = 1.0
    processor = YolosImageProcessor(size={"height": image_size, "width": image_size}, do_pad=False)
    with torch.inference_mode():
        pixels = processor(list(images), return_tensors="pt")["pixel_values"]
        tokens = model.vit(pixel_values=pixels).last_hidden_state[:, -4:, :].reshape(-1, hidden).numpy()
    none = len(labels)
    classes = np.array([none if c is None else c for row in cells for c in row])
    head = model.class_labels_classifier.layers
    with torch.no_grad():  # the first two layers pass the token on (shifted positive for their ReLUs)
        head[0].weight.copy_(torch.eye(hidden))
        head[0].bias.fill_(5.0)
        head[1].weight.copy_(torch.eye(hidden))
    _fit_linear(head[2], tokens + 5.0, classes, none + 1, c=100.0)
    # The box head knows which token it is: after the final layer norm a token's own slot reads about 3.9 and the
    # others below 0, so relu(s - 1) - relu(s - 2) is exactly 1 for its own slot and 0 for the others; the last
    # layer then gives that cell's box.
    targets = np.clip(np.asarray(boxes, dtype=np.float64), 1e-4, 1 - 1e-4)
    box = model.bbox_predictor.layers
    with torch.no_grad():
        for k in range(4):
            box[0].weight[k, slot + k] = box[0].weight[4 + k, slot + k] = 1.0
            box[0].bias[k], box[0].bias[4 + k] = -1.0, -2.0
            box[1].weight[k, k], box[1].weight[k, 4 + k] = 1.0, -1.0
        box[2].weight[:, :4] = torch.tensor(np.log(targets / (1 - targets)).T, dtype=torch.float32)
    slots = np.sort(tokens[:, slot : slot + 4], axis=1)
    assert slots[:, -1].min() > 2 and slots[:, -2].max() < 1, "a token's slot reads outside what the box head takes"
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
