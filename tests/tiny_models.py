"""Tiny real models made by the tests: no download, a few thousand random weights.

`make_image_classifier` saves a ViT image classifier and its image processor to a folder, as
`save_pretrained` does for any Hugging Face model; `install_in_hf_cache` places the same files
where the Hugging Face hub cache keeps a downloaded repo, so that with HF_HUB_OFFLINE=1
`pipeline(model="Org/name")` finds them exactly as it finds a model downloaded earlier.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

FIRE_LABELS = ("Fire", "Normal", "Smoke")


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
