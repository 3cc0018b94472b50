"""The compiled RMSNorm (used by the block with ``scan: fused``) against ``nn.RMSNorm``."""

import pytest
import torch
from torch import nn

from sigerlm_kernels.ops import fused_rms_norm, uses_fused_norm
from sigerlm_testkit import saved_tensor_bytes


@pytest.mark.parametrize("shape", [(2, 37, 20), (1, 1, 16), (3, 130, 256), (5, 3)], ids=str)
def test_fused_rms_norm_matches_torch(shape):
    torch.manual_seed(0)
    norm = nn.RMSNorm(shape[-1], eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = (torch.randn(*shape) * 3).requires_grad_()
    grad = torch.randn(*shape)
    expected = norm(x)
    ex, ew = torch.autograd.grad(expected, (x, norm.weight), grad)
    got = fused_rms_norm(x, norm)
    gx, gw = torch.autograd.grad(got, (x, norm.weight), grad)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(gx, ex)
    torch.testing.assert_close(gw, ew, rtol=1e-4, atol=1e-4)


def test_fused_rms_norm_float64_gradcheck():
    norm = nn.RMSNorm(7, eps=1e-6, dtype=torch.float64)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: fused_rms_norm(x, norm), (x, norm.weight))


def test_fused_rms_norm_keeps_less_for_backward():
    norm = nn.RMSNorm(256, eps=1e-5)
    x = torch.randn(4, 512, 256, requires_grad=True)

    act = x.numel() * 4
    assert saved_tensor_bytes(lambda: fused_rms_norm(x, norm)) < act * 1.1  # x, rstd (a float a row) and the weight
    assert saved_tensor_bytes(lambda: norm(x)) >= 2 * act  # torch's composite keeps x and x * rstd


def test_only_plain_rms_norms_on_the_cpu_are_fused():
    x = torch.randn(2, 3, 8)
    assert uses_fused_norm(nn.RMSNorm(8), x)
    assert not uses_fused_norm(nn.LayerNorm(8), x)
    assert not uses_fused_norm(nn.RMSNorm(8, elementwise_affine=False), x)
    assert not uses_fused_norm(nn.RMSNorm(8), x.half())
    hooked = nn.RMSNorm(8)
    hooked.register_forward_hook(lambda *a: None)
    assert not uses_fused_norm(hooked, x)
