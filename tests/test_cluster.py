"""Tests of avlib.cluster against autograd, hand-derived bounds, naive per-item loops and scikit-learn."""

import math

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from avlib.cluster import (
    kmeans_free_energy,
    kmeans_objective,
    lse_softmax,
    lse_softmin,
    multimodal_cluster,
    pca_init,
    soft_assign,
    soft_kmeans,
)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("z", [0.01, 0.3, 1.0, 7.0, 1e2, 1e4])
def test_lse_bounds(gen, z):
    x = torch.randn(50, 6, generator=gen, dtype=torch.float64) * 3
    k = x.shape[-1]
    smax = lse_softmax(x, z)
    mx = x.amax(-1)
    assert torch.all(smax >= mx - 1e-12) and torch.all(smax <= mx + math.log(k) / z + 1e-9)
    smin = lse_softmin(x, z)
    mn = x.amin(-1)
    assert torch.all(smin <= mn + 1e-12) and torch.all(smin >= mn - math.log(k) / z - 1e-9)
    # agrees with the textbook formula where that one does not overflow
    if z <= 7.0:
        assert torch.allclose(smax, torch.log(torch.exp(z * x).sum(-1)) / z, atol=1e-10)


def test_lse_large_z_and_large_values_no_overflow():
    x = torch.tensor([[1000.0, -2000.0, 999.5, 3000.0], [5.0, 5.0, 5.0, 5.0]])
    for z in (1e4, 1e6):
        out = lse_softmax(x, z)
        assert torch.isfinite(out).all()
        assert torch.allclose(out, x.amax(-1) + torch.tensor([0.0, math.log(4) / z]), atol=1e-3)
        w = soft_assign(-x, z)
        assert torch.isfinite(w).all()
        assert torch.allclose(w[0], torch.tensor([0.0, 0.0, 0.0, 1.0]))


def test_lse_exact_limits(gen):
    x = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    assert torch.equal(lse_softmax(x, math.inf), x.amax(-1))
    assert torch.equal(lse_softmin(x, math.inf), x.amin(-1))
    assert torch.allclose(lse_softmax(x, 0.0, normalize=True), x.mean(-1), atol=1e-15)
    assert torch.isinf(lse_softmax(x, 0.0)).all() and (lse_softmax(x, 0.0) > 0).all()
    # continuity at both ends: the log-mean-exp tends to the mean as z -> 0 without rounding loss
    assert torch.allclose(lse_softmax(x, 1e-9, normalize=True), x.mean(-1), atol=1e-8)
    assert torch.allclose(lse_softmax(x.float(), 1e-12, normalize=True), x.float().mean(-1), atol=1e-5)
    assert torch.allclose(lse_softmax(x, 1e9), x.amax(-1), atol=1e-8)
    # the normalized version sits between the mean and the max for every z
    for z in (0.1, 1.0, 10.0):
        v = lse_softmax(x, z, normalize=True)
        assert torch.all(v >= x.mean(-1) - 1e-12) and torch.all(v <= x.amax(-1) + 1e-12)


def test_soft_assign_limits_and_ties():
    d = torch.tensor([[1.0, 0.0, 0.0, 3.0]])
    assert torch.allclose(soft_assign(d, 0.0), torch.full((1, 4), 0.25))
    assert torch.equal(soft_assign(d, math.inf), torch.tensor([[0.0, 0.5, 0.5, 0.0]]))
    assert torch.allclose(soft_assign(d, 1e4), torch.tensor([[0.0, 0.5, 0.5, 0.0]]))


def test_tensor_z_broadcasts_per_row(gen):
    x = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    z = torch.tensor([[0.0], [2.0], [math.inf]], dtype=torch.float64)
    out = lse_softmax(x, z, normalize=True)
    assert torch.allclose(out[0], x[0].mean()) and out[2] == x[2].max()
    assert torch.allclose(out[1], torch.log(torch.exp(2 * x[1]).mean()) / 2)


def test_bad_z_raises():
    with pytest.raises(ValueError, match="z"):
        lse_softmax(torch.zeros(3), -1.0)
    with pytest.raises(ValueError, match="z"):
        soft_assign(torch.zeros(3), float("nan"))


@pytest.mark.parametrize("z", [0.5, 3.0, 1e3])
def test_softmin_gradient_is_softmax(gen, z):
    """DMC Eq. 5: d softmin / d d_j = softmax(-z d)_j."""
    d = torch.randn(4, 10, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    lse_softmin(d, z).sum().backward()
    assert torch.allclose(d.grad, soft_assign(d.detach(), z), atol=1e-12)
    assert torch.all(torch.isfinite(d.grad))


def test_gradient_finite_at_limits(gen):
    d = torch.randn(5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    lse_softmin(d, math.inf).sum().backward()
    assert torch.allclose(d.grad.sum(-1), torch.ones(5, dtype=torch.float64))
    d.grad = None
    lse_softmin(d, 0.0, normalize=True).sum().backward()
    assert torch.allclose(d.grad, torch.full_like(d, 0.25))


def naive_multimodal_cluster(u, weight, iters):
    """Algorithm 1 for one item and one center at a time, with explicit loops."""
    b, n_pts, _ = u.shape
    k = weight.shape[0]
    centers = torch.zeros(b, k, weight.shape[1], dtype=u.dtype)
    assign = torch.zeros(b, n_pts, k, dtype=u.dtype)
    for bi in range(b):
        d = torch.zeros(n_pts, k, dtype=u.dtype)
        for _ in range(iters):
            s = torch.zeros(n_pts, k, dtype=u.dtype)
            for i in range(n_pts):
                e = torch.exp(-d[i] - (-d[i]).max())
                s[i] = e / e.sum()
            for j in range(k):
                c = sum(s[i, j] * (weight[j] @ u[bi, i]) for i in range(n_pts))
                centers[bi, j] = c
                for i in range(n_pts):
                    d[i, j] = -torch.dot(weight[j] @ u[bi, i], c / c.norm())
        for i in range(n_pts):
            e = torch.exp(-d[i] - (-d[i]).max())
            assign[bi, i] = e / e.sum()
    return centers, assign


def test_multimodal_cluster_matches_naive_loop(gen):
    u = torch.randn(3, 9, 5, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 6, 5, generator=gen, dtype=torch.float64)
    res = multimodal_cluster(u, w, iters=3)
    c_ref, s_ref = naive_multimodal_cluster(u, w, 3)
    assert res.centers.shape == (3, 4, 6) and res.assign.shape == (3, 9, 4)
    assert torch.allclose(res.centers, c_ref, atol=1e-10)
    assert torch.allclose(res.assign, s_ref, atol=1e-10)
    assert torch.allclose(res.assign.sum(-1), torch.ones(3, 9, dtype=torch.float64))


def test_multimodal_cluster_fixed_point(gen):
    """Eq. 6: at convergence each center points along sum_i s_ij W_j u_i (the update is a fixed point)."""
    u = torch.randn(2, 20, 4, generator=gen, dtype=torch.float64)
    w = torch.randn(3, 4, 4, generator=gen, dtype=torch.float64)
    res = multimodal_cluster(u, w, iters=60)
    proj = torch.einsum("kmn,bin->bkim", w, u)
    again = torch.einsum("bik,bkim->bkm", res.assign, proj)
    cos = torch.nn.functional.cosine_similarity(again, res.centers, dim=-1)
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-8)


def test_multimodal_cluster_differentiable_and_validates(gen):
    u = torch.randn(2, 6, 5, generator=gen, requires_grad=True)
    w = torch.randn(2, 3, 5, generator=gen, requires_grad=True)
    res = multimodal_cluster(u, w, iters=2)
    (res.centers.sum() + res.assign[..., 0].sum()).backward()
    assert torch.isfinite(u.grad).all() and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="weight"):
        multimodal_cluster(u, torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="iters"):
        multimodal_cluster(u, w, iters=0)


def naive_soft_kmeans(x, init, beta, iters):
    b, n_pts, _ = x.shape
    k = init.shape[1]
    out = init.clone()
    for bi in range(b):
        c = init[bi].clone()
        for _ in range(iters):
            w = torch.zeros(n_pts, k, dtype=x.dtype)
            for i in range(n_pts):
                d = torch.stack([((x[bi, i] - c[j]) ** 2).sum() for j in range(k)])
                e = torch.exp(-beta * (d - d.min()))
                w[i] = e / e.sum()
            c = torch.stack([(w[:, j, None] * x[bi]).sum(0) / w[:, j].sum() for j in range(k)])
        out[bi] = c
    return out


def test_soft_kmeans_matches_naive_loop(gen):
    x = torch.randn(3, 15, 4, generator=gen, dtype=torch.float64)
    init = pca_init(x, 3)
    res = soft_kmeans(x, 3, beta=0.7, iters=4, init=init)
    assert torch.allclose(res.centers, naive_soft_kmeans(x, init, 0.7, 4), atol=1e-10)
    assert res.assign.shape == (3, 15, 3)


def blobs(gen, b=2, per=30, k=3, dim=2):
    means = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]], dtype=torch.float64)[:k, :dim]
    pts = means.repeat_interleave(per, 0)[None] + 0.5 * torch.randn(b, per * k, dim, generator=gen, dtype=torch.float64)
    return pts[:, torch.randperm(per * k, generator=gen)]


def test_hard_limit_equals_sklearn_lloyd(gen):
    """beta = inf is Lloyd's k-means: same fixed point as scikit-learn started from the same centers."""
    x = blobs(gen)
    init = soft_kmeans(x, 3, beta=math.inf, iters=1, init="spaced").centers  # any start; take one Lloyd step
    res = soft_kmeans(x, 3, beta=math.inf, iters=30, init=init)
    for bi in range(x.shape[0]):
        km = KMeans(3, init=init[bi].numpy(), n_init=1, max_iter=300, tol=0.0, algorithm="lloyd").fit(x[bi].numpy())
        np.testing.assert_allclose(res.centers[bi].numpy(), km.cluster_centers_, atol=1e-8)
        assert np.array_equal(res.assign[bi].argmax(-1).numpy(), km.labels_)
    # and a very stiff beta gets there too
    stiff = soft_kmeans(x, 3, beta=1e4, iters=30, init=init)
    assert torch.allclose(stiff.centers, res.centers, atol=1e-6)


def test_beta_zero_gives_the_mean(gen):
    x = torch.randn(2, 10, 3, generator=gen, dtype=torch.float64)
    res = soft_kmeans(x, 4, beta=0.0, iters=2)
    assert torch.allclose(res.centers, x.mean(1, keepdim=True).expand(2, 4, 3))


def test_em_monotone(gen):
    """The free energy never increases; the M-step never increases J for the weights it was given."""
    x = blobs(gen, b=3) + 0.0
    beta = 0.3
    _, hist = soft_kmeans(x, 3, beta=beta, iters=12, init="spaced", return_history=True)
    fe = [kmeans_free_energy(x, h.centers, torch.softmax(-beta * ((x[:, :, None] - h.centers[:, None]) ** 2).sum(-1),
                                                          -1), beta) for h in hist]
    for a, b in zip(fe, fe[1:], strict=False):
        assert torch.all(b <= a + 1e-9)
    n = x.shape[1]
    start = x[:, ((torch.arange(3) + 0.5) * n / 3).long()]
    before = [start] + [h.centers for h in hist[:-1]]
    for h, prev in zip(hist, before, strict=True):  # h.assign: the E-step weights the M-step used
        j_after = kmeans_objective(x, h.centers, h.assign)
        assert torch.all(j_after <= kmeans_objective(x, prev, h.assign) + 1e-9)
        perturbed = h.centers + 0.05 * torch.randn(h.centers.shape, generator=gen, dtype=h.centers.dtype)
        assert torch.all(j_after <= kmeans_objective(x, perturbed, h.assign) + 1e-12)


def test_pca_init_spans_principal_axis(gen):
    x = torch.cat([torch.randn(1, 40, 3, generator=gen, dtype=torch.float64) * 0.1,
                   torch.randn(1, 10, 3, generator=gen, dtype=torch.float64) * 0.1 + 5.0], 1)
    c = pca_init(x, 2)
    near = torch.cdist(c[0], torch.tensor([[0.0, 0, 0], [5.0, 5, 5]], dtype=torch.float64)).amin(-1)
    assert torch.all(near < 0.6)
    assert torch.allclose(pca_init(x, 1)[0, 0], x[0].mean(0))
    res = soft_kmeans(x, 2, beta=5.0, iters=5)
    labels = res.assign[0].argmax(-1)
    assert len(set(labels[:40].tolist())) == 1 and len(set(labels[40:].tolist())) == 1 and labels[0] != labels[-1]


def test_soft_kmeans_validates():
    with pytest.raises(ValueError, match="x"):
        soft_kmeans(torch.zeros(3, 4), 2, 1.0)
    with pytest.raises(ValueError, match="init"):
        soft_kmeans(torch.zeros(1, 3, 4), 2, 1.0, init="random")
    with pytest.raises(ValueError, match="init"):
        soft_kmeans(torch.zeros(1, 3, 4), 2, 1.0, init=torch.zeros(3, 4))
