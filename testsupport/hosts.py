"""The environment variables by which hosts and ML libraries are recognised, for tests that
simulate a host: they clear every one, so the machine running the tests (a CI runner on
Kubernetes, a developer's HF_HOME) cannot leak into what is detected or chosen."""

from __future__ import annotations

import os

import pytest

__all__ = ["LEGACY_ML_VARS", "ML_VARS", "clear_host"]

HOST_PREFIXES = ("SPACE_", "RAILWAY_", "FLY_", "RENDER", "K_", "CLOUD_RUN_", "MODAL_")
HOST_NAMES = (
    "SYSTEM",
    "AWS_LAMBDA_FUNCTION_NAME",
    "LAMBDA_TASK_ROOT",
    "DYNO",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_PORT",
    "container",
)
#: What configure_ml_caches() points at a writable place.
ML_VARS = (
    "XDG_CACHE_HOME",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_XET_CACHE",
    "HF_DATASETS_CACHE",
    "SENTENCE_TRANSFORMERS_HOME",
    "TORCH_HOME",
    "TRITON_CACHE_DIR",
    "NUMBA_CACHE_DIR",
    "MPLCONFIGDIR",
    "NLTK_DATA",
    "GRADIO_TEMP_DIR",
)
#: Older spellings it only warns about (transformers 5 ignores them).
LEGACY_ML_VARS = (
    "TRANSFORMERS_CACHE",
    "PYTORCH_TRANSFORMERS_CACHE",
    "PYTORCH_PRETRAINED_BERT_CACHE",
)


def clear_host(monkeypatch: pytest.MonkeyPatch, *also: str, prefixes: tuple[str, ...] = ()) -> None:
    """Unset every host variable, the ML cache variables and ``also`` (and any variable
    starting with ``prefixes``) for this test. Unset ones are registered too, so what the
    code under test sets is undone afterwards."""
    for name in list(os.environ):
        if name.startswith(HOST_PREFIXES + prefixes) or name in HOST_NAMES:
            monkeypatch.delenv(name)
    for name in (*ML_VARS, *LEGACY_ML_VARS, *also):
        monkeypatch.delenv(name, raising=False)
