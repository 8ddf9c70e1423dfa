"""A small redshift regressor in the users' input format, and how model files are loaded.

Input: images ``[N, 5, 32, 32]`` float32 and magnitudes ``[N, 5]``; output: redshift ``[N]``.
The users' production model is a 15.9 M parameter ViT + Inception + MLP; this one keeps
the interface with 7,873 parameters so its trained weights (36 KB) ship in the repo.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

WEIGHTS = Path(__file__).with_name("weights") / "redshift_small.pt"


class RedshiftRegressor(nn.Module):
    """Two conv blocks over the 5-band image, concatenated with the magnitudes, then an MLP."""

    def __init__(self, channels: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(5, channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(2 * channels + 5, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )
        # Magnitudes sit around 20 with a spread of a few: centre them inside the model
        # so callers pass the users' raw values.
        self.register_buffer("mag_mean", torch.full((5,), 21.0))
        self.register_buffer("mag_scale", torch.full((5,), 2.0))

    def forward(self, image: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        mags = (magnitude - self.mag_mean) / self.mag_scale
        return self.head(torch.cat([self.features(image), mags], dim=1)).squeeze(1)


def _is_torchscript(data: bytes) -> bool:
    """TorchScript archives carry a ``code/`` directory; state_dict archives do not."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return any("/code/" in name for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def load_model(source: str | Path | bytes | None = None) -> nn.Module:
    """The shipped model, or a user's: a state_dict for RedshiftRegressor or TorchScript.

    A TorchScript file may hold any architecture taking ``(image, magnitude)``.
    """
    if source is None:
        source = WEIGHTS
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if _is_torchscript(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # jit.load's own notice
            model = torch.jit.load(io.BytesIO(data), map_location="cpu")
    else:
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(
                "model file is neither TorchScript nor a state_dict "
                f"(torch.save(model.state_dict(), path)): {exc}"
            ) from exc
        model = RedshiftRegressor()
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise ValueError(
                "model state_dict does not fit RedshiftRegressor; save other architectures "
                f"with torch.jit.script(model).save(path): {exc}"
            ) from exc
    model.eval()
    return model
