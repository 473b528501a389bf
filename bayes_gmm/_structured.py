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
def _eigh_desc(matrix, values, vectors):
    """Eigenvalues (descending) and eigenvectors (columns) of a symmetric matrix, in place.

    Cyclic Jacobi rotations: for the small matrices here (d of a few to a few tens) it is
    several times faster than a LAPACK call through numba, which copies and allocates
    workspace on every call, and as accurate.
    """
    d = matrix.shape[0]
    A = matrix.copy()
    V = vectors
    V[:] = 0.0
    scale = 0.0
    for a in range(d):
        V[a, a] = 1.0
        scale += A[a, a] * A[a, a]
    for _ in range(100):
        off = 0.0
        for p in range(d - 1):
            for q in range(p + 1, d):
                off += A[p, q] * A[p, q]
        if off <= 1e-32 * scale or off == 0.0:
            break
        for p in range(d - 1):
            for q in range(p + 1, d):
                apq = A[p, q]
                if apq == 0.0:
                    continue
                theta = (A[q, q] - A[p, p]) / (2.0 * apq)
                t = 1.0 / (abs(theta) + math.sqrt(theta * theta + 1.0))
                if theta < 0.0:
                    t = -t
                c = 1.0 / math.sqrt(t * t + 1.0)
                s = t * c
                for k in range(d):
                    akp, akq = A[k, p], A[k, q]
                    A[k, p] = c * akp - s * akq
                    A[k, q] = s * akp + c * akq
                for k in range(d):
                    apk, aqk = A[p, k], A[q, k]
                    A[p, k] = c * apk - s * aqk
                    A[q, k] = s * apk + c * aqk
                for k in range(d):
                    vkp, vkq = V[k, p], V[k, q]
                    V[k, p] = c * vkp - s * vkq
                    V[k, q] = s * vkp + c * vkq
    for a in range(d):
        values[a] = A[a, a]
    # Selection sort, descending, swapping the eigenvectors along.
    for a in range(d - 1):
        top = a
        for b in range(a + 1, d):
            if values[b] > values[top]:
                top = b
        if top != a:
            values[a], values[top] = values[top], values[a]
            for k in range(d):
                V[k, a], V[k, top] = V[k, top], V[k, a]


@_jit
def _compose(vectors, scales, out):
    """``out = vectors @ diag(scales) @ vectors.T`` (explicit loops: no BLAS call)."""
    d = vectors.shape[0]
    for a in range(d):
        for b in range(a, d):
            s = 0.0
            for j in range(d):
                s += vectors[a, j] * scales[j] * vectors[b, j]
            out[a, b] = s
            out[b, a] = s


@_jit
def cholesky_into(A, L):
    """Lower Cholesky factor of ``A`` into ``L``; False if not positive definite."""
    d = A.shape[0]
    for j in range(d):
        s = A[j, j]
        for m in range(j):
            s -= L[j, m] * L[j, m]
        if not s > 0.0:
            return False
        L[j, j] = math.sqrt(s)
        for i in range(j + 1, d):
            s = A[i, j]
            for m in range(j):
                s -= L[i, m] * L[j, m]
            L[i, j] = s / L[j, j]
    return True


@_jit
def _volume(cov):
    """``det(cov) ** (1 / d)``, the volume ``lambda`` (0 if not positive definite)."""
    d = cov.shape[0]
    L = np.zeros((d, d))
    if not cholesky_into(cov, L):
        return 0.0
    s = 0.0
    for a in range(d):
        s += math.log(L[a, a])
    return math.exp(2.0 * s / d)


@_jit
def precision_into(cov, prec, chol, inv_chol):
    """``prec = inv(cov)`` through its Cholesky factor ``chol`` and that factor's inverse
    ``inv_chol`` (all (d, d), filled); returns (ok, log det of ``cov``)."""
    d = cov.shape[0]
    if not cholesky_into(cov, chol):
        return False, 0.0
    # Forward substitution, column by column of the identity.
    for c in range(d):
        for i in range(d):
            if i < c:
                inv_chol[i, c] = 0.0
                continue
            s = 1.0 if i == c else 0.0
            for m in range(c, i):
                s -= chol[i, m] * inv_chol[m, c]
            inv_chol[i, c] = s / chol[i, i]
    log_det = 0.0
    for j in range(d):
        log_det += 2.0 * math.log(chol[j, j])
    for a in range(d):
        for b in range(a, d):
            s = 0.0
            for m in range(b, d):
                s += inv_chol[m, a] * inv_chol[m, b]
            prec[a, b] = s
            prec[b, a] = s
    return True, log_det


@_jit
def _inverse(A, out, chol, inv_chol):
    """``out = inv(A)`` for symmetric positive-definite ``A``; returns its volume or 0.

    ``chol`` and ``inv_chol`` are (d, d) work arrays, zero above the diagonal.
    """
    d = A.shape[0]
    ok, log_det = precision_into(A, out, chol, inv_chol)
    if not ok:
        return 0.0
    return math.exp(log_det / d)


@_jit
def _diagonal_geometric_mean(M):
    s = 0.0
    d = M.shape[0]
    for a in range(d):
        s += math.log(M[a, a])
    return math.exp(s / d)


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
            _eigh_desc(W[k], values[k], vectors[k])
            shape += values[k]
        if not shape.min() > 0.0:
            return False
        scale = 1.0 / total  # lambda A = (sum_k Omega_k) / n
        shape *= scale
        for k in range(K):
            _compose(vectors[k], shape, out[k])
        return True
    if code == _EVV:
        volume = 0.0
        geo = np.empty(K)
        for k in range(K):
            geo[k] = _volume(W[k])
            if geo[k] == 0.0:
                return False
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
    """VEI, VEE, VEV: alternate the shared shape (and orientation) and the volumes.

    A component with no weight (``n[k] == 0``: VEV's MAP update, whose prior adds no count,
    once a component emptied) has no optimal volume; it keeps its previous covariance and
    takes no part in the shape.
    """
    K, d = W.shape[0], W.shape[1]
    volumes = np.empty(K)
    active = 0
    for k in range(K):
        volumes[k] = _volume(previous[k])
        if volumes[k] == 0.0:  # not a usable start: any positive volume will do
            volumes[k] = 1.0
        if n[k] > 0.0:
            active += 1
    if active == 0:
        return False
    # VEV: the orientations are the scatter's eigenvectors whatever the shape (the largest
    # scatter direction takes the largest shape value), so only eigenvalues are iterated.
    values = np.empty((K, d))
    vectors = np.empty((K, d, d))
    if code == _VEV:
        for k in range(K):
            _eigh_desc(W[k], values[k], vectors[k])
    elif code == _VEI:
        for k in range(K):
            values[k] = np.diag(W[k])
    shape = np.eye(d)
    inv_shape = np.eye(d)
    # Work arrays, allocated once: the inner loop runs up to INNER_MAX_ITER times per M-step.
    S = np.empty((d, d))
    chol = np.zeros((d, d))
    inv_chol = np.zeros((d, d))
    s = np.empty(d)
    shape_values = np.empty(d)
    f_old = np.inf
    for _ in range(INNER_MAX_ITER):
        if code == _VEE:
            S[:] = 0.0
            for k in range(K):
                if not n[k] > 0.0:
                    continue
                for i in range(d):
                    for j in range(d):
                        S[i, j] += W[k, i, j] / volumes[k]
            volume = _inverse(S, inv_shape, chol, inv_chol)
            if volume == 0.0:
                return False
            for i in range(d):
                for j in range(d):
                    shape[i, j] = S[i, j] / volume
            inv_shape *= volume
            f = 0.0
            for k in range(K):
                if not n[k] > 0.0:
                    continue
                t = 0.0
                for a in range(d):
                    for b in range(d):
                        t += W[k, a, b] * inv_shape[a, b]
                volumes[k] = t / (d * n[k])
                if not volumes[k] > 0.0:
                    return False
                f += d * n[k] * math.log(volumes[k]) + t / volumes[k]
        else:
            s[:] = 0.0
            for k in range(K):
                if not n[k] > 0.0:
                    continue
                for j in range(d):
                    s[j] += values[k, j] / volumes[k]
            if not s.min() > 0.0:
                return False
            geometric_mean = _geometric_mean(s)
            for j in range(d):
                shape_values[j] = s[j] / geometric_mean
            f = 0.0
            for k in range(K):
                if not n[k] > 0.0:
                    continue
                t = 0.0
                for j in range(d):
                    t += values[k, j] / shape_values[j]
                volumes[k] = t / (d * n[k])
                if not volumes[k] > 0.0:
                    return False
                f += d * n[k] * math.log(volumes[k]) + t / volumes[k]
            for j in range(d):
                shape[j, j] = shape_values[j]
        if abs(f_old - f) <= INNER_TOL * abs(f):
            break
        f_old = f
    for k in range(K):
        if not n[k] > 0.0:
            out[k] = previous[k]
        elif code == _VEV:
            _compose(vectors[k], volumes[k] * np.diag(shape), out[k])
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
        c = 1.0 + 0.618034 * k
        for a in range(d):
            for b in range(d):
                mix[a, b] += c * previous[k, a, b]
    D = np.empty((d, d))
    _eigh_desc(mix, np.empty(d), D)
    # M[k] = D' W[k] D, in loops: numba's @ calls BLAS (and allocates) for these tiny
    # matrices, which cost more than the rest of the M-step.
    M = np.empty((K, d, d))
    WD = np.empty((d, d))
    for k in range(K):
        for a in range(d):
            for b in range(d):
                t = 0.0
                for j in range(d):
                    t += W[k, a, j] * D[j, b]
                WD[a, b] = t
        for a in range(d):
            for b in range(d):
                t = 0.0
                for i in range(d):
                    t += D[i, a] * WD[i, b]
                M[k, a, b] = t
    psi = np.empty((K, d))
    inv = np.empty((K, d))
    f_old = np.inf
    for _ in range(INNER_MAX_ITER):
        if not _diagonal_scales(code, M, n, total, psi):
            return False
        for k in range(K):
            for j in range(d):
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
    if not _diagonal_scales(code, M, n, total, psi):
        return False
    for k in range(K):
        _compose(D, psi[k], out[k])
    return True


@_jit
def _diagonal_scales(code, M, n, total, psi):
    """EVE, VVE: the diagonal ``Psi_k`` minimizing ``f`` given the orientation.

    ``M[k]`` is the scatter in the orientation's frame; ``psi`` is filled. False if a
    scatter has a non-positive diagonal entry (a collapsed component).
    """
    K, d = psi.shape
    for k in range(K):
        for j in range(d):
            if not M[k, j, j] > 0.0:
                return False
    if code == _VVE:  # lambda_k A_k: any diagonal, per component
        for k in range(K):
            for j in range(d):
                psi[k, j] = M[k, j, j] / n[k]
        return True
    volume = 0.0  # EVE: lambda A_k, one volume
    for k in range(K):
        volume += _diagonal_geometric_mean(M[k])
    volume /= total
    for k in range(K):
        g = _diagonal_geometric_mean(M[k])
        for j in range(d):
            psi[k, j] = volume * M[k, j, j] / g
    return True
