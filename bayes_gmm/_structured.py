"""M-steps of mclust's ten constrained covariance models (compiled with numba).

Each covariance is decomposed as ``Sigma_k = lambda_k D_k A_k D_k'`` (volume ``lambda_k``,
orientation ``D_k``, shape ``A_k`` diagonal with determinant 1; Celeux & Govaert 1995) and a
model fixes each of the three to be Equal across components, Variable, or the Identity. The
covariance part of the M-step minimizes, over the model's covariances,

    f = sum_k [ n_k log det Sigma_k + tr(W_k inv(Sigma_k)) ]

for the components' scatter matrices ``W_k`` and weights ``n_k`` (under a conjugate prior
the same problem with the posterior's scatter and weights). EII, EEI, EVI, EEV and EVV have
closed forms. VEI, VEE and VEV alternate exact updates of the volumes and of the shared
shape (and orientation), and EVE and VVE alternate exact updates of the shapes and volumes
with Jacobi rotations of the common orientation, each rotation minimizing ``f`` exactly over
its angle (a coordinate-descent alternative to the majorization of Browne & McNicholas
2014). The iterative ones start from the previous covariances, so that every inner step can
only lower ``f``: the EM objective never decreases.

The same compiled functions serve ``GaussianMixture.fit`` (numpy EM) and the selection
grid's kernel (:mod:`bayes_gmm._em_kernel`), one source for each formula.
"""

from __future__ import annotations

import math

import numba
import numpy as np

#: Integer codes of the ten models (the four scikit-learn ones have their own M-steps).
CODES = {
    "EII": 4,
    "EEI": 5,
    "VEI": 6,
    "EVI": 7,
    "VEE": 8,
    "EVE": 9,
    "VVE": 10,
    "EEV": 11,
    "VEV": 12,
    "EVV": 13,
}
_EII, _EEI, _VEI, _EVI, _VEE, _EVE, _VVE, _EEV, _VEV, _EVV = range(4, 14)

#: Inner iterations stop when ``f`` changes by less than this, relative, or after
#: ``INNER_MAX_ITER`` rounds.
INNER_TOL = 1e-12
INNER_MAX_ITER = 200

_jit = numba.njit(cache=True, nogil=True)


@_jit
def _geometric_mean(values):
    s = 0.0
    for v in values:
        s += math.log(v)
    return math.exp(s / values.size)


@_jit
def _eigh_desc(matrix):
    """Eigenvalues (descending) and eigenvectors (columns) of a symmetric matrix."""
    values, vectors = np.linalg.eigh(matrix)
    return values[::-1].copy(), np.ascontiguousarray(vectors[:, ::-1])


@_jit
def _log_det_volume(cov):
    """``det(cov) ** (1 / d)``, the volume ``lambda`` of a covariance."""
    values = np.linalg.eigvalsh(cov)
    if values[0] <= 0.0:
        return 1.0
    return _geometric_mean(values)


@_jit
def _solve_trace(W, C):
    """``tr(W inv(C))`` for symmetric positive-definite ``C``."""
    return np.trace(np.linalg.solve(C, W))


@_jit
def structured_covariances(code, W, n, previous, out):
    """Covariances of model ``code`` that minimize ``f`` (see the module docstring).

    Parameters
    ----------
    code : int
        ``CODES[name]``.
    W : ndarray of shape (K, d, d)
        Scatter matrices (about the component means; under a prior, the posterior's).
    n : ndarray of shape (K,)
        Component weights (under a prior, the posterior's effective counts).
    previous : ndarray of shape (K, d, d)
        The current covariances: where the iterative models start.
    out : ndarray of shape (K, d, d)
        Filled with the new covariances.

    Returns
    -------
    bool
        False when a scatter matrix is not positive definite where the model needs it (a
        collapsed component): ``out`` is then not usable.
    """
    K, d = W.shape[0], W.shape[1]
    total = 0.0
    for k in range(K):
        total += n[k]
    out[:] = 0.0
    if code == _EII:
        s = 0.0
        for k in range(K):
            s += np.trace(W[k])
        var = s / (d * total)
        if not var > 0.0:
            return False
        for k in range(K):
            for a in range(d):
                out[k, a, a] = var
        return True
    if code == _EEI:
        for a in range(d):
            s = 0.0
            for k in range(K):
                s += W[k, a, a]
            if not s > 0.0:
                return False
            for k in range(K):
                out[k, a, a] = s / total
        return True
    if code == _EVI:
        volume = 0.0
        geo = np.empty(K)
        for k in range(K):
            diag = np.diag(W[k]).copy()
            if not diag.min() > 0.0:
                return False
            geo[k] = _geometric_mean(diag)
            volume += geo[k]
        volume /= total
        for k in range(K):
            for a in range(d):
                out[k, a, a] = volume * W[k, a, a] / geo[k]
        return True
    if code == _EEV:
        values = np.empty((K, d))
        vectors = np.empty((K, d, d))
        shape = np.zeros(d)
        for k in range(K):
            values[k], vectors[k] = _eigh_desc(W[k])
            shape += values[k]
        if not shape.min() > 0.0:
            return False
        scale = 1.0 / total  # lambda A = (sum_k Omega_k) / n
        for k in range(K):
            V = vectors[k]
            out[k] = (V * (shape * scale)) @ V.T
        return True
    if code == _EVV:
        volume = 0.0
        geo = np.empty(K)
        for k in range(K):
            values = np.linalg.eigvalsh(W[k])
            if not values[0] > 0.0:
                return False
            geo[k] = _geometric_mean(values)
            volume += geo[k]
        volume /= total
        for k in range(K):
            out[k] = W[k] * (volume / geo[k])
        return True
    if code == _VEI or code == _VEE or code == _VEV:
        return _variable_volume_equal_shape(code, W, n, previous, out)
    if code == _EVE or code == _VVE:
        return _common_orientation(code, W, n, previous, out)
    return False


@_jit
def _variable_volume_equal_shape(code, W, n, previous, out):
    """VEI, VEE, VEV: alternate the shared shape (and orientation) and the volumes."""
    K, d = W.shape[0], W.shape[1]
    volumes = np.empty(K)
    for k in range(K):
        volumes[k] = _log_det_volume(previous[k])
    # VEV: the orientations are the scatter's eigenvectors whatever the shape (the largest
    # scatter direction takes the largest shape value), so only eigenvalues are iterated.
    values = np.empty((K, d))
    vectors = np.empty((K, d, d))
    if code == _VEV:
        for k in range(K):
            values[k], vectors[k] = _eigh_desc(W[k])
    elif code == _VEI:
        for k in range(K):
            values[k] = np.diag(W[k])
    shape = np.eye(d)
    f_old = np.inf
    for _ in range(INNER_MAX_ITER):
        if code == _VEE:
            S = np.zeros((d, d))
            for k in range(K):
                S += W[k] / volumes[k]
            det_values = np.linalg.eigvalsh(S)
            if not det_values[0] > 0.0:
                return False
            shape = S / _geometric_mean(det_values)
            f = 0.0
            for k in range(K):
                t = _solve_trace(W[k], shape)
                volumes[k] = t / (d * n[k])
                if not volumes[k] > 0.0:
                    return False
                f += d * n[k] * math.log(volumes[k]) + t / volumes[k]
        else:
            s = np.zeros(d)
            for k in range(K):
                s += values[k] / volumes[k]
            if not s.min() > 0.0:
                return False
            a = s / _geometric_mean(s)
            f = 0.0
            for k in range(K):
                t = 0.0
                for j in range(d):
                    t += values[k, j] / a[j]
                volumes[k] = t / (d * n[k])
                if not volumes[k] > 0.0:
                    return False
                f += d * n[k] * math.log(volumes[k]) + t / volumes[k]
            for j in range(d):
                shape[j, j] = a[j]
        if abs(f_old - f) <= INNER_TOL * abs(f):
            break
        f_old = f
    for k in range(K):
        if code == _VEV:
            V = vectors[k]
            out[k] = (V * (volumes[k] * np.diag(shape))) @ V.T
        else:
            out[k] = volumes[k] * shape
    return True


@_jit
def _common_orientation(code, W, n, previous, out):
    """EVE, VVE: ``Sigma_k = D Psi_k D'`` with a shared orientation ``D``.

    ``Psi_k = lambda A_k`` (EVE) or ``lambda_k A_k`` (VVE), diagonal. Given ``D`` the
    ``Psi_k`` have closed forms; given them, ``D`` is improved by sweeps of Jacobi
    rotations, each minimizing ``f`` exactly over its angle.
    """
    K, d = W.shape[0], W.shape[1]
    total = 0.0
    for k in range(K):
        total += n[k]
    # The previous orientation: the eigenvectors of a combination of the previous
    # covariances (they all share it), with distinct coefficients so that ties are rare.
    mix = np.zeros((d, d))
    for k in range(K):
        mix += (1.0 + 0.618034 * k) * previous[k]
    _, D = _eigh_desc(mix)
    M = np.empty((K, d, d))
    for k in range(K):
        M[k] = D.T @ W[k] @ D
    psi = np.empty((K, d))
    inv = np.empty((K, d))
    f_old = np.inf
    for _ in range(INNER_MAX_ITER):
        # Shapes and volumes given D.
        if code == _VVE:
            for k in range(K):
                for j in range(d):
                    psi[k, j] = M[k, j, j] / n[k]
        else:
            volume = 0.0
            for k in range(K):
                volume += _geometric_mean(np.diag(M[k]).copy())
            volume /= total
            for k in range(K):
                g = _geometric_mean(np.diag(M[k]).copy())
                for j in range(d):
                    psi[k, j] = volume * M[k, j, j] / g
        for k in range(K):
            for j in range(d):
                if not psi[k, j] > 0.0:
                    return False
                inv[k, j] = 1.0 / psi[k, j]
        # One sweep of rotations of D given the Psi_k. Rotating columns i, j by theta
        # changes f by P cos(2 theta) + Q sin(2 theta) + const, minimal at
        # (cos, sin)(2 theta) = -(P, Q) / hypot(P, Q).
        for i in range(d - 1):
            for j in range(i + 1, d):
                P = 0.0
                Q = 0.0
                for k in range(K):
                    b = inv[k, i] - inv[k, j]
                    P += 0.5 * b * (M[k, i, i] - M[k, j, j])
                    Q += b * M[k, i, j]
                r = math.hypot(P, Q)
                if r == 0.0:
                    continue
                theta = 0.5 * math.atan2(-Q, -P)
                c, s = math.cos(theta), math.sin(theta)
                for a in range(d):
                    di, dj = D[a, i], D[a, j]
                    D[a, i] = c * di + s * dj
                    D[a, j] = -s * di + c * dj
                for k in range(K):
                    for a in range(d):
                        mi, mj = M[k, a, i], M[k, a, j]
                        M[k, a, i] = c * mi + s * mj
                        M[k, a, j] = -s * mi + c * mj
                    for a in range(d):
                        mi, mj = M[k, i, a], M[k, j, a]
                        M[k, i, a] = c * mi + s * mj
                        M[k, j, a] = -s * mi + c * mj
        f = 0.0
        for k in range(K):
            for j in range(d):
                f += n[k] * math.log(psi[k, j]) + M[k, j, j] * inv[k, j]
        if abs(f_old - f) <= INNER_TOL * abs(f):
            break
        f_old = f
    # Shapes and volumes for the final D (exact given it, so f only drops further).
    if code == _VVE:
        for k in range(K):
            for j in range(d):
                psi[k, j] = M[k, j, j] / n[k]
    else:
        volume = 0.0
        for k in range(K):
            volume += _geometric_mean(np.diag(M[k]).copy())
        volume /= total
        for k in range(K):
            g = _geometric_mean(np.diag(M[k]).copy())
            for j in range(d):
                psi[k, j] = volume * M[k, j, j] / g
    for k in range(K):
        for j in range(d):
            if not psi[k, j] > 0.0:
                return False
        out[k] = (D * psi[k]) @ D.T
    return True
