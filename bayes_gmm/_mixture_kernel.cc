// The mixture's summed log-likelihood and its gradient in one pass over the rows: the
// CPU kernel behind bayes_gmm._mixture_op.MixtureTotal (an XLA FFI custom call).
//
//   value      = sum_n w_n logsumexp_k (C F + o)_kn
//   d value/dC = R F^T,   d value/do = R 1,   R_kn = w_n softmax_k (C F + o)_kn
//
// with C (K, q) the components' coefficients, o (K,) their constants, w (n,) the row
// weights and F (q, n) the rows' features [x_i x_j (i <= j), x], q = d (d + 1) / 2 + d,
// computed here tile by tile from the rows' coordinates xt (d, n) (row-major: each
// coordinate's values over the rows are contiguous). The JAX form of the same pass
// (_mixture_op.py) stays as the fallback and as this kernel's derivative; tests pin the two.
//
// Why it is written this way: XLA's CPU code for these thin products runs at a few
// GFLOP/s. Here the rows sit in the vector lanes (kLanes rows per vector, kVectors
// vectors per tile), so every product is a broadcast multiply-add with no horizontal
// reduction, each component of a group has its own accumulators (independent chains for
// the multiply-add latency), and the tile's features, made in L1 from its coordinates,
// serve both products: a pass reads d numbers per row from memory instead of q. exp and
// log are polynomials on the same vectors (no libm call per element), accurate to a few
// ulp on the ranges used here.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kLanes = 8;    // doubles per vector (an AVX-512 register; AVX2 uses two)
constexpr int kVectors = 4;  // vectors per tile
constexpr int kTile = kLanes * kVectors;
constexpr int kGroup = 4;  // components per register group

typedef double vd __attribute__((vector_size(kLanes * sizeof(double))));
typedef int64_t vi __attribute__((vector_size(kLanes * sizeof(double))));

inline vd load(const double* p) {
  vd v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store(double* p, vd v) { std::memcpy(p, &v, sizeof v); }

inline vd splat(double x) { return vd{} + x; }

inline double total_of(vd v) {
  double s = 0.0;
  for (int l = 0; l < kLanes; ++l) s += v[l];
  return s;
}

inline vi bits_of(vd v) {
  vi b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

inline vd double_of(vi b) {
  vd v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}

// c[0] + x (c[1] + x (c[2] + ...)), unrolled: N is known at compile time.
template <size_t N>
inline vd polynomial(vd x, const double (&c)[N]) {
  vd p = splat(c[N - 1]);
  for (size_t i = N - 1; i-- > 0;) p = p * x + c[i];
  return p;
}

// 1 / i!, i = 0..13: exp's Taylor series.
constexpr double kExpSeries[] = {1.0,
                                 1.0,
                                 1.0 / 2.0,
                                 1.0 / 6.0,
                                 1.0 / 24.0,
                                 1.0 / 120.0,
                                 1.0 / 720.0,
                                 1.0 / 5040.0,
                                 1.0 / 40320.0,
                                 1.0 / 362880.0,
                                 1.0 / 3628800.0,
                                 1.0 / 39916800.0,
                                 1.0 / 479001600.0,
                                 1.0 / 6227020800.0};
// 1 / (2i + 1), i = 0..10: atanh(t) / t in powers of t^2.
constexpr double kAtanhSeries[] = {1.0,        1.0 / 3.0,  1.0 / 5.0,  1.0 / 7.0,
                                   1.0 / 9.0,  1.0 / 11.0, 1.0 / 13.0, 1.0 / 15.0,
                                   1.0 / 17.0, 1.0 / 19.0, 1.0 / 21.0};

// exp(x) for x <= 0 (here x = a log density minus the row's largest): 2^n exp(r) with
// |r| <= ln2/2 and a degree-13 Taylor polynomial (truncation below 2e-16 relative). Below
// -708 the result is 0 (a share under 1e-307 of the row's largest term); -inf gives 0 and
// NaN stays NaN.
inline vd exp_nonpositive(vd x) {
  const double shifter = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
  const vd t = x * 1.4426950408889634 + shifter;
  const vd n = t - shifter;
  vd r = x - n * 0.6931471803691238;  // ln 2 in two parts: n * hi is exact
  r = r - n * 1.9082149292705877e-10;
  const vd p = polynomial(r, kExpSeries);
  // The low bits of t hold n; n + 1023 in the exponent field is 2^n (n >= -1022 here).
  const vd scale = double_of((bits_of(t) + 1023) << 52);
  return x < -708.0 ? splat(0.0) : p * scale;
}

// log(s) for s >= 1 (a sum of exponentials whose largest is 1): s = 2^e m with m in
// [sqrt(1/2), sqrt(2)), log m = 2 atanh((m - 1)/(m + 1)) by its series to t^21 (truncation
// below 1e-18). +inf stays +inf and NaN stays NaN.
inline vd log_atleast_one(vd s) {
  const vi b = bits_of(s);
  vi e = ((b >> 52) & 0x7ff) - 1023;
  vd m = double_of((b & 0x000fffffffffffffLL) | 0x3ff0000000000000LL);
  const vi big = m > 1.4142135623730951;  // lanes of -1 where true
  m = big ? m * 0.5 : m;
  e = e - big;
  const vd t = (m - 1.0) / (m + 1.0);
  const vd p = polynomial(t * t, kAtanhSeries);
  const vd ed = __builtin_convertvector(e, vd);
  const vd value = ed * 0.6931471803691238 + (2.0 * t * p + ed * 1.9082149292705877e-10);
  return s < 1.0e308 ? value : s;
}

// ld[g] (kTile rows) = C[k0 + g] . F + o[k0 + g] for the G components of a group, F the
// tile's features (q, kTile).
template <int G>
inline void forward_group(int64_t q, const double* C, const double* off, const double* F,
                          double* ld) {
  vd acc[G][kVectors];
  for (int g = 0; g < G; ++g)
    for (int v = 0; v < kVectors; ++v) acc[g][v] = splat(off[g]);
  for (int64_t j = 0; j < q; ++j) {
    vd f[kVectors];
    for (int v = 0; v < kVectors; ++v) f[v] = load(F + j * kTile + v * kLanes);
    for (int g = 0; g < G; ++g) {
      const double c = C[g * q + j];
      for (int v = 0; v < kVectors; ++v) acc[g][v] += c * f[v];
    }
  }
  for (int g = 0; g < G; ++g)
    for (int v = 0; v < kVectors; ++v) store(ld + g * kTile + v * kLanes, acc[g][v]);
}

// grad[g][j] (lane-wise partial sums) += R[g, tile] . F[j, tile] for the group's components.
template <int G>
inline void gradient_group(int64_t q, const double* resp, const double* F,
                           vd* grad) {
  vd r[G][kVectors];
  for (int g = 0; g < G; ++g)
    for (int v = 0; v < kVectors; ++v) r[g][v] = load(resp + g * kTile + v * kLanes);
  for (int64_t j = 0; j < q; ++j) {
    vd f[kVectors];
    for (int v = 0; v < kVectors; ++v) f[v] = load(F + j * kTile + v * kLanes);
    for (int g = 0; g < G; ++g) {
      vd a = r[g][0] * f[0];
      for (int v = 1; v < kVectors; ++v) a += r[g][v] * f[v];
      grad[g * q + j] += a;
    }
  }
}

// The G components from k on: their log densities (forward) or their gradient's sums.
template <int G>
inline void group(bool forward, int64_t k, int64_t q, const double* C, const double* off,
                  const double* F, double* ld, vd* grad) {
  if (forward)
    forward_group<G>(q, C + k * q, off + k, F, ld + k * kTile);
  else
    gradient_group<G>(q, ld + k * kTile, F, grad + k * q);
}

inline void tile_groups(int64_t K, int64_t q, const double* C, const double* off,
                        const double* F, double* ld, bool forward, vd* grad) {
  int64_t k = 0;
  for (; k + kGroup <= K; k += kGroup) group<kGroup>(forward, k, q, C, off, F, ld, grad);
  switch (K - k) {  // the last, smaller group
    case 3:
      group<3>(forward, k, q, C, off, F, ld, grad);
      break;
    case 2:
      group<2>(forward, k, q, C, off, F, ld, grad);
      break;
    case 1:
      group<1>(forward, k, q, C, off, F, ld, grad);
      break;
    default:
      break;
  }
}

// One tile of kTile rows, F its features (q, kTile): ld becomes the responsibilities
// times the row weights.
inline void tile_pass(int64_t K, int64_t q, const double* C, const double* off,
                      const double* F, const double* w, double* ld,
                      vd* grad, vd* grad_off, vd& total) {
  tile_groups(K, q, C, off, F, ld, true, grad);
  for (int v = 0; v < kVectors; ++v) {
    double* base = ld + v * kLanes;
    vd top = load(base);
    for (int64_t k = 1; k < K; ++k) {
      const vd x = load(base + k * kTile);
      top = x > top ? x : top;
    }
    vd sum = splat(0.0);
    for (int64_t k = 0; k < K; ++k) {
      const vd e = exp_nonpositive(load(base + k * kTile) - top);
      store(base + k * kTile, e);
      sum += e;
    }
    const vd weight = load(w + v * kLanes);
    total += weight * (top + log_atleast_one(sum));
    const vd scale = weight / sum;
    for (int64_t k = 0; k < K; ++k) {
      const vd r = load(base + k * kTile) * scale;
      store(base + k * kTile, r);
      grad_off[k] += r;
    }
  }
  tile_groups(K, q, C, off, F, ld, false, grad);
}

// The tile's features [x_i x_j (i <= j), x] from its rows' coordinates xt (d, kTile
// doubles at stride `stride`), in the order of the model's coefficients.
inline void tile_features(int64_t d, const double* xt, int64_t stride, double* f) {
  int64_t row = 0;
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = i; j < d; ++j, ++row)
      for (int v = 0; v < kVectors; ++v)
        store(f + row * kTile + v * kLanes,
              load(xt + i * stride + v * kLanes) * load(xt + j * stride + v * kLanes));
  for (int64_t i = 0; i < d; ++i, ++row)
    for (int v = 0; v < kVectors; ++v)
      store(f + row * kTile + v * kLanes, load(xt + i * stride + v * kLanes));
}

ffi::Error MixtureTotalImpl(ffi::Buffer<ffi::F64> coef, ffi::Buffer<ffi::F64> offset,
                            ffi::Buffer<ffi::F64> coords, ffi::Buffer<ffi::F64> weights,
                            ffi::ResultBuffer<ffi::F64> value,
                            ffi::ResultBuffer<ffi::F64> d_coef,
                            ffi::ResultBuffer<ffi::F64> d_offset) {
  const auto dims = coef.dimensions();
  if (dims.size() != 2 || coords.dimensions().size() != 2) {
    return ffi::Error::InvalidArgument("mixture_total: coef and coordinates must be 2-D");
  }
  const int64_t d = coords.dimensions()[0];
  if (dims[1] != d * (d + 1) / 2 + d ||
      static_cast<int64_t>(offset.element_count()) != dims[0] ||
      static_cast<int64_t>(weights.element_count()) != coords.dimensions()[1]) {
    return ffi::Error::InvalidArgument("mixture_total: inconsistent shapes");
  }
  const int64_t K = dims[0], q = dims[1], n = coords.dimensions()[1];
  const double* C = coef.typed_data();
  const double* off = offset.typed_data();
  const double* X = coords.typed_data();
  const double* w = weights.typed_data();
  std::vector<double> ld(K * kTile);
  std::vector<vd> grad(K * q, splat(0.0)), grad_off(K, splat(0.0));
  vd total = splat(0.0);
  const int64_t whole = n - n % kTile;
  std::vector<double> features(q * kTile);
  for (int64_t start = 0; start < whole; start += kTile) {
    tile_features(d, X + start, n, features.data());
    tile_pass(K, q, C, off, features.data(), w + start, ld.data(), grad.data(),
              grad_off.data(), total);
  }
  if (whole < n) {  // the last rows, copied into a tile padded with zero-weight rows
    const int64_t m = n - whole;
    std::vector<double> tail_x(d * kTile, 0.0), tail_w(kTile, 0.0);
    for (int64_t j = 0; j < d; ++j)
      std::memcpy(&tail_x[j * kTile], X + j * n + whole, m * sizeof(double));
    std::memcpy(tail_w.data(), w + whole, m * sizeof(double));
    tile_features(d, tail_x.data(), kTile, features.data());
    tile_pass(K, q, C, off, features.data(), tail_w.data(), ld.data(), grad.data(),
              grad_off.data(), total);
  }
  *value->typed_data() = total_of(total);
  double* G = d_coef->typed_data();
  double* H = d_offset->typed_data();
  for (int64_t i = 0; i < K * q; ++i) G[i] = total_of(grad[i]);
  for (int64_t k = 0; k < K; ++k) H[k] = total_of(grad_off[k]);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BayesGmmMixtureTotal, MixtureTotalImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()  // coef (K, q)
                                  .Arg<ffi::Buffer<ffi::F64>>()  // offset (K,)
                                  .Arg<ffi::Buffer<ffi::F64>>()  // coordinates xt (d, n)
                                  .Arg<ffi::Buffer<ffi::F64>>()  // weights (n,)
                                  .Ret<ffi::Buffer<ffi::F64>>()  // value ()
                                  .Ret<ffi::Buffer<ffi::F64>>()  // d value / d coef (K, q)
                                  .Ret<ffi::Buffer<ffi::F64>>());  // d value / d offset (K,)
