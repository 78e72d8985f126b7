"""NAS-Bench-201 primitives built by :func:`make_op`."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from naslib_bayes.errors import UserError
from naslib_bayes.search_spaces.counting import count_parameters
from naslib_bayes.search_spaces.nasbench201.ops import OP_NAMES, make_op


@pytest.mark.parametrize("name", OP_NAMES)
@pytest.mark.parametrize("stride, size, expected", [(1, 7, 7), (2, 8, 4), (2, 7, 4)])
def test_every_op_keeps_channels_and_divides_size_by_stride(name, stride, size, expected):
    op = make_op(name, 6, stride=stride)
    assert op(torch.randn(2, 6, size, size)).shape == (2, 6, expected, expected)


def test_none_is_zero_and_skip_is_identity():
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(make_op("none", 4)(x), torch.zeros_like(x))
    assert make_op("skip_connect", 4)(x) is x


def test_conv_ops_are_relu_conv_bn_without_conv_bias():
    op = make_op("nor_conv_3x3", 4)
    relu, conv, bn = op
    assert isinstance(relu, nn.ReLU) and not relu.inplace
    assert conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.bias is None
    assert bn.affine and bn.track_running_stats
    assert count_parameters(op) == 4 * 4 * 9 + 2 * 4
    assert count_parameters(make_op("nor_conv_1x1", 4)) == 4 * 4 + 2 * 4


def test_supernet_flavour_has_bn_without_parameters_or_statistics():
    op = make_op("nor_conv_3x3", 4, affine=False, track_running_stats=False)
    assert count_parameters(op) == 4 * 4 * 9
    assert op[2].running_mean is None


def test_avg_pool_ignores_padding_at_the_border():
    # count_include_pad=False: a constant image stays constant, corners included.
    x = torch.ones(1, 1, 4, 4)
    assert torch.equal(make_op("avg_pool_3x3", 1)(x), x)


@pytest.mark.parametrize("name, stride, words", [("max_pool", 1, "unknown NAS-Bench-201 op 'max_pool'"),
                                                  ("nor_conv_3x3", 0, "stride must be >= 1, got 0"),
                                                  ("skip_connect", 3, "stride 1 or 2, got 3")])
def test_bad_op_requests_are_user_errors_naming_the_value(name, stride, words):
    with pytest.raises(UserError, match=re.escape(words)):
        make_op(name, 4, stride=stride)


def test_strided_skip_needs_even_channels():
    with pytest.raises(UserError, match="even channel count, got 3"):
        make_op("skip_connect", 3, stride=2)


def _factorized_reductions():
    from naslib_bayes.search_spaces.darts.ops import FactorizedReduce as DartsReduce

    return [make_op("skip_connect", 4, stride=2), DartsReduce(4, 4)]


@pytest.mark.parametrize("reduce", _factorized_reductions(), ids=["nasbench201", "darts"])
def test_strided_skip_reads_the_even_grid_in_one_half_and_the_odd_grid_in_the_other(reduce):
    # the second convolution reads the image shifted by one pixel: without the shift both halves
    # read the even grid and the odd pixels would never reach the next cell
    reduce.eval()  # a fresh BatchNorm: zero stays zero, anything else stays non-zero
    for conv in (m for m in reduce.modules() if isinstance(m, nn.Conv2d)):
        nn.init.constant_(conv.weight, 1.0)
    even, odd = torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8)
    even[:, :, 0::2, 0::2] = 1.0
    odd[:, :, 1::2, 1::2] = 1.0
    for image, silent_half in ((even, 1), (odd, 0)):
        out = reduce(image).detach()
        halves = out[:, :2], out[:, 2:]
        assert out.shape == (1, 4, 4, 4)
        assert torch.count_nonzero(halves[silent_half]) == 0
        assert bool((halves[1 - silent_half] > 0).all())
