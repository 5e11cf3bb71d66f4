"""Plain dense implementations of the VICReg equations, written for the tests from the equations in README.md
("The objective"; Bardes, Ponce & LeCun, ICLR 2022, with the published code's /2 on the variance), not from the
package."""

import torch


def ref_invariance(za, zb):
    return ((za - zb) ** 2).sum() / za.numel()


def ref_variance(z, gamma=1.0, eps=1e-4):
    n = z.shape[0]
    var = ((z - z.sum(0) / n) ** 2).sum(0) / (n - 1)
    return torch.clamp(gamma - torch.sqrt(var + eps), min=0).sum() / z.shape[1]


def ref_covariance(z):
    n, d = z.shape
    zc = z - z.sum(0) / n
    cov = zc.T @ zc / (n - 1)
    off = cov * (1 - torch.eye(d, dtype=z.dtype))
    return (off**2).sum() / d


def ref_vicreg(za, zb, lam=25.0, mu=(25.0, 25.0), nu=(1.0, 1.0), gamma=(1.0, 1.0), eps=1e-4):
    return (
        lam * ref_invariance(za, zb)
        + (mu[0] * ref_variance(za, gamma[0], eps) + mu[1] * ref_variance(zb, gamma[1], eps)) / 2
        + nu[0] * ref_covariance(za)
        + nu[1] * ref_covariance(zb)
    )
