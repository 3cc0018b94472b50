// SigerLM's CPU kernels, compiled on first use (sigerlm.model.kernels):
//  - the fused selective scan (forward and backward), the "fused" scan back-end;
//  - the block's fused scan: dt_proj's bias + softplus, the scan, the D skip and the SiLU gate;
//  - the causal depthwise convolution followed by SiLU, in the (b, l, d) layout;
//  - RMSNorm (forward and backward, one pass each);
//  - the softmax cross-entropy of a chunk of logits, turned into its gradient in place.
//
// Selective scan.
// Glossary: b batch, l sequence length, d channels (d_inner), n state size.
//   h_t = exp(dt_t * A) * h_{t-1} + dt_t * u_t * B_t        (per channel and state index)
//   y_t = sum_n C_t[n] * h_t[n] + D * u_t
// Layout: u, dt, y (b, l, d); B, C (b, l, n); A (d, n); D (d); states (b, d, n). All contiguous.
//
// Work is split into items of DB channels of one sequence; each item runs the recurrence over l
// with its state (n x DB values) in cache, so memory traffic is the inputs and outputs only. The
// forward pass stores the state every CHUNK positions; the backward pass recomputes one chunk at a
// time from those states and runs the recurrence in reverse, so extra memory is bounded by a
// chunk, never by the whole (b, l, d, n) tensor. Inner loops run over channels and are vectorised
// by the compiler (expf through glibc's vector math library).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace {

constexpr int64_t DB = 128;    // most channels per work item (8 AVX-512 or 16 AVX2 vectors)
constexpr int64_t CHUNK = 16;  // positions between stored states

// Channels per work item: DB, or fewer when b * ceil(d / DB) items would leave threads idle
// (a batch-1 prefill of d_inner 512 is only 4 items of 128), down to 32 (4 AVX2 vectors).
int64_t item_width(int64_t b, int64_t d) {
  const int64_t threads = at::get_num_threads();
  int64_t w = DB;
  while (w > 32 && b * ((d + w - 1) / w) < 2 * threads) w /= 2;
  return w;
}

struct Dims {
  int64_t b, l, d, n, db, blocks, chunks;
};

// softplus(v) as torch computes it (threshold 20: v itself above), and its derivative sigmoid(v)
template <typename T>
inline void softplus_and_slope(T v, T& sp, T& sg) {
  const T e = std::exp(std::min(v, T(20)));
  sp = v > T(20) ? v : std::log1p(e);
  sg = v > T(20) ? T(1) : e / (T(1) + e);
}

template <typename T>
inline T sigmoid(T s) {
  return T(1) / (T(1) + std::exp(-s));
}

// The tensors of one scan. Plain scan: dt is the positive step, gate == nullptr. Fused scan
// (GATED): dt holds the pre-activation dt_proj output, the step is softplus(dt + dt_bias)
// (dt_bias may be null), and the output is (scan + D * u) * silu(z), z a strided (b, l, d) view.
template <typename T>
struct ScanPtrs {
  const T *u, *dt, *bias, *At, *B, *C, *Dv, *z;
  int64_t zs, zbs;  // z's row and batch strides
};

// Forward over the positions of one item (db channels of sequence bi), the state in cache.
template <typename T, bool GATED>
void forward_item(const Dims& s, int64_t bi, int64_t blk, const ScanPtrs<T>& p, const T* h0, T* y, T* hlast,
                  T* ckpt) {
  const int64_t ld = s.db, d0 = blk * ld, w = std::min(ld, s.d - d0), L = s.l, D = s.d, N = s.n;
  const T* u = p.u + bi * L * D;
  const T* dt = p.dt + bi * L * D;
  const T* B = p.B + bi * L * N;
  const T* C = p.C + bi * L * N;
  const T* z = GATED ? p.z + bi * p.zbs : nullptr;
  y += bi * L * D;
  std::vector<T> h(N * ld, T(0));
  if (h0 != nullptr) {
    for (int64_t j = 0; j < w; ++j)
      for (int64_t k = 0; k < N; ++k) h[k * ld + j] = h0[(bi * D + d0 + j) * N + k];
  }
  T step[DB], du[DB], acc[DB];
  for (int64_t t = 0; t < L; ++t) {
    if (ckpt != nullptr && t % CHUNK == 0) {
      T* dst = ckpt + ((bi * s.chunks + t / CHUNK) * D + d0) * N;
      for (int64_t j = 0; j < w; ++j)
        for (int64_t k = 0; k < N; ++k) dst[j * N + k] = h[k * ld + j];
    }
    const T* dt_t = dt + t * D + d0;
    const T* u_t = u + t * D + d0;
    if (GATED) {
      const T* bias = p.bias != nullptr ? p.bias + d0 : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) {
        const T v = dt_t[j] + (bias != nullptr ? bias[j] : T(0));
        step[j] = v > T(20) ? v : std::log1p(std::exp(std::min(v, T(20))));
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) step[j] = dt_t[j];
    }
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) {
      du[j] = step[j] * u_t[j];
      acc[j] = T(0);
    }
    for (int64_t k = 0; k < N; ++k) {
      const T Bk = B[t * N + k], Ck = C[t * N + k];
      const T* A_k = p.At + k * D + d0;
      T* h_k = h.data() + k * ld;
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) {
        const T a = std::exp(step[j] * A_k[j]);
        const T hv = a * h_k[j] + du[j] * Bk;
        h_k[j] = hv;
        acc[j] += Ck * hv;
      }
    }
    T* y_t = y + t * D + d0;
    const T* D_b = p.Dv + d0;
    if (GATED) {
      const T* z_t = z + t * p.zs + d0;
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) y_t[j] = (acc[j] + D_b[j] * u_t[j]) * (z_t[j] * sigmoid(z_t[j]));
    } else {
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) y_t[j] = acc[j] + D_b[j] * u_t[j];
    }
  }
  for (int64_t j = 0; j < w; ++j)
    for (int64_t k = 0; k < N; ++k) hlast[(bi * D + d0 + j) * N + k] = h[k * ld + j];
}

// Gradients an item writes: du, ddt (b, l, d) (GATED: of the pre-activation), dz (GATED, (b, l, d));
// its own slices of dB, dC (blocks, b, l, n); its channels of dA (b, d, n), dD and dbias (b, d), dh0.
// GATED with yout: also the gated output (b, l, d), recomputed on the way (for out_proj's weight
// gradient when the caller did not keep it).
template <typename T>
struct GradPtrs {
  T *du, *ddt, *dz, *dA, *dD, *dbias, *dB, *dC, *dh0, *yout;
};

template <typename T, bool GATED>
void backward_item(const Dims& s, int64_t bi, int64_t blk, const T* dy, const ScanPtrs<T>& p, const T* ckpt,
                   const T* dhlast, const GradPtrs<T>& gp) {
  const int64_t ld = s.db, d0 = blk * ld, w = std::min(ld, s.d - d0), L = s.l, D = s.d, N = s.n;
  const int64_t off = bi * L * D;
  dy += off;
  const T* u = p.u + off;
  const T* dt = p.dt + off;
  const T* B = p.B + bi * L * N;
  const T* C = p.C + bi * L * N;
  const T* z = GATED ? p.z + bi * p.zbs : nullptr;
  T* du = gp.du + off;
  T* ddt = gp.ddt + off;
  T* dz = GATED ? gp.dz + off : nullptr;
  T* dB_part = gp.dB + (blk * s.b + bi) * L * N;  // (blocks, b, l, n): each item owns its slice
  T* dC_part = gp.dC + (blk * s.b + bi) * L * N;
  std::vector<T> g(N * ld, T(0)), dA(N * ld, T(0));
  std::vector<T> H((CHUNK + 1) * N * ld), Aexp(CHUNK * N * ld), S(CHUNK * ld), SG(GATED ? CHUNK * ld : 0);
  if (dhlast != nullptr) {
    for (int64_t j = 0; j < w; ++j)
      for (int64_t k = 0; k < N; ++k) g[k * ld + j] = dhlast[(bi * D + d0 + j) * N + k];
  }
  T dD[DB] = {}, dbias[DB] = {}, du_acc[DB], ddt_acc[DB], dub[DB], gy[DB], yacc[DB];
  const T* bias = (GATED && p.bias != nullptr) ? p.bias + d0 : nullptr;
  for (int64_t c = s.chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * CHUNK, t1 = std::min(L, t0 + CHUNK);
    // recompute the chunk's steps and states from the stored state
    const T* src = ckpt + ((bi * s.chunks + c) * D + d0) * N;
    for (int64_t j = 0; j < w; ++j)
      for (int64_t k = 0; k < N; ++k) H[k * ld + j] = src[j * N + k];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t q = t - t0;
      const T* dt_t = dt + t * D + d0;
      const T* u_t = u + t * D + d0;
      T* st = S.data() + q * ld;
      if (GATED) {
        T* sg = SG.data() + q * ld;
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) softplus_and_slope<T>(dt_t[j] + (bias != nullptr ? bias[j] : T(0)), st[j], sg[j]);
      } else {
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) st[j] = dt_t[j];
      }
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) dub[j] = st[j] * u_t[j];
      for (int64_t k = 0; k < N; ++k) {
        const T Bk = B[t * N + k];
        const T* A_k = p.At + k * D + d0;
        const T* hp = H.data() + (q * N + k) * ld;
        T* hn = H.data() + ((q + 1) * N + k) * ld;
        T* ak = Aexp.data() + (q * N + k) * ld;
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) {
          const T a = std::exp(st[j] * A_k[j]);
          ak[j] = a;
          hn[j] = a * hp[j] + dub[j] * Bk;
        }
      }
    }
    // reverse pass over the chunk
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const int64_t q = t - t0;
      const T* dy_t = dy + t * D + d0;
      const T* st = S.data() + q * ld;
      const T* u_t = u + t * D + d0;
      const T* D_b = p.Dv + d0;
      if (GATED) {  // the gradient reaching the scan's output: dout * silu(z)
        const T* z_t = z + t * p.zs + d0;
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) gy[j] = dy_t[j] * (z_t[j] * sigmoid(z_t[j]));
      } else {
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) gy[j] = dy_t[j];
      }
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) {
        dD[j] += gy[j] * u_t[j];
        du_acc[j] = D_b[j] * gy[j];
        ddt_acc[j] = T(0);
        dub[j] = st[j] * u_t[j];
        yacc[j] = D_b[j] * u_t[j];
      }
      for (int64_t k = 0; k < N; ++k) {
        const T Bk = B[t * N + k], Ck = C[t * N + k];
        const T* A_k = p.At + k * D + d0;
        const T* hp = H.data() + (q * N + k) * ld;
        const T* hc = H.data() + ((q + 1) * N + k) * ld;
        const T* ak = Aexp.data() + (q * N + k) * ld;
        T* g_k = g.data() + k * ld;
        T* dA_k = dA.data() + k * ld;
        T dC_sum = T(0), dB_sum = T(0);
#pragma omp simd reduction(+ : dC_sum, dB_sum)
        for (int64_t j = 0; j < w; ++j) {
          const T gv = g_k[j] + gy[j] * Ck;  // dL/dh_t
          dC_sum += gy[j] * hc[j];
          dB_sum += gv * dub[j];
          du_acc[j] += gv * st[j] * Bk;
          const T pr = gv * ak[j] * hp[j];
          ddt_acc[j] += gv * Bk * u_t[j] + A_k[j] * pr;
          dA_k[j] += pr * st[j];
          g_k[j] = gv * ak[j];  // dL/dh_{t-1} through the recurrence
          if (GATED) yacc[j] += Ck * hc[j];  // the scan's output, recomputed for the gate's gradient
        }
        dC_part[t * N + k] = dC_sum;
        dB_part[t * N + k] = dB_sum;
      }
      T* du_t = du + t * D + d0;
      T* ddt_t = ddt + t * D + d0;
      if (GATED) {
        const T* sg = SG.data() + q * ld;
        const T* z_t = z + t * p.zs + d0;
        T* dz_t = dz + t * D + d0;
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) {
          du_t[j] = du_acc[j];
          const T dv = ddt_acc[j] * sg[j];  // through the softplus
          ddt_t[j] = dv;
          dbias[j] += dv;
          const T sz = sigmoid(z_t[j]);
          dz_t[j] = dy_t[j] * yacc[j] * (sz * (T(1) + z_t[j] * (T(1) - sz)));
        }
        if (gp.yout != nullptr) {
          T* o_t = gp.yout + off + t * D + d0;
#pragma omp simd
          for (int64_t j = 0; j < w; ++j) o_t[j] = yacc[j] * (z_t[j] * sigmoid(z_t[j]));
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) {
          du_t[j] = du_acc[j];
          ddt_t[j] = ddt_acc[j];
        }
      }
    }
  }
  for (int64_t j = 0; j < w; ++j) {
    gp.dD[bi * D + d0 + j] = dD[j];
    if (GATED) gp.dbias[bi * D + d0 + j] = dbias[j];
    for (int64_t k = 0; k < N; ++k) {
      gp.dA[(bi * D + d0 + j) * N + k] = dA[k * ld + j];
      gp.dh0[(bi * D + d0 + j) * N + k] = g[k * ld + j];
    }
  }
}

Dims dims_of(const torch::Tensor& u, const torch::Tensor& B) {
  Dims s;
  s.b = u.size(0);
  s.l = u.size(1);
  s.d = u.size(2);
  s.n = B.size(2);
  s.db = item_width(s.b, s.d);
  s.blocks = (s.d + s.db - 1) / s.db;
  s.chunks = std::max<int64_t>(1, (s.l + CHUNK - 1) / CHUNK);
  return s;
}

void check(const torch::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), "selective scan: ", name, " must be on the CPU");
  TORCH_CHECK(t.dim() == dim, "selective scan: ", name, " must have ", dim, " dimensions, got ", t.dim());
  TORCH_CHECK(t.is_contiguous(), "selective scan: ", name, " must be contiguous");
}

template <typename T>
ScanPtrs<T> scan_ptrs(const torch::Tensor& u, const torch::Tensor& dt, const torch::Tensor& bias,
                      const torch::Tensor& At, const torch::Tensor& B, const torch::Tensor& C,
                      const torch::Tensor& Dv, const torch::Tensor& z) {
  ScanPtrs<T> p;
  p.u = u.data_ptr<T>();
  p.dt = dt.data_ptr<T>();
  p.bias = bias.defined() ? bias.data_ptr<T>() : nullptr;
  p.At = At.data_ptr<T>();
  p.B = B.data_ptr<T>();
  p.C = C.data_ptr<T>();
  p.Dv = Dv.data_ptr<T>();
  p.z = z.defined() ? z.data_ptr<T>() : nullptr;
  p.zs = z.defined() ? z.stride(1) : 0;
  p.zbs = z.defined() ? z.stride(0) : 0;
  return p;
}

torch::Tensor optional_tensor(const c10::optional<torch::Tensor>& t) {
  return t.has_value() && t->defined() ? *t : torch::Tensor();
}

void check_inputs(const torch::Tensor& u, const torch::Tensor& dt, const torch::Tensor& A, const torch::Tensor& B,
                  const torch::Tensor& C, const torch::Tensor& Dv, const torch::Tensor& bias, const torch::Tensor& z) {
  check(u, "u", 3);
  check(dt, "dt", 3);
  check(A, "A", 2);
  check(B, "B", 3);
  check(C, "C", 3);
  check(Dv, "D", 1);
  if (bias.defined()) check(bias, "dt_bias", 1);
  if (z.defined()) {
    TORCH_CHECK(z.dim() == 3 && z.sizes() == u.sizes() && z.stride(2) == 1,
                "selective scan: z must be (b, l, d) like u, with contiguous channels");
  }
}

// Returns the output (b, l, d), the last state (b, d, n) and, when save_states, the stored states
// (b, chunks, d, n) that backward needs. With z (the fused scan): the output is gated and dt is
// the pre-activation.
std::vector<torch::Tensor> scan_forward_impl(torch::Tensor u, torch::Tensor dt, torch::Tensor A, torch::Tensor B,
                                             torch::Tensor C, torch::Tensor Dv, c10::optional<torch::Tensor> h0,
                                             bool save_states, torch::Tensor bias, torch::Tensor z) {
  check_inputs(u, dt, A, B, C, Dv, bias, z);
  const Dims s = dims_of(u, B);
  auto At = A.t().contiguous();  // (n, d): channels contiguous for each state index
  auto y = torch::empty_like(u);
  auto hlast = torch::empty({s.b, s.d, s.n}, u.options());
  auto ckpt = save_states ? torch::empty({s.b, s.chunks, s.d, s.n}, u.options()) : torch::Tensor();
  torch::Tensor h0c = optional_tensor(h0);
  if (h0c.defined()) check(h0c, "state", 3);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_forward", [&] {
    const auto p = scan_ptrs<scalar_t>(u, dt, bias, At, B, C, Dv, z);
    const scalar_t* h0p = h0c.defined() ? h0c.data_ptr<scalar_t>() : nullptr;
    scalar_t* ck = save_states ? ckpt.data_ptr<scalar_t>() : nullptr;
    scalar_t* yp = y.data_ptr<scalar_t>();
    scalar_t* hl = hlast.data_ptr<scalar_t>();
    at::parallel_for(0, s.b * s.blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        if (z.defined())
          forward_item<scalar_t, true>(s, item / s.blocks, item % s.blocks, p, h0p, yp, hl, ck);
        else
          forward_item<scalar_t, false>(s, item / s.blocks, item % s.blocks, p, h0p, yp, hl, ck);
      }
    });
  });
  if (save_states) return {y, hlast, ckpt};
  return {y, hlast};
}

std::vector<torch::Tensor> scan_backward_impl(torch::Tensor dy, torch::Tensor u, torch::Tensor dt, torch::Tensor A,
                                              torch::Tensor B, torch::Tensor C, torch::Tensor Dv, torch::Tensor ckpt,
                                              c10::optional<torch::Tensor> dhlast, torch::Tensor bias,
                                              torch::Tensor z, bool with_output = false) {
  check(dy, "grad", 3);
  check_inputs(u, dt, A, B, C, Dv, bias, z);
  const Dims s = dims_of(u, B);
  const bool gated = z.defined();
  auto At = A.t().contiguous();
  auto du = torch::empty_like(u);
  auto ddt = torch::empty_like(u);
  auto dz = gated ? torch::empty_like(u) : torch::Tensor();
  auto dA_part = torch::empty({s.b, s.d, s.n}, u.options());
  auto dD_part = torch::empty({s.b, s.d}, u.options());
  auto dbias_part = gated ? torch::empty({s.b, s.d}, u.options()) : torch::Tensor();
  auto dB_part = torch::empty({s.blocks, s.b, s.l, s.n}, u.options());
  auto dC_part = torch::empty({s.blocks, s.b, s.l, s.n}, u.options());
  auto dh0 = torch::empty({s.b, s.d, s.n}, u.options());
  auto yout = gated && with_output ? torch::empty_like(u) : torch::Tensor();
  torch::Tensor dhl = optional_tensor(dhlast);
  if (dhl.defined()) dhl = dhl.contiguous();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_backward", [&] {
    const auto p = scan_ptrs<scalar_t>(u, dt, bias, At, B, C, Dv, z);
    const scalar_t* dhp = dhl.defined() ? dhl.data_ptr<scalar_t>() : nullptr;
    GradPtrs<scalar_t> gp;
    gp.du = du.data_ptr<scalar_t>();
    gp.ddt = ddt.data_ptr<scalar_t>();
    gp.dz = gated ? dz.data_ptr<scalar_t>() : nullptr;
    gp.dA = dA_part.data_ptr<scalar_t>();
    gp.dD = dD_part.data_ptr<scalar_t>();
    gp.dbias = gated ? dbias_part.data_ptr<scalar_t>() : nullptr;
    gp.dB = dB_part.data_ptr<scalar_t>();
    gp.dC = dC_part.data_ptr<scalar_t>();
    gp.dh0 = dh0.data_ptr<scalar_t>();
    gp.yout = yout.defined() ? yout.data_ptr<scalar_t>() : nullptr;
    const scalar_t* dyp = dy.data_ptr<scalar_t>();
    const scalar_t* ck = ckpt.data_ptr<scalar_t>();
    at::parallel_for(0, s.b * s.blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        if (gated)
          backward_item<scalar_t, true>(s, item / s.blocks, item % s.blocks, dyp, p, ck, dhp, gp);
        else
          backward_item<scalar_t, false>(s, item / s.blocks, item % s.blocks, dyp, p, ck, dhp, gp);
      }
    });
  });
  std::vector<torch::Tensor> out = {du, ddt, dA_part.sum(0), dB_part.sum(0), dC_part.sum(0), dD_part.sum(0), dh0};
  if (gated) {
    out.push_back(dz);
    out.push_back(dbias_part.sum(0));
    if (yout.defined()) out.push_back(yout);
  }
  return out;
}

// The plain scan: dt is the positive step; returns y, the last state (, the stored states).
std::vector<torch::Tensor> scan_forward(torch::Tensor u, torch::Tensor dt, torch::Tensor A, torch::Tensor B,
                                        torch::Tensor C, torch::Tensor Dv, c10::optional<torch::Tensor> h0,
                                        bool save_states) {
  return scan_forward_impl(u, dt, A, B, C, Dv, h0, save_states, torch::Tensor(), torch::Tensor());
}

// Returns du, ddt (b, l, d), dA (d, n), dB, dC (b, l, n), dD (d), dh0 (b, d, n).
std::vector<torch::Tensor> scan_backward(torch::Tensor dy, torch::Tensor u, torch::Tensor dt, torch::Tensor A,
                                         torch::Tensor B, torch::Tensor C, torch::Tensor Dv, torch::Tensor ckpt,
                                         c10::optional<torch::Tensor> dhlast) {
  return scan_backward_impl(dy, u, dt, A, B, C, Dv, ckpt, dhlast, torch::Tensor(), torch::Tensor());
}

// The fused scan: out = (scan(u, softplus(dt + dt_bias), A, B, C) + D * u) * silu(z).
std::vector<torch::Tensor> gated_scan_forward(torch::Tensor u, torch::Tensor dt, c10::optional<torch::Tensor> dt_bias,
                                              torch::Tensor A, torch::Tensor B, torch::Tensor C, torch::Tensor Dv,
                                              torch::Tensor z, c10::optional<torch::Tensor> h0, bool save_states) {
  return scan_forward_impl(u, dt, A, B, C, Dv, h0, save_states, optional_tensor(dt_bias), z);
}

// Returns du, ddt (of the pre-activation), dA, dB, dC, dD, dh0, dz (b, l, d), ddt_bias (d) and,
// with with_output, the gated output (b, l, d) recomputed on the way.
std::vector<torch::Tensor> gated_scan_backward(torch::Tensor dout, torch::Tensor u, torch::Tensor dt,
                                               c10::optional<torch::Tensor> dt_bias, torch::Tensor A, torch::Tensor B,
                                               torch::Tensor C, torch::Tensor Dv, torch::Tensor z, torch::Tensor ckpt,
                                               c10::optional<torch::Tensor> dhlast, bool with_output) {
  return scan_backward_impl(dout, u, dt, A, B, C, Dv, ckpt, dhlast, optional_tensor(dt_bias), z, with_output);
}

// How the kernels were built: the vector extensions the compiler targeted and the thread count.
std::string build_info() {
  std::string isa;
#if defined(__AVX512F__)
  isa = "avx512f";
#elif defined(__AVX2__)
  isa = "avx2";
#elif defined(__AVX__)
  isa = "avx";
#elif defined(__SSE4_2__)
  isa = "sse4.2";
#elif defined(__ARM_NEON)
  isa = "neon";
#else
  isa = "scalar";
#endif
#if defined(__FMA__)
  isa += "+fma";
#endif
  return isa + ", " + std::to_string(at::get_num_threads()) + " threads (at::parallel_for)";
}

// Causal depthwise convolution + SiLU, in the (b, l, d) layout the projections produce, so no
// transposes or padding copies are needed:
//   s[t, j] = bias[j] + sum_k w[j, k] * x[t - (K - 1) + k, j]    (positions before 0 come from
//   out[t, j] = silu(s[t, j])                                     the state (b, d, K - 1) or are 0)
// x may be a strided view (row stride xs, batch stride xbs), as a chunk of in_proj's output is.
template <typename T>
void conv_pre(const T* x, int64_t xs, const T* state, const T* wT, const T* bias, int64_t t, int64_t K, int64_t D,
              int64_t d0, int64_t w, T* acc) {
#pragma omp simd
  for (int64_t j = 0; j < w; ++j) acc[j] = bias[d0 + j];
  for (int64_t k = 0; k < K; ++k) {
    const int64_t tt = t - (K - 1) + k;
    const T* w_k = wT + k * D + d0;
    if (tt >= 0) {
      const T* x_t = x + tt * xs + d0;
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) acc[j] += w_k[j] * x_t[j];
    } else if (state != nullptr) {
      for (int64_t j = 0; j < w; ++j) acc[j] += w_k[j] * state[(d0 + j) * (K - 1) + (K - 1 + tt)];
    }
  }
}

torch::Tensor conv_silu_forward(torch::Tensor x, torch::Tensor weight, torch::Tensor bias,
                                c10::optional<torch::Tensor> state) {
  TORCH_CHECK(x.dim() == 3 && x.stride(2) == 1, "conv: x must be (b, l, d) with contiguous channels");
  const int64_t b = x.size(0), L = x.size(1), D = x.size(2), K = weight.size(-1);
  auto wT = weight.reshape({D, K}).t().contiguous();  // (K, d)
  auto out = torch::empty({b, L, D}, x.options());
  torch::Tensor st;
  if (state.has_value() && state->defined()) st = state->contiguous();
  const int64_t cw = item_width(b, D), blocks = (D + cw - 1) / cw;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_silu_forward", [&] {
    const scalar_t* sp = st.defined() ? st.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, b * blocks, 1, [&](int64_t begin, int64_t end) {
      scalar_t acc[DB];
      for (int64_t item = begin; item < end; ++item) {
        const int64_t bi = item / blocks, d0 = (item % blocks) * cw, w = std::min(cw, D - d0);
        const scalar_t* xb = x.data_ptr<scalar_t>() + bi * x.stride(0);
        const scalar_t* sb = sp != nullptr ? sp + bi * D * (K - 1) : nullptr;
        scalar_t* ob = out.data_ptr<scalar_t>() + bi * L * D;
        for (int64_t t = 0; t < L; ++t) {
          conv_pre<scalar_t>(xb, x.stride(1), sb, wT.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(), t, K, D, d0, w,
                             acc);
          scalar_t* o = ob + t * D + d0;
_Pragma("omp simd")
          for (int64_t j = 0; j < w; ++j) o[j] = acc[j] * sigmoid(acc[j]);
        }
      }
    });
  });
  return out;
}

// Returns dx (b, l, d), dweight (d, 1, K), dbias (d), dstate (b, d, K - 1) (zeros without a state).
std::vector<torch::Tensor> conv_silu_backward(torch::Tensor dout, torch::Tensor x, torch::Tensor weight,
                                              torch::Tensor bias, c10::optional<torch::Tensor> state) {
  const int64_t b = x.size(0), L = x.size(1), D = x.size(2), K = weight.size(-1);
  dout = dout.contiguous();
  auto wT = weight.reshape({D, K}).t().contiguous();  // (K, d)
  auto ds = torch::empty({b, L, D}, x.options());
  auto dx = torch::empty({b, L, D}, x.options());
  auto dw_part = torch::zeros({b, K, D}, x.options());
  auto db_part = torch::zeros({b, D}, x.options());
  auto dstate = torch::zeros({b, D, std::max<int64_t>(K - 1, 0)}, x.options());
  torch::Tensor st;
  if (state.has_value() && state->defined()) st = state->contiguous();
  const int64_t cw = item_width(b, D), blocks = (D + cw - 1) / cw;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_silu_backward", [&] {
    const scalar_t* sp = st.defined() ? st.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, b * blocks, 1, [&](int64_t begin, int64_t end) {
      scalar_t acc[DB];
      for (int64_t item = begin; item < end; ++item) {
        const int64_t bi = item / blocks, d0 = (item % blocks) * cw, w = std::min(cw, D - d0);
        const scalar_t* xb = x.data_ptr<scalar_t>() + bi * x.stride(0);
        const int64_t xs = x.stride(1);
        const scalar_t* sb = sp != nullptr ? sp + bi * D * (K - 1) : nullptr;
        const scalar_t* gb = dout.data_ptr<scalar_t>() + bi * L * D;
        scalar_t* dsb = ds.data_ptr<scalar_t>() + bi * L * D;
        scalar_t* dxb = dx.data_ptr<scalar_t>() + bi * L * D;
        scalar_t* dwb = dw_part.data_ptr<scalar_t>() + bi * K * D;
        scalar_t* dbb = db_part.data_ptr<scalar_t>() + bi * D;
        scalar_t* dstb = dstate.data_ptr<scalar_t>() + bi * D * std::max<int64_t>(K - 1, 0);
        const scalar_t* wt = wT.data_ptr<scalar_t>();
        // pass 1: ds = dout * silu'(s); bias and weight gradients
        for (int64_t t = 0; t < L; ++t) {
          conv_pre<scalar_t>(xb, xs, sb, wt, bias.data_ptr<scalar_t>(), t, K, D, d0, w, acc);
          const scalar_t* g = gb + t * D + d0;
          scalar_t* d = dsb + t * D + d0;
_Pragma("omp simd")
          for (int64_t j = 0; j < w; ++j) {
            const scalar_t sg = sigmoid(acc[j]);
            d[j] = g[j] * sg * (scalar_t(1) + acc[j] * (scalar_t(1) - sg));
            dbb[d0 + j] += d[j];
          }
          for (int64_t k = 0; k < K; ++k) {
            const int64_t tt = t - (K - 1) + k;
            scalar_t* dw_k = dwb + k * D + d0;
            if (tt >= 0) {
              const scalar_t* x_t = xb + tt * xs + d0;
_Pragma("omp simd")
              for (int64_t j = 0; j < w; ++j) dw_k[j] += d[j] * x_t[j];
            } else if (sb != nullptr) {
              for (int64_t j = 0; j < w; ++j) dw_k[j] += d[j] * sb[(d0 + j) * (K - 1) + (K - 1 + tt)];
            }
          }
        }
        // pass 2: dx[t] = sum_k w[k] * ds[t + (K - 1) - k]; the state's share for positions before 0
        for (int64_t t = -(K - 1); t < L; ++t) {
_Pragma("omp simd")
          for (int64_t j = 0; j < w; ++j) acc[j] = scalar_t(0);
          for (int64_t k = 0; k < K; ++k) {
            const int64_t to = t + (K - 1) - k;
            if (to < 0 || to >= L) continue;
            const scalar_t* w_k = wt + k * D + d0;
            const scalar_t* d = dsb + to * D + d0;
_Pragma("omp simd")
            for (int64_t j = 0; j < w; ++j) acc[j] += w_k[j] * d[j];
          }
          if (t >= 0) {
            scalar_t* o = dxb + t * D + d0;
_Pragma("omp simd")
            for (int64_t j = 0; j < w; ++j) o[j] = acc[j];
          } else {
            for (int64_t j = 0; j < w; ++j) dstb[(d0 + j) * (K - 1) + (K - 1 + t)] = acc[j];
          }
        }
      }
    });
  });
  return {dx, dw_part.sum(0).t().reshape({D, 1, K}).contiguous(), db_part.sum(0), dstate};
}

// One decode step of the block's mixer between in_proj and out_proj, for b rows at once:
//   window = [conv_state, x];  u = silu(bias + sum_k w[:, k] * window[:, k])
//   (dt_r, B, C) = x_proj_w @ u;  dt = softplus(dt_proj_w @ dt_r + dt_bias)
//   h = exp(dt * A) * h + dt * u * B;  out = (h @ C + D * u) * silu(z),  A = -exp(A_log)
// xz (b, 2 d) holds x and z; conv_state (b, d, K - 1); ssm_state (b, d, n); weights as the modules
// hold them. Returns out (b, d) and new states (the inputs are left untouched). One call instead
// of about 25 small torch ops: at batch 1 a step is bound by per-op overhead, not arithmetic.
template <typename T>
void step_row(int64_t d, int64_t K, int64_t n, int64_t r, const T* xz, const T* cs, const T* hs, const T* cw,
              const T* cb, const T* xw, const T* dw, const T* db, const T* A_log, const T* Dv, T* out, T* ncs,
              T* nhs, T* u, T* xdbl) {
  const T* x = xz;
  const T* z = xz + d;
  for (int64_t j = 0; j < d; ++j) {
    T acc = cb[j];
    for (int64_t q = 0; q < K - 1; ++q) acc += cw[j * K + q] * cs[j * (K - 1) + q];
    acc += cw[j * K + K - 1] * x[j];
    u[j] = acc * sigmoid(acc);
    for (int64_t q = 0; q + 1 < K - 1; ++q) ncs[j * (K - 1) + q] = cs[j * (K - 1) + q + 1];
    if (K > 1) ncs[j * (K - 1) + K - 2] = x[j];
  }
  for (int64_t o = 0; o < r + 2 * n; ++o) {
    const T* row = xw + o * d;
    T acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < d; ++j) acc += row[j] * u[j];
    xdbl[o] = acc;
  }
  const T* Bv = xdbl + r;
  const T* Cv = xdbl + r + n;
  for (int64_t j = 0; j < d; ++j) {
    T v = db != nullptr ? db[j] : T(0);
    for (int64_t q = 0; q < r; ++q) v += dw[j * r + q] * xdbl[q];
    const T dt = v > T(20) ? v : std::log1p(std::exp(std::min(v, T(20))));
    const T du = dt * u[j];
    T y = 0;
    const T* hj = hs + j * n;
    T* nj = nhs + j * n;
    const T* Aj = A_log + j * n;
#pragma omp simd reduction(+ : y)
    for (int64_t k = 0; k < n; ++k) {
      const T hv = std::exp(-dt * std::exp(Aj[k])) * hj[k] + du * Bv[k];
      nj[k] = hv;
      y += hv * Cv[k];
    }
    out[j] = (y + Dv[j] * u[j]) * (z[j] * sigmoid(z[j]));
  }
}

std::vector<torch::Tensor> mixer_step(torch::Tensor xz, torch::Tensor conv_state, torch::Tensor ssm_state,
                                      torch::Tensor conv_w, torch::Tensor conv_b, torch::Tensor x_proj_w,
                                      torch::Tensor dt_proj_w, c10::optional<torch::Tensor> dt_proj_b,
                                      torch::Tensor A_log, torch::Tensor Dv) {
  const int64_t b = xz.size(0), d = xz.size(1) / 2, K = conv_w.size(-1), n = A_log.size(1);
  const int64_t r = dt_proj_w.size(1);
  TORCH_CHECK(x_proj_w.size(0) == r + 2 * n && x_proj_w.size(1) == d, "mixer step: x_proj has the wrong shape");
  TORCH_CHECK(conv_state.dim() == 3 && conv_state.size(0) == b && conv_state.size(1) == d &&
                  conv_state.size(2) == std::max<int64_t>(K - 1, 0),
              "mixer step: the conv state must be (b, d_inner, d_conv - 1)");
  TORCH_CHECK(ssm_state.dim() == 3 && ssm_state.size(0) == b && ssm_state.size(1) == d && ssm_state.size(2) == n,
              "mixer step: the ssm state must be (b, d_inner, d_state)");
  xz = xz.contiguous();
  conv_state = conv_state.contiguous();
  ssm_state = ssm_state.contiguous();
  conv_w = conv_w.contiguous();
  x_proj_w = x_proj_w.contiguous();
  dt_proj_w = dt_proj_w.contiguous();
  conv_b = conv_b.contiguous();
  A_log = A_log.contiguous();
  Dv = Dv.contiguous();
  auto db = optional_tensor(dt_proj_b);
  if (db.defined()) db = db.contiguous();
  auto out = torch::empty({b, d}, xz.options());
  auto ncs = torch::empty({b, d, std::max<int64_t>(K - 1, 0)}, xz.options());
  auto nhs = torch::empty({b, d, n}, xz.options());
  AT_DISPATCH_FLOATING_TYPES(xz.scalar_type(), "mixer_step", [&] {
    at::parallel_for(0, b, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> u(d), xdbl(r + 2 * n);
      for (int64_t i = begin; i < end; ++i) {
        step_row<scalar_t>(d, K, n, r, xz.data_ptr<scalar_t>() + i * 2 * d,
                           conv_state.data_ptr<scalar_t>() + i * d * (K - 1), ssm_state.data_ptr<scalar_t>() + i * d * n,
                           conv_w.data_ptr<scalar_t>(), conv_b.data_ptr<scalar_t>(), x_proj_w.data_ptr<scalar_t>(),
                           dt_proj_w.data_ptr<scalar_t>(), db.defined() ? db.data_ptr<scalar_t>() : nullptr,
                           A_log.data_ptr<scalar_t>(), Dv.data_ptr<scalar_t>(), out.data_ptr<scalar_t>() + i * d,
                           ncs.data_ptr<scalar_t>() + i * d * (K - 1), nhs.data_ptr<scalar_t>() + i * d * n, u.data(),
                           xdbl.data());
      }
    });
  });
  return {out, ncs, nhs};
}

// RMSNorm over the last dimension, rows independent: y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps).
// Forward reads x once and writes y and rstd (one float a row); backward reads x, dy and rstd
// once: dx = rstd * (w dy - x rstd^2 mean(w dy x)), dw = sum over rows of dy x rstd.
constexpr int64_t NORM_ROWS = 64;  // rows per work item (and per partial weight gradient)

std::vector<torch::Tensor> rms_norm_forward(torch::Tensor x, torch::Tensor weight, double eps) {
  TORCH_CHECK(x.is_contiguous() && weight.is_contiguous(), "rms norm: x and weight must be contiguous");
  const int64_t d = x.size(-1), rows = x.numel() / std::max<int64_t>(d, 1);
  auto y = torch::empty_like(x);
  auto rstd = torch::empty({rows}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rms_norm_forward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* w = weight.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    scalar_t* rp = rstd.data_ptr<scalar_t>();
    at::parallel_for(0, rows, NORM_ROWS, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* xr = xp + r * d;
        scalar_t ss = 0;
_Pragma("omp simd reduction(+ : ss)")
        for (int64_t j = 0; j < d; ++j) ss += xr[j] * xr[j];
        const scalar_t rs = scalar_t(1) / std::sqrt(ss / scalar_t(d) + scalar_t(eps));
        rp[r] = rs;
        scalar_t* yr = yp + r * d;
_Pragma("omp simd")
        for (int64_t j = 0; j < d; ++j) yr[j] = (xr[j] * rs) * w[j];
      }
    });
  });
  return {y, rstd};
}

std::vector<torch::Tensor> rms_norm_backward(torch::Tensor dy, torch::Tensor x, torch::Tensor weight,
                                             torch::Tensor rstd) {
  dy = dy.contiguous();
  const int64_t d = x.size(-1), rows = x.numel() / std::max<int64_t>(d, 1);
  const int64_t items = (rows + NORM_ROWS - 1) / NORM_ROWS;
  auto dx = torch::empty_like(x);
  auto dw_part = torch::zeros({std::max<int64_t>(items, 1), d}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rms_norm_backward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = dy.data_ptr<scalar_t>();
    const scalar_t* w = weight.data_ptr<scalar_t>();
    const scalar_t* rp = rstd.data_ptr<scalar_t>();
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    scalar_t* dwp = dw_part.data_ptr<scalar_t>();
    at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        scalar_t* dw = dwp + item * d;
        for (int64_t r = item * NORM_ROWS; r < std::min(rows, (item + 1) * NORM_ROWS); ++r) {
          const scalar_t* xr = xp + r * d;
          const scalar_t* gr = gp + r * d;
          const scalar_t rs = rp[r];
          scalar_t dot = 0;
_Pragma("omp simd reduction(+ : dot)")
          for (int64_t j = 0; j < d; ++j) {
            dot += w[j] * gr[j] * xr[j];
            dw[j] += gr[j] * xr[j] * rs;
          }
          const scalar_t c = dot * rs * rs / scalar_t(d);
          scalar_t* dxr = dxp + r * d;
_Pragma("omp simd")
          for (int64_t j = 0; j < d; ++j) dxr[j] = rs * (w[j] * gr[j] - xr[j] * c);
        }
      }
    });
  });
  return {dx, dw_part.sum(0)};
}

// Cross-entropy of logits (c, v) against targets (c,): returns each row's loss (0 where the target
// is ignore_index) and, when grad, overwrites the logits with softmax - onehot (0 on ignored rows).
// Rows are independent; each is read twice (max and sum of exponentials) and written once.
template <typename T>
void xent_row(T* x, int64_t v, int64_t target, bool valid, bool grad, T* loss) {
  T m = x[0];
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < v; ++j) m = x[j] > m ? x[j] : m;
  T s = T(0);
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < v; ++j) s += std::exp(x[j] - m);
  const T lse = m + std::log(s);
  *loss = valid ? lse - x[target] : T(0);
  if (!grad) return;
  if (!valid) {
    std::fill(x, x + v, T(0));
    return;
  }
#pragma omp simd
  for (int64_t j = 0; j < v; ++j) x[j] = std::exp(x[j] - lse);
  x[target] -= T(1);
}

torch::Tensor cross_entropy_(torch::Tensor logits, torch::Tensor targets, int64_t ignore_index, bool grad) {
  check(logits, "logits", 2);
  check(targets, "targets", 1);
  TORCH_CHECK(targets.scalar_type() == torch::kLong, "cross entropy: targets must be int64");
  TORCH_CHECK(targets.size(0) == logits.size(0), "cross entropy: ", logits.size(0), " rows but ", targets.size(0),
              " targets");
  const int64_t c = logits.size(0), v = logits.size(1);
  auto loss = torch::empty({c}, logits.options());
  const int64_t* tg = targets.data_ptr<int64_t>();
  for (int64_t r = 0; r < c; ++r) {
    TORCH_CHECK(tg[r] == ignore_index || (tg[r] >= 0 && tg[r] < v), "cross entropy: target ", tg[r], " at row ", r,
                " is outside the vocabulary of ", v);
  }
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "cross_entropy_", [&] {
    scalar_t* x = logits.data_ptr<scalar_t>();
    scalar_t* out = loss.data_ptr<scalar_t>();
    at::parallel_for(0, c, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const bool valid = tg[r] != ignore_index;
        xent_row<scalar_t>(x + r * v, v, valid ? tg[r] : 0, valid, grad, out + r);
      }
    });
  });
  return loss;
}


// out = x @ w.t() for a few rows x (b, k) against a tall w (v, k), as a decode step's vocabulary head
// is: every row of w is read once for all b rows of x, four rows of w at a time (four independent
// accumulators), the rows of w split over torch's threads. torch's matmul ran this shape at a third
// of numpy's speed on an AMD EPYC (memory-bound: w is read once either way).
torch::Tensor linear_rows(torch::Tensor x, torch::Tensor w) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), "linear_rows: x (b, k) and w (v, k)");
  x = x.contiguous();
  w = w.contiguous();
  const int64_t b = x.size(0), k = x.size(1), v = w.size(0);
  auto out = torch::empty({b, v}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "linear_rows", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, (v + 3) / 4, 64, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g) {
        const int64_t o = 4 * g;
        if (o + 4 <= v) {
          const scalar_t *w0 = wp + o * k, *w1 = w0 + k, *w2 = w1 + k, *w3 = w2 + k;
          for (int64_t r = 0; r < b; ++r) {
            const scalar_t* xr = xp + r * k;
            scalar_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
_Pragma("omp simd reduction(+ : a0, a1, a2, a3)")
            for (int64_t j = 0; j < k; ++j) {
              a0 += w0[j] * xr[j];
              a1 += w1[j] * xr[j];
              a2 += w2[j] * xr[j];
              a3 += w3[j] * xr[j];
            }
            scalar_t* orow = op + r * v + o;
            orow[0] = a0;
            orow[1] = a1;
            orow[2] = a2;
            orow[3] = a3;
          }
        } else {
          for (int64_t q = o; q < v; ++q) {
            for (int64_t r = 0; r < b; ++r) {
              scalar_t acc = 0;
_Pragma("omp simd reduction(+ : acc)")
              for (int64_t j = 0; j < k; ++j) acc += wp[q * k + j] * xp[r * k + j];
              op[r * v + q] = acc;
            }
          }
        }
      }
    });
  });
  return out;
}

// One decode step of a whole pre-norm block for a few rows (b up to about 16, where linear_rows
// beats the matmul): hidden + out_proj(mixer_step(in_proj(rms_norm(hidden)))), the same kernels
// the block calls one by one, in one call: at batch 1 a step of a small block costs more in
// per-call overhead than in arithmetic. Returns the new hidden (b, d_model) and the new states.
std::vector<torch::Tensor> block_step(torch::Tensor hidden, torch::Tensor conv_state, torch::Tensor ssm_state,
                                      torch::Tensor norm_w, double eps, torch::Tensor in_w, torch::Tensor conv_w,
                                      torch::Tensor conv_b, torch::Tensor x_proj_w, torch::Tensor dt_proj_w,
                                      c10::optional<torch::Tensor> dt_proj_b, torch::Tensor A_log, torch::Tensor Dv,
                                      torch::Tensor out_w) {
  TORCH_CHECK(hidden.dim() == 2 && norm_w.numel() == hidden.size(1), "block step: hidden must be (b, d_model)");
  hidden = hidden.contiguous();
  auto normed = rms_norm_forward(hidden, norm_w.contiguous(), eps)[0];
  auto mixed = mixer_step(linear_rows(normed, in_w), conv_state, ssm_state, conv_w, conv_b, x_proj_w, dt_proj_w,
                          dt_proj_b, A_log, Dv);
  auto out = linear_rows(mixed[0], out_w);
  out.add_(hidden);
  return {out, mixed[1], mixed[2]};
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("scan_forward", &scan_forward, "selective scan forward (CPU)");
  m.def("scan_backward", &scan_backward, "selective scan backward (CPU)");
  m.def("gated_scan_forward", &gated_scan_forward, "fused softplus + selective scan + D skip + SiLU gate forward (CPU)");
  m.def("gated_scan_backward", &gated_scan_backward, "fused softplus + selective scan + D skip + SiLU gate backward (CPU)");
  m.def("rms_norm_forward", &rms_norm_forward, "RMSNorm forward: y and 1/rms per row (CPU)");
  m.def("rms_norm_backward", &rms_norm_backward, "RMSNorm backward: dx and dweight (CPU)");
  m.def("mixer_step", &mixer_step, "one decode step of the mixer between in_proj and out_proj (CPU)");
  m.def("block_step", &block_step, "one decode step of a pre-norm SSM block for a few rows (CPU)");
  m.def("linear_rows", &linear_rows, "x @ w.t() for a few rows of x against a tall w (CPU)");
  m.def("build_info", &build_info, "the vector extensions the kernels were compiled for, and the threads");
  m.def("conv_silu_forward", &conv_silu_forward, "causal depthwise conv + SiLU forward (CPU)");
  m.def("conv_silu_backward", &conv_silu_backward, "causal depthwise conv + SiLU backward (CPU)");
  m.def("cross_entropy_", &cross_entropy_, "row-wise softmax cross-entropy, gradient in place (CPU)");
}
