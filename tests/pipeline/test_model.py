"""Model files: the shipped weights, a user's state_dict, a user's TorchScript, garbage."""

from __future__ import annotations

import io

import pytest

from tests.pipeline.conftest import need_torch


@pytest.mark.torch
def test_shipped_weights_are_small_and_learnt_the_relation() -> None:
    need_torch()
    import torch

    from rendezvous_pipeline.data import make_partition
    from rendezvous_pipeline.model import WEIGHTS, load_model

    assert WEIGHTS.stat().st_size < 200_000
    image, magnitude, z = make_partition(256, seed=42).tensors
    with torch.inference_mode():
        pred = load_model()(image, magnitude)
    assert pred.shape == (256,)
    mae = (pred - z).abs().mean().item()
    spread = (z - z.mean()).abs().mean().item()
    assert mae < 0.1 < spread  # far better than guessing the mean


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script
def test_users_own_model_files() -> None:
    need_torch()
    import torch
    from torch import nn

    from rendezvous_pipeline.model import RedshiftRegressor, load_model

    fresh = RedshiftRegressor()
    buf = io.BytesIO()
    torch.save(fresh.state_dict(), buf)
    loaded = load_model(buf.getvalue())
    image, mags = torch.rand(3, 5, 32, 32), torch.rand(3, 5) + 20
    with torch.inference_mode():
        assert torch.allclose(loaded(image, mags), fresh.eval()(image, mags))

    class MeanOfMagnitudes(nn.Module):
        def forward(self, image: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
            return magnitude.mean(dim=1) - 20.0

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(MeanOfMagnitudes()), buf)
    scripted = load_model(buf.getvalue())
    with torch.inference_mode():
        assert torch.allclose(scripted(image, mags), mags.mean(dim=1) - 20.0)

    with pytest.raises(ValueError, match="neither TorchScript nor a state_dict"):
        load_model(b"not a model")
    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(2)}, buf)
    with pytest.raises(ValueError, match="does not fit RedshiftRegressor"):
        load_model(buf.getvalue())
