"""What a run and the datamodule ask of a model: declared on ReIDModule with documented defaults."""

from __future__ import annotations

import torch

from ppreid.data.datamodule import TrainInputsProvider
from ppreid.models.reid_module import ReIDModule


class MinimalModel(ReIDModule):
    """A model that implements only the feature extractor."""

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


def test_a_minimal_model_gets_the_documented_defaults():
    model = MinimalModel()
    assert model.lazy_state_prefixes == ()
    assert model.loads_own_weights is False
    assert model.ddp_find_unused_parameters is False
    assert model.backbone_name is None
    assert model.input_normalization() is None
    assert model.extra_results == {}
    assert model.train_inputs == "images" and model.index_batch_size is None
    assert model.validation_due is True
    assert isinstance(model, TrainInputsProvider)  # the datamodule reads it through its declared interface
    assert model.extract_features(torch.zeros(2, 3, 4, 2)).shape == (2, 24)
