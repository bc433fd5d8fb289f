"""Value networks: analytic float64 derivatives against autograd, TorchScript against eager."""

import warnings

import pytest
import torch

from learning.networks import FeedForwardValueNet, ResidualValueNet
from mpc.value.artifact import quiet_torchscript


def _net(kind, n_in=17, seed=0):
    torch.manual_seed(seed)
    net = (
        ResidualValueNet(n_in, residual_dim=5) if kind == "residual" else FeedForwardValueNet(n_in)
    )
    net.set_normalisation(torch.randn(n_in), torch.rand(n_in) + 0.5)
    return net.double()


@pytest.mark.parametrize("kind", ["residual", "feedforward"])
def test_value_and_gradient_match_autograd(kind):
    net = _net(kind)
    for seed in range(5):
        z = torch.randn(17, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        v, g, _ = net.value_and_derivatives(z)
        f = lambda zz: net(zz.unsqueeze(0))[0]  # noqa: E731
        torch.testing.assert_close(v, f(z).detach(), rtol=0, atol=1e-12)
        torch.testing.assert_close(g, torch.autograd.functional.jacobian(f, z), rtol=0, atol=1e-12)


def test_feedforward_hessian_is_exact():
    net = _net("feedforward")
    z = torch.randn(17, dtype=torch.float64)
    _, _, h = net.value_and_derivatives(z)
    ref = torch.autograd.functional.hessian(lambda zz: net(zz.unsqueeze(0))[0], z)
    torch.testing.assert_close(h, ref, rtol=0, atol=1e-12)


def test_residual_hessian_is_gauss_newton_and_psd():
    net = _net("residual")
    z = torch.randn(17, dtype=torch.float64)
    _, _, h = net.value_and_derivatives(z)
    jac = torch.autograd.functional.jacobian(lambda zz: net.residual(zz), z)
    torch.testing.assert_close(h, 2.0 * jac.T @ jac, rtol=0, atol=1e-12)
    assert torch.linalg.eigvalsh(h).min() > -1e-12


@pytest.mark.parametrize("kind", ["residual", "feedforward"])
def test_torchscript_matches_eager(kind):
    net = _net(kind)
    with quiet_torchscript():
        scripted = torch.jit.script(net)
    z = torch.randn(8, 17, dtype=torch.float64)
    torch.testing.assert_close(scripted(z), net(z), rtol=0, atol=1e-14)
    for a, b in zip(
        scripted.value_and_derivatives(z[0]), net.value_and_derivatives(z[0]), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


def test_quiet_torchscript_filters_only_its_own_scope():
    before = list(warnings.filters)
    with quiet_torchscript():
        torch.jit.script(torch.nn.Linear(2, 2))
    assert warnings.filters == before
    with pytest.warns(DeprecationWarning, match="torch.jit.script"):
        torch.jit.script(torch.nn.Linear(2, 2))
