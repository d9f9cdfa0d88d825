"""The largest eigenvalue of the input Hessian, per example and batched.

Zhao et al. (ICLR 2020, arXiv 2005.00060, Section 5) walk the path between a regular and an
adversarially trained model and find that the *robustness loss* (cross-entropy on PGD examples) rises
to a barrier while the standard loss does not, and that the robustness loss correlates with the
largest eigenvalue of the Hessian of the loss with respect to the *input*,

    H(x) = d^2/dx^2  CE(f_w(x), y)          (a D x D matrix, D = C*H*W),

following Yao et al. (2018), who estimate it by power iteration on Hessian-vector products.

Eigenvalues
-----------
:func:`top_eigenvalue` returns, for every example of a batch, the largest *algebraic* eigenvalue
lambda_max(H(x_i)). Two iterative solvers share one batched Hessian-vector product (HVP):

* ``method="lanczos"`` (default): Lanczos with full re-orthogonalisation. After j steps the
  tridiagonal matrix T_j (alphas on the diagonal, betas off it) is diagonalised with
  :func:`torch.linalg.eigh`; its largest Ritz value theta converges to lambda_max from below, and
  abs(theta - lambda) <= beta_j abs(s_j) (the residual of the Ritz pair, s_j = last component of the Ritz
  vector) bounds the error. Extreme eigenvalues of *both* signs are found, so there is no sign
  problem. Breakdown (beta ~ 0: the Krylov space is invariant, e.g. after <= C steps for a ReLU
  network whose input Hessian J^T (diag p - p p^T) J has rank <= C - 1) ends the iteration with the
  exact value.
* ``method="power"``: power iteration (Yao et al. 2018) returns the eigenvalue of largest
  *magnitude*. When that Rayleigh quotient mu is negative, the example is run again on the shifted
  matrix H - mu I, whose spectrum lambda_i - mu is >= 0 (up to convergence) with largest element
  lambda_max - mu, so lambda_max = nu + mu.

Both stop per example when the error estimate falls below ``tol`` (relative, see below) or after
``iters`` HVPs, and finished examples are frozen while the others go on.

* ``method="exact"``: for a *piecewise-linear* network (ReLU, max-pool, linear and convolution layers,
  BatchNorm in eval mode, padding, average pooling) the logits z(x) have zero second derivative almost
  everywhere, so the input Hessian of CE(z(x), y) is exactly the Gauss-Newton matrix

      H(x) = J^T A J,   J = dz/dx (C x D),   A = diag(p) - p p^T,   p = softmax(z),

  of rank <= C - 1. It is evaluated in a cancellation-free *pairwise* form. As
  diag(p) - p p^T = sum_{i<j} p_i p_j (e_i - e_j)(e_i - e_j)^T,

      H(x) = sum_{i<j} p_i p_j (J_i - J_j)(J_i - J_j)^T          (J_i = dz_i/dx, the rows of J),

  which needs no 1 - p anywhere. Only differences of Jacobian rows enter, so they may be taken against
  the predicted class r = argmax z: with Delta_c = J_c - J_r (c != r, a (C-1) x D matrix) and q the
  probabilities of the other classes, H = Delta^T (diag(q) - q q^T) Delta, where every entry of the
  (C-1) x (C-1) middle matrix is a product of *small* probabilities (never 1 - p_r, which underflows in
  float64 once p_r rounds to 1: at 1 - p = 7e-18 a float64 Hessian-vector product returned 1.6e-13 for an
  eigenvalue of 3.5e-13). Its symmetric factor is closed-form: with s = sqrt(q) and
  a = 1 / (1 + sqrt(p_r)), L = diag(s) - a q s^T satisfies L L^T = diag(q) - q q^T (as (I - a s s^T)^2
  = I - s s^T when a^2 (1 - p_r) - 2a + 1 = 0). The nonzero eigenvalues of H are those of the
  (C-1) x (C-1) matrix M = L^T (Delta Delta^T) L (:func:`gauss_newton_spectrum`, which adds one zero so that
  a row holds C values). J takes one forward and C backward passes per chunk; Delta, p, L and M are
  formed in float64 (the difference of two float32 Jacobian rows is exact in float64), so confident
  inputs keep their tiny eigenvalues to full relative precision, and so do rows J_c with a large common
  component (which cancel in J J^T, not in Delta). ``method="auto"`` (the default, also of
  :func:`batch_top_eigenvalue`) uses this path when the model is piecewise linear -- detected by checking
  that a random second derivative of the logits, d/dx (u^T J(x) v), is exactly zero on *every* input, chunk
  by chunk (autograd propagates the exact zeros of ReLU and max-pool; about the cost of three passes), or
  asserted by the caller with ``piecewise_linear=True`` -- and Lanczos otherwise.

Float32 Lanczos and power iteration on confident inputs (max softmax near 1) return eigenvalues with
large relative errors while still reporting convergence: the HVP itself (through the softmax) loses the
small eigenvalues to rounding. With ``precision="auto"`` (the default) the iterative solvers therefore
run a float64 copy of the model on every chunk holding an input whose max softmax exceeds
``SATURATION``; where even float64 cannot resolve it (1 - p_max < ``FLOAT64_RESOLUTION``) they warn, naming
the exact path.

The HVP, and why it is batched this way
---------------------------------------
``backend="autograd"`` (default): one forward pass and one backward pass with ``create_graph=True``
give g = d/dX sum_i CE(f(x_i), y_i); every HVP is then a single double-backward
``autograd.grad(g, X, grad_outputs=V)``. In eval mode the model has no cross-example coupling
(BatchNorm uses running statistics), so the Hessian of the *summed* loss with respect to the whole
batch is block-diagonal with blocks H(x_i): one double-backward applies every H(x_i) to its own
v_i exactly. The forward/backward graph is built once and reused for every iteration.
``backend="func"``: ``vmap`` over examples of ``jvp(grad(loss_i))`` (forward-over-reverse,
torch.func), which recomputes forward and backward at every HVP. Both are exact; the benchmark
(``benchmarks/bench_hessian.py``) found the graph-reusing autograd form faster on CPU, hence the
default. The model is put in eval mode for the computation (and restored).

Where the time goes (quick CNN, 256 inputs of 1x28x28, one thread, AMD EPYC): a batched HVP is about
60-90 ms, of which the first convolution's input gradient (one input channel) takes 18-26 ms -- oneDNN
runs that shape at a few percent of the core's peak, and so does every equivalent formulation tried
(transposed convolution, flipped forward convolution, the native im2col kernels, channels-last); an
unfold/matmul/fold input gradient is 3x faster as a single op for one input channel, slower for three,
and made neither the HVP nor the Jacobian faster as a custom autograd function. Batching 256 inputs
makes an HVP only 2.2-2.6x cheaper per input than one at a time, which, with the Lanczos bookkeeping a
loop pays per call, bounds the batched-versus-loop speed-up at about 4-4.5x there. Examples that
converge early leave the batch (the ``restrict`` argument of :func:`lanczos`), so the slowest ones are
not paid for by all.

:func:`batch_top_eigenvalue` is the paper's variant: the Hessian of the *batch-mean* loss with
respect to the whole input batch (a BD x BD matrix). With no cross-example coupling it equals
blockdiag(H(x_i)) / B, so its largest eigenvalue is max_i lambda_max(H(x_i)) / B -- the tests use
this identity as an independent check.

The study built on these eigenvalues (robustness and the top eigenvalue along a weight-space path, claims
C6 and C7) is :mod:`mclib.studies.robustness`.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mclib.torchutil import device_of, eval_mode, show_progress


def _import_forward_mode() -> None:
    # torch.func's forward mode (jvp, hessian) registers its decompositions with the deprecated
    # torch.jit.script the first time it is imported; that FutureWarning would land in every executed
    # notebook's output and in a library user's console
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            import torch._decomp.decompositions_for_jvp  # noqa: F401
        except ImportError:  # a torch without this private module warns nothing either
            pass

METHODS = ("auto", "exact", "lanczos", "power")
BACKENDS = ("autograd", "func")
PRECISIONS = ("auto", "native", "float64")
#: max softmax above which the iterative solvers switch to float64 (``precision="auto"``)
SATURATION = 0.999
#: 1 - p_max below which float64 Hessian-vector products lose the small eigenvalues too: their relative error
#: grows like 1e-16 / (1 - p_max) (third-party ResNet: 3e-8 at 2e-9, 0.47 at 1e-17), about 1e-4 here. An
#: iterative method then warns; the exact pairwise form does not need 1 - p_max at all
FLOAT64_RESOLUTION = 1e-12

__all__ = [
    "input_hvp", "lanczos", "power_iteration", "top_eigenvalue", "batch_top_eigenvalue", "exact_hessian",
    "gauss_newton_spectrum", "is_piecewise_linear", "one_minus_pmax",
    "exact_top_eigenvalue", "check_batch",
]


# ----------------------------------------------------------------------------------------------------
# Hessian-vector products
# ----------------------------------------------------------------------------------------------------
def check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    """One clear error unless ``x`` is a non-empty floating-point batch (B, ...) and ``y`` its (B,) integer labels."""
    if not torch.is_tensor(x) or not torch.is_tensor(y):
        raise TypeError("x and y must be tensors")
    if x.dim() < 2:
        raise ValueError(f"x must be a batch (B, ...) of inputs, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"x is an empty batch (shape {tuple(x.shape)}); need at least one input")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be (B,) labels matching x's batch size {x.shape[0]}, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")


def _check_logits(out: torch.Tensor, y: torch.Tensor) -> None:
    """Labels within [0, C) of the model's C outputs, and an output that depends on the input."""
    if out.dim() != 2:
        raise ValueError(f"the model must return logits (B, C), got shape {tuple(out.shape)}")
    C = out.shape[1]
    bad = (y < 0) | (y >= C)
    if bool(bad.any()):
        raise ValueError(f"y holds label {int(y[bad][0])} outside the model's {C} classes; allowed: 0..{C - 1}")


def _no_input_gradient() -> ValueError:
    return ValueError("the model's output has no gradient with respect to its input x (is the forward detached, "
                      "under torch.no_grad, or non-differentiable?); the input Hessian is undefined")


def input_hvp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, backend: str = "autograd",
              reduction: str = "sum") -> Callable[[torch.Tensor], torch.Tensor]:
    """A function ``V (B, D) -> (B, D)`` applying the input Hessian of the cross-entropy to ``V``.

    With ``reduction="sum"`` row i of the result is H(x_i) v_i (the per-example Hessian, exact when
    the model has no cross-example coupling, i.e. eval mode); with ``"mean"`` it is the Hessian of
    the batch-mean loss w.r.t. the whole batch applied to ``V`` (= the sum form / B in eval mode).
    ``backend`` is ``"autograd"`` (double backward through a graph built once) or ``"func"``
    (vmap of forward-over-reverse ``jvp(grad(.))``; ``reduction="sum"`` only). The caller keeps the
    model in the mode it wants (:func:`top_eigenvalue` uses eval mode).
    """
    check_batch(x, y)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    B = x.shape[0]
    shape = x.shape
    if backend == "autograd":
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = model(xg)
            _check_logits(out, y)
            if not out.requires_grad:
                raise _no_input_gradient()
            loss = F.cross_entropy(out, y, reduction=reduction)
            (g,) = torch.autograd.grad(loss, xg, create_graph=True, allow_unused=True)
        if g is None:
            raise _no_input_gradient()

        def hvp(v: torch.Tensor) -> torch.Tensor:
            (hv,) = torch.autograd.grad(g, xg, grad_outputs=v.reshape(shape).to(g), retain_graph=True,
                                        materialize_grads=True)
            return hv.reshape(B, -1).detach()

        return hvp
    if reduction != "sum":
        raise ValueError("backend='func' computes per-example Hessians; use backend='autograd' for reduction='mean'")
    from torch.func import functional_call, grad, jvp, vmap
    _import_forward_mode()

    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    with torch.no_grad():
        _check_logits(model(x[:1]), y)

    def loss_one(xi, yi):
        out = functional_call(model, (params, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    def hvp_one(xi, yi, vi):
        return jvp(lambda z: grad(loss_one)(z, yi), (xi,), (vi,))[1]

    batched = vmap(hvp_one)
    xd = x.detach()

    def hvp(v: torch.Tensor) -> torch.Tensor:
        return batched(xd, y, v.reshape(shape).to(xd)).reshape(B, -1).detach()

    return hvp


# ----------------------------------------------------------------------------------------------------
# Batched eigen-solvers on a linear operator (B independent symmetric D x D matrices)
# ----------------------------------------------------------------------------------------------------
def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)


def lanczos(hvp: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor, iters: int = 64, tol: float = 1e-5,
            progress: bool = False,
            restrict: Callable[[torch.Tensor], Callable[[torch.Tensor], torch.Tensor]] | None = None,
            ) -> tuple[torch.Tensor, dict]:
    """Largest algebraic eigenvalue of B symmetric operators by Lanczos with full re-orthogonalisation.

    ``hvp(V)`` applies the B operators row-wise to ``V (B, D)``; ``v0 (B, D)`` are the start vectors.
    Example i stops when the Ritz residual beta_j abs(s_j) <= ``tol`` * max_k abs(theta_k) (its spectral
    scale estimate), at breakdown, or after ``min(iters, D)`` steps. Returns ``(theta (B,), info)``
    with ``info = {"iters": (B,) steps used, "converged": (B,) bool, "residual": (B,)}``.

    ``restrict(rows)`` (optional) returns the operator of the examples ``rows`` alone (indices into the B
    examples). A batched HVP costs about the same per example whether that example is still running or
    not, so without it the finished examples are paid for until the slowest one converges; with it, once
    at most a quarter of the working examples are running, the solver goes on with those alone (every
    example's arithmetic is row-wise, so its result does not depend on which others share the batch, up
    to the float rounding of a batched HVP of another size).
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    B, D = v0.shape
    k_max = min(int(iters), D)
    dtype, dev = v0.dtype, v0.device
    Q = torch.empty(B, k_max + 1, D, dtype=dtype, device=dev)  # row j is written before it is read
    alpha = torch.zeros(B, k_max, dtype=torch.float64, device=dev)
    beta = torch.zeros(B, k_max, dtype=torch.float64, device=dev)
    Q[:, 0] = _unit(v0)
    theta = torch.full((B,), float("nan"), dtype=torch.float64, device=dev)
    resid = torch.full((B,), float("inf"), dtype=torch.float64, device=dev)
    steps = torch.zeros(B, dtype=torch.long, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    conv = torch.zeros(B, dtype=torch.bool, device=dev)
    rows = torch.arange(B, device=dev)          # the examples of the working batch (all, until compacted)
    out = [theta.clone(), resid.clone(), steps.clone(), conv.clone()]
    for j in tqdm(range(k_max), desc="lanczos", disable=not progress, leave=False):
        q = Q[:, j]
        w = hvp(q)
        a = (w * q).sum(1)
        w = w - a[:, None] * q
        if j > 0:
            w = w - beta[:, j - 1, None].to(dtype) * Q[:, j - 1]
        basis = Q[:, : j + 1]
        for _ in range(2):  # full re-orthogonalisation, twice ("twice is enough")
            # products and sums rather than einsum: these (B, j, D) x (B, D) contractions are batched
            # matrix-vector products, which bmm runs at a third of the speed (256 x 8 x 784: 2.1 vs 0.6 ms)
            w = w - ((basis * w[:, None]).sum(2)[:, :, None] * basis).sum(1)
        b = w.norm(dim=1)
        alpha[:, j] = a.double()
        # Ritz values of the (j+1) x (j+1) tridiagonal matrix
        T = torch.diag_embed(alpha[:, : j + 1])
        if j > 0:
            off = beta[:, :j]
            T = T + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
        evals, evecs = torch.linalg.eigh(T)
        th = evals[:, -1]
        scale = evals.abs().amax(1).clamp_min(torch.finfo(dtype).tiny)
        r = b.double() * evecs[:, -1, -1].abs()
        live = ~done
        theta = torch.where(live, th, theta)
        resid = torch.where(live, r, resid)
        steps = torch.where(live, torch.full_like(steps, j + 1), steps)
        ok = live & (r <= tol * scale)
        conv |= ok
        done |= ok | (j + 1 == k_max)
        for o, v in zip(out, (theta, resid, steps, conv)):
            o[rows] = v
        if bool(done.all()):
            break
        beta[:, j] = torch.where(done, torch.zeros_like(b.double()), b.double())
        nxt = w / b.clamp_min(torch.finfo(dtype).tiny)[:, None]
        Q[:, j + 1] = nxt.masked_fill_(done[:, None], 0.0)
        if restrict is not None:
            keep = (~done).nonzero().squeeze(1)
            if len(keep) <= len(rows) // 4:    # compact: the running examples alone from here on
                rows = rows[keep]
                Q, alpha, beta = Q[keep], alpha[keep], beta[keep]
                theta, resid, steps, done, conv = (v[keep] for v in (theta, resid, steps, done, conv))
                hvp = restrict(rows)
    theta, resid, steps, conv = out
    return theta.to(dtype), {"iters": steps, "converged": conv, "residual": resid.to(dtype)}


def power_iteration(hvp: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor, iters: int = 500,
                    tol: float = 1e-5, progress: bool = False) -> tuple[torch.Tensor, dict]:
    """Largest algebraic eigenvalue of B symmetric operators by power iteration with a sign shift.

    Plain power iteration (Yao et al. 2018) converges to the eigenvalue of largest magnitude. Where
    that Rayleigh quotient mu_i is negative the example is iterated again on H_i - mu_i I, whose
    largest-magnitude eigenvalue is lambda_max - mu_i >= 0. An example stops when its Rayleigh
    quotient's remaining error, estimated from two successive changes d_k, d_{k-1} as
    d_k rho / (1 - rho) with rho = d_k / d_{k-1} (geometric convergence), is <= ``tol`` * abs(mu), or after
    ``iters`` steps (per phase).
    Returns ``(lambda (B,), info)`` like :func:`lanczos`; ``info["shifted"]`` marks shifted examples.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")

    def run(op, v, active):
        B = v.shape[0]
        v = _unit(v)
        mu = torch.full((B,), float("nan"), dtype=v.dtype, device=v.device)
        steps = torch.zeros(B, dtype=torch.long, device=v.device)
        done = ~active
        conv = torch.zeros(B, dtype=torch.bool, device=v.device)
        delta = torch.full_like(mu, float("inf"))
        tiny = torch.finfo(v.dtype).tiny
        for k in tqdm(range(int(iters)), desc="power", disable=not progress, leave=False):
            w = op(torch.where(done[:, None], torch.zeros_like(v), v))
            m = (w * v).sum(1)
            live = ~done
            ok = torch.zeros_like(live)
            if k > 0:
                d = (m - mu).abs()
                if k > 1:
                    # geometric convergence: the remaining error is about d * rho / (1 - rho)
                    rho = (d / delta.clamp_min(tiny)).clamp(max=1.0)
                    est = torch.where(rho < 1, d * rho / (1 - rho).clamp_min(tiny), torch.full_like(d, float("inf")))
                    ok = live & ((d == 0) | (est <= tol * m.abs().clamp_min(tiny)))
                    conv |= ok
                delta = torch.where(live, d, delta)
            mu = torch.where(live, m, mu)
            steps = torch.where(live, steps + 1, steps)
            done = done | ok
            if bool(done.all()):
                break
            v = torch.where(done[:, None], v, _unit(w))
        return mu, steps, conv

    all_on = torch.ones(v0.shape[0], dtype=torch.bool, device=v0.device)
    mu, steps, conv = run(hvp, v0, all_on)
    neg = mu < 0
    if bool(neg.any()):
        shift = torch.where(neg, mu, torch.zeros_like(mu))
        nu, steps2, conv2 = run(lambda v: hvp(v) - shift[:, None] * v, v0, neg)
        mu = torch.where(neg, nu + shift, mu)
        steps = steps + torch.where(neg, steps2, torch.zeros_like(steps2))
        conv = torch.where(neg, conv2, conv)
    return mu, {"iters": steps, "converged": conv, "shifted": neg}


# ----------------------------------------------------------------------------------------------------
# Public eigenvalue functions
# ----------------------------------------------------------------------------------------------------
def _start(shape: tuple[int, int], generator: torch.Generator | None, dtype, device) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)


def _solve(hvp, v0, method, iters, tol, progress, restrict=None):
    if method == "lanczos":
        return lanczos(hvp, v0, iters=iters, tol=tol, progress=progress, restrict=restrict)
    if method == "power":
        return power_iteration(hvp, v0, iters=iters, tol=tol, progress=progress)
    raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


# -- the exact Gauss-Newton form for piecewise-linear networks ---------------------------------------
def is_piecewise_linear(model: nn.Module, x: torch.Tensor, seed: int = 0) -> bool:
    """Whether the logits of ``model`` have an exactly zero second derivative in the input at ``x``.

    Computes d/dx (u^T J(x)) v for random ``u`` (per logit) and ``v`` (per input) with double
    backward. ReLU, max-pool, linear/convolution layers, BatchNorm in eval mode and padding contribute
    exact zeros, so the result is exactly 0 for a piecewise-linear network, while a smooth activation
    (tanh, softplus, GELU, ...) makes it nonzero with probability 1. Call in the mode the Hessian is
    wanted in (:func:`top_eigenvalue` uses eval mode). Raises if the output does not depend on ``x``.
    """
    g = torch.Generator().manual_seed(seed)
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(xg)
        if not out.requires_grad:
            raise _no_input_gradient()
        u = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out)
        (gx,) = torch.autograd.grad((out * u).sum(), xg, create_graph=True, allow_unused=True)
        if gx is None:
            raise _no_input_gradient()
        if not gx.requires_grad:  # the gradient does not depend on x (nor on parameters): linear
            return True
        v = torch.randn(x.shape, generator=g, dtype=torch.float64).to(xg)
        (hv,) = torch.autograd.grad(gx, xg, grad_outputs=v, allow_unused=True)
    return hv is None or bool((hv == 0).all())


def _logits_and_jacobian(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(B, C)`` and their input Jacobians ``(B, C, D)``: one forward, C backward passes.

    Exact per example because the model (eval mode) has no cross-example coupling: the gradient of
    sum_i z_c(x_i) with respect to the batch has row i equal to dz_c(x_i)/dx_i.
    """
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(xg)
        if out.dim() != 2:
            raise ValueError(f"the model must return logits (B, C), got shape {tuple(out.shape)}")
        if not out.requires_grad:
            raise _no_input_gradient()
        C = out.shape[1]
        rows = []
        for c in range(C):
            (gc,) = torch.autograd.grad(out[:, c].sum(), xg, retain_graph=c < C - 1, allow_unused=True)
            if gc is None:
                raise _no_input_gradient()
            rows.append(gc.reshape(x.shape[0], -1))
    return out.detach(), torch.stack(rows, 1)


def one_minus_pmax(z: torch.Tensor) -> torch.Tensor:
    """``1 - max softmax(z)`` per row (float64), to full relative precision: ``sum_{c != r} p_c`` of the
    other classes' probabilities, never ``1 - p_r`` (which is 0 once p_r rounds to 1)."""
    logp = z.double().log_softmax(1)
    r = logp.argmax(1, keepdim=True)
    return logp.scatter(1, r, float("-inf")).exp().sum(1)


def _pairwise_factor(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For logits z (B, C): the predicted class r (B,), the other classes (B, C-1) and L (B, C-1, C-1) in
    float64 with L L^T = diag(q) - q q^T, q = softmax(z) of the other classes (module docstring).

    L = diag(s) - a q s^T with s = sqrt(q), a = 1 / (1 + sqrt(p_r)); every entry is a product of the
    other classes' (small) probabilities, from the log-softmax, so nothing cancels when p_r -> 1.
    """
    logp = z.double().log_softmax(1)
    B, C = logp.shape
    r = logp.argmax(1)
    cls = torch.arange(C, device=z.device).expand(B, C)
    others = cls[cls != r[:, None]].view(B, C - 1)
    lq = logp.gather(1, others)
    q, sq = lq.exp(), (0.5 * lq).exp()
    a = 1.0 / (1.0 + (0.5 * logp.gather(1, r[:, None])).exp())        # (B, 1)
    L = torch.diag_embed(sq) - (a * q).unsqueeze(2) * sq.unsqueeze(1)
    return r, others, L


def _gn_chunk(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The C eigenvalues (ascending) of the pairwise Gauss-Newton form per example (module docstring)."""
    z, J = _logits_and_jacobian(model, x)
    _check_logits(z, y)
    B, C = z.shape
    if C == 1:                          # one class: p = 1, the cross-entropy is constant
        return torch.zeros(B, 1, dtype=torch.float64, device=z.device)
    r, others, L = _pairwise_factor(z)
    Jd = J.double()
    delta = Jd.gather(1, others.unsqueeze(2).expand(-1, -1, Jd.shape[2])) - Jd[torch.arange(B), r].unsqueeze(1)
    G = delta @ delta.transpose(1, 2)                                  # (B, C-1, C-1), no cancellation
    M = L.transpose(1, 2) @ G @ L
    ev = torch.linalg.eigvalsh(0.5 * (M + M.transpose(1, 2)))
    return torch.cat([torch.zeros(B, 1, dtype=ev.dtype, device=ev.device), ev], 1).sort(1).values


def _require_piecewise_linear(model: nn.Module, x: torch.Tensor, piecewise_linear: bool | None,
                              batch_size: int = 256) -> bool:
    """``piecewise_linear`` when given, else :func:`is_piecewise_linear` on *every* input, chunk by chunk
    (a model may branch on its input: the first inputs decide nothing for the others)."""
    if piecewise_linear is not None:
        return bool(piecewise_linear)
    return all(is_piecewise_linear(model, x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size))


def gauss_newton_spectrum(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
                          piecewise_linear: bool | None = None, progress: bool | None = None) -> torch.Tensor:
    """The C eigenvalues (ascending, float64, shape (B, C)) of the pairwise Gauss-Newton form per example.

    For a piecewise-linear network these are the nonzero eigenvalues of the input Hessian
    H(x_i) = J^T (diag p - p p^T) J = sum_{i<j} p_i p_j (J_i - J_j)(J_i - J_j)^T of the cross-entropy,
    computed without cancellation as the eigenvalues of M = L^T Delta Delta^T L (see the module docstring)
    -- plus one zero, as diag p - p p^T has rank C - 1; the remaining D - C eigenvalues of H are zero.
    ``piecewise_linear=None`` checks every input with :func:`is_piecewise_linear` and raises if one is not;
    ``True`` skips the check (the caller asserts it). Runs in eval mode (restored afterwards).
    ``progress``: a bar over the chunks (``None``: on a terminal only).
    """
    check_batch(x, y)
    dev = device_of(model, default=x.device)
    with eval_mode(model):
        if not _require_piecewise_linear(model, x.to(dev), piecewise_linear, batch_size):
            raise ValueError("the model is not piecewise linear (its logits have a nonzero second derivative in "
                             "the input), so J^T (diag p - p p^T) J is only the Gauss-Newton approximation of "
                             "the input Hessian; use method='lanczos' or 'power'")
        parts = [_gn_chunk(model, x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev))
                 for i in tqdm(range(0, x.shape[0], batch_size), desc="Gauss-Newton", leave=False,
                               disable=not show_progress(progress))]
    return torch.cat(parts).to(x.device)


def _check_solver_args(method: str, backend: str, precision: str, batch_size: int) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")


class _Float64Copy:
    """A float64 copy of the model, made on first use (for saturated chunks of a float32 model)."""

    def __init__(self, model: nn.Module):
        self.model, self.copy = model, None

    def get(self) -> nn.Module:
        if self.copy is None:
            import copy

            self.copy = copy.deepcopy(self.model).double().eval()
        return self.copy


def _needs_float64(model: nn.Module, x: torch.Tensor, precision: str) -> bool:
    """Whether an iterative solve on ``x`` should run in float64 (see the module docstring); warns where even
    float64 Hessian-vector products cannot resolve an input (1 - p_max < ``FLOAT64_RESOLUTION``)."""
    with torch.no_grad():
        gap = one_minus_pmax(model(x))
    if bool((gap < FLOAT64_RESOLUTION).any()):
        warnings.warn(f"{int((gap < FLOAT64_RESOLUTION).sum())} input(s) have 1 - p_max down to {float(gap.min()):.2g} "
                      f"(< {FLOAT64_RESOLUTION:g}): Hessian-vector products lose their eigenvalues to rounding even in "
                      f"float64; for a piecewise-linear model use method='exact' (the default 'auto' picks it), "
                      f"whose pairwise form does not need 1 - p_max", RuntimeWarning, stacklevel=3)
    if precision == "float64":
        return x.dtype != torch.float64
    if precision == "native" or x.dtype == torch.float64:
        return False
    return bool((gap < 1 - SATURATION).any())


def top_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, iters: int | None = None,
                   tol: float = 1e-5, method: str = "auto", generator: torch.Generator | None = None,
                   backend: str = "autograd", batch_size: int = 256, return_info: bool = False,
                   progress: bool | None = None, piecewise_linear: bool | None = None, precision: str = "auto"):
    """Largest algebraic eigenvalue of the input Hessian of the per-example cross-entropy, shape (B,).

    For every example, lambda_max( d^2 CE(f(x_i), y_i) / dx_i^2 ) -- the quantity Zhao et al. (2020,
    Section 5) track along the path between a regular and an adversarially trained model.

    ``method``: ``"auto"`` (default) is ``"exact"`` for a piecewise-linear model and ``"lanczos"``
    otherwise; ``"exact"`` is the largest eigenvalue of the Gauss-Newton form (exact for ReLU/max-pool/
    BatchNorm-eval networks, see the module docstring; raises for other models unless
    ``piecewise_linear=True``); ``"lanczos"`` (``iters`` defaults to 64) or ``"power"``
    (shift-corrected, default 500) are iterative, with ``tol`` the relative stopping tolerance and
    ``generator`` seeding the random start vectors. ``piecewise_linear``: ``None`` detects it
    (:func:`is_piecewise_linear` on every input, chunk by chunk), ``True``/``False`` asserts it.
    ``precision`` (iterative methods): ``"auto"`` runs chunks holding an input with max softmax above
    ``SATURATION`` in float64 (float32 loses their small eigenvalues), ``"float64"`` always,
    ``"native"`` never. Examples are processed ``batch_size`` at a time, all of a chunk in one batched
    HVP per step. With ``return_info`` also returns per-example ``{"iters", "converged", "residual" or
    "shifted", "exact", "float64"}`` (``iters`` 0 and ``converged`` True on the exact path). ``progress``: a
    bar over chunks or iterations (``None``: on a terminal only, :func:`mclib.torchutil.show_progress`).
    """
    check_batch(x, y)
    _check_solver_args(method, backend, precision, batch_size)
    dev = device_of(model, default=x.device)
    progress = show_progress(progress)
    with eval_mode(model):
        exact = method == "exact" or (method == "auto" and _require_piecewise_linear(model, x.to(dev), piecewise_linear,
                                                                                     batch_size))
        if exact:
            checked = True if method == "auto" else piecewise_linear  # "exact" checks unless asserted
            lam64 = gauss_newton_spectrum(model, x, y, batch_size=batch_size, piecewise_linear=checked,
                                          progress=progress)[:, -1]
            out = lam64.clamp_min(0).to(x.dtype)  # H is positive semi-definite
            lost = (lam64 > 0) & (out == 0)
            if bool(lost.any()):        # a saturated input's eigenvalue below the input dtype's range
                warnings.warn(f"{int(lost.sum())} top eigenvalue(s) down to {float(lam64[lost].min()):.3g} are below "
                              f"{x.dtype}'s range and returned as 0; gauss_newton_spectrum(...)[:, -1] gives them in "
                              f"float64", RuntimeWarning, stacklevel=2)
            if not return_info:
                return out
            B = x.shape[0]
            on = torch.ones(B, dtype=torch.bool, device=x.device)
            return out, {"iters": torch.zeros(B, dtype=torch.long, device=x.device), "converged": on,
                         "residual": torch.zeros(B, dtype=x.dtype, device=x.device), "exact": on,
                         "float64": on.clone()}
        method = "lanczos" if method == "auto" else method
        if iters is None:
            iters = 64 if method == "lanczos" else 500
        wide = _Float64Copy(model)
        vals, infos = [], []
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
            m = model
            up = _needs_float64(model, xb, precision)
            if up:
                m, xb = wide.get(), xb.double()
            hvp = input_hvp(m, xb, yb, backend=backend)
            v0 = _start((xb.shape[0], xb[0].numel()), generator, xb.dtype, dev)
            # the slow examples go on alone once the others have converged (lanczos' restrict argument)
            restrict = lambda rows: input_hvp(m, xb[rows], yb[rows], backend=backend)  # noqa: E731
            lam, info = _solve(hvp, v0, method, iters, tol, progress, restrict)
            vals.append(lam.detach().to(x.dtype))
            info = {k: (v.to(x.dtype) if v.is_floating_point() else v) for k, v in info.items()}
            info["exact"] = torch.zeros(len(xb), dtype=torch.bool, device=dev)
            info["float64"] = torch.full((len(xb),), up or xb.dtype == torch.float64, dtype=torch.bool, device=dev)
            infos.append(info)
    out = torch.cat(vals).to(x.device)
    if not return_info:
        return out
    return out, {k: torch.cat([inf[k] for inf in infos]).to(x.device) for k in infos[0]}


def batch_top_eigenvalue(model: nn.Module, X: torch.Tensor, y: torch.Tensor, iters: int | None = None,
                         tol: float = 1e-5, method: str = "auto", generator: torch.Generator | None = None,
                         return_info: bool = False, progress: bool | None = None, piecewise_linear: bool | None = None,
                         precision: str = "auto"):
    """The paper's variant: largest eigenvalue of the Hessian of the *batch-mean* loss w.r.t. all of ``X``.

    Zhao et al. (2020, Section 5) follow Yao et al. (2018): power iteration on Hessian-vector products
    of the mean cross-entropy over a batch, the input batch flattened into one vector of B*D entries.
    In eval mode (no cross-example coupling) this equals ``top_eigenvalue(model, X, y).max() / len(X)``,
    and ``method="auto"`` (the default, as for :func:`top_eigenvalue`: one default for both) computes it so
    -- exactly, by the pairwise Gauss-Newton form, for a piecewise-linear model, by per-example Lanczos
    otherwise. ``"exact"`` forces the exact path; ``"power"`` is the paper's own method (power iteration on the
    whole batch, with the sign shift) and ``"lanczos"`` the same operator by Lanczos -- on confident inputs both
    lose the small eigenvalues to rounding (float32 power iteration was 0.53 off on a saturated CIFAR input;
    float64 too once 1 - p_max < ``FLOAT64_RESOLUTION``, with a warning). ``precision`` as in
    :func:`top_eigenvalue` (float64 when an input is near saturation). Returns a 0-dim tensor.
    """
    check_batch(X, y)
    _check_solver_args(method, "autograd", precision, 1)
    dev = device_of(model, default=X.device)
    Xd, yd = X.to(dev), y.to(dev)
    B = Xd.shape[0]
    if method in ("exact", "auto"):
        lam, info = top_eigenvalue(model, Xd, yd, method=method, iters=iters, tol=tol, generator=generator,
                                   return_info=True, progress=progress, piecewise_linear=piecewise_linear,
                                   precision=precision)
        i = int(lam.argmax())
        out = (lam[i] / B).to(X.device)
        return (out, {k: v[i:i + 1] for k, v in info.items()}) if return_info else out
    if iters is None:
        iters = 64 if method == "lanczos" else 500
    progress = show_progress(progress)
    with eval_mode(model):
        m = model
        if _needs_float64(model, Xd, precision):
            m, Xd = _Float64Copy(model).get(), Xd.double()
        inner = input_hvp(m, Xd, yd, backend="autograd", reduction="mean")
        hvp = lambda v: inner(v.reshape(B, -1)).reshape(1, -1)  # noqa: E731
        v0 = _start((1, Xd[0].numel() * B), generator, Xd.dtype, dev)
        lam, info = _solve(hvp, v0, method, iters, tol, progress)
    lam = lam.to(X.dtype)
    return (lam[0], info) if return_info else lam[0]


def exact_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Reference: the full per-example input Hessians (B, D, D) by ``torch.func.hessian`` (small D only)."""
    check_batch(x, y)
    from torch.func import functional_call, hessian, vmap
    _import_forward_mode()

    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    shape = x.shape[1:]

    def loss_one(xi, yi):
        out = functional_call(model, (params, buffers), (xi.reshape(shape).unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    with eval_mode(model):
        H = vmap(hessian(loss_one))(x.detach().reshape(x.shape[0], -1), y)
    return H


def exact_top_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Reference: ``eigvalsh`` of :func:`exact_hessian`, largest eigenvalue per example (B,)."""
    H = exact_hessian(model, x, y)
    return torch.linalg.eigvalsh(0.5 * (H + H.transpose(1, 2)))[:, -1]
