"""Models for the tests, and the stack settings that reach them: no download, ever.

`EdBianchi/vit-fire-detection` (the seed's model id) is a tiny ViT placed in a temporary
Hugging Face cache, found offline exactly as a model downloaded earlier; `tiny-fire-b` and
`mid-vit` are folders under a temporary models root, beside the sample models `make run` makes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness import built_once

FIRE_MODEL_ID = "EdBianchi/vit-fire-detection"
FOLDER_MODEL = "tiny-fire-b"
# Big enough (about 12 M weights, 50 MB) that loading it shows in the server's resident memory.
MID_MODEL = "mid-vit"
# The token the stack's model server and code location share in the tests (`make run` makes a random one).
MODEL_SERVER_TOKEN = "test-model-server-token"


@pytest.fixture(scope="session")
def models_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """HF_HOME with the cached id, offline switches, and CONSTELLATION_MODELS_ROOT with the folder models.

    The models are made once per `pytest` command (about 30 CPU seconds) and copied for each xdist worker:
    tests add folders to the models root."""
    base = tmp_path_factory.mktemp("models")
    shutil.copytree(built_once(tmp_path_factory, "models", make_models), base, dirs_exist_ok=True)
    return {
        "HF_HOME": str(base / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "CONSTELLATION_MODELS_ROOT": str(base / "models"),
        "CONSTELLATION_MODEL_SERVER_TOKEN": MODEL_SERVER_TOKEN,
    }


def make_models(base: Path) -> None:
    from sample_models import write_sample_models
    from tiny_models import install_in_hf_cache, make_image_classifier

    hf_home, models_root = base / "hf_home", base / "models"
    install_in_hf_cache(hf_home, FIRE_MODEL_ID, make_image_classifier(base / "fire-a", seed=0))
    make_image_classifier(models_root / FOLDER_MODEL, seed=1)
    make_image_classifier(models_root / MID_MODEL, seed=2, hidden=512, layers=4)
    write_sample_models(models_root)  # what `make run` makes: the models of sample_dags.txt's comparisons
