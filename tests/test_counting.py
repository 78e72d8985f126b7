"""The generic parameter / FLOP counter, checked against counts worked out by hand."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from naslib_bayes.errors import UserError
from naslib_bayes.search_spaces.counting import count_flops, count_parameters, flop_breakdown


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 8x8 output
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 8x4x4
        nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )


def test_breakdown_matches_hand_counts():
    counts = flop_breakdown(small_cnn(), (3, 8, 8))
    assert counts == {
        "conv": 8 * 8 * 8 * 3 * 9 + 8 * 4 * 4 * 2 * 9,  # out elements x (C_in / groups) x kernel
        "linear": 5 * 8,
        "bias": 8 * 8 * 8 + 5,
        "batchnorm": 8 * 8 * 8,
        "pooling": 8 * 4 * 4 * 4 + 8 * 4 * 4,  # 2x2 windows, then a global pool over 8x4x4
        "activation": 8 * 8 * 8,
    }
    assert count_flops(small_cnn(), (3, 8, 8)) == counts["conv"] + counts["linear"]
    assert count_flops(small_cnn(), (3, 8, 8), include_bias=True) == counts["conv"] + counts["linear"] + counts["bias"]


def test_convolutions_are_counted_on_the_output_that_stride_padding_and_groups_give():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2),  # 9x9 -> 4x4: 4 * 16 outputs x 3 * 9
        nn.Conv2d(4, 6, 1, padding=1),  # 4x4 -> 6x6: 6 * 36 outputs x 4 * 1
        nn.ConvTranspose2d(6, 2, 2, stride=2, groups=2),  # 6 * 36 inputs x (2 / 2) * 4
    )
    counts = flop_breakdown(model, (3, 9, 9))
    assert counts["conv"] == 64 * 27 + 216 * 4 + 216 * 4
    assert counts["bias"] == 64 + 216 + 2 * 144


def test_a_linear_layer_is_counted_on_every_position_of_its_input():
    assert count_flops(nn.Linear(5, 3), (4, 5)) == 4 * 3 * 5


def test_a_double_precision_model_is_counted_like_its_float_twin():
    assert flop_breakdown(small_cnn().double(), (3, 8, 8)) == flop_breakdown(small_cnn(), (3, 8, 8))


def test_parameters_count_each_shared_tensor_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, shared)
    assert count_parameters(model) == 20
    shared.bias.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 16
    assert count_parameters(model) == 20  # frozen parameters are still parameters


def test_a_layer_called_twice_is_counted_twice():
    shared = nn.Linear(4, 4, bias=False)
    assert count_flops(nn.Sequential(shared, shared), (4,)) == 2 * 16


def test_counting_restores_modes_and_leaves_bn_statistics_alone():
    model = small_cnn().train()
    model[1].eval()
    before = model[1].running_mean.clone()
    flop_breakdown(model, (3, 8, 8))
    assert model.training and not model[1].training
    assert torch.equal(model[1].running_mean, before)


def test_meta_device_model_is_counted_without_computing():
    with torch.device("meta"):
        model = small_cnn()
    assert flop_breakdown(model, (3, 8, 8)) == flop_breakdown(small_cnn(), (3, 8, 8))


@pytest.mark.parametrize("shape", [(), (3, 0, 8)])
def test_bad_input_shape_is_a_user_error(shape):
    words = f"input_shape must be positive sizes without the batch dimension, got {shape}"
    with pytest.raises(UserError, match=re.escape(words)):
        count_flops(small_cnn(), shape)
