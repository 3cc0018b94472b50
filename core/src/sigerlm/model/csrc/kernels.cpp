// SigerLM's CPU kernels, compiled on first use (sigerlm.model.kernels):
//  - the fused selective scan (forward and backward), the "fused" scan back-end;
//  - the causal depthwise convolution followed by SiLU, in the (b, l, d) layout;
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
#include <vector>

namespace {

constexpr int64_t DB = 128;    // channels per work item (8 AVX-512 or 16 AVX2 vectors)
constexpr int64_t CHUNK = 16;  // positions between stored states

struct Dims {
  int64_t b, l, d, n, blocks, chunks;
};

template <typename T>
void forward_item(const Dims& s, int64_t bi, int64_t blk, const T* u, const T* dt, const T* At, const T* B,
                  const T* C, const T* Dv, const T* h0, T* y, T* hlast, T* ckpt) {
  const int64_t d0 = blk * DB, w = std::min(DB, s.d - d0), L = s.l, D = s.d, N = s.n;
  u += bi * L * D;
  dt += bi * L * D;
  y += bi * L * D;
  B += bi * L * N;
  C += bi * L * N;
  std::vector<T> h(N * DB, T(0));
  if (h0 != nullptr) {
    for (int64_t j = 0; j < w; ++j)
      for (int64_t k = 0; k < N; ++k) h[k * DB + j] = h0[(bi * D + d0 + j) * N + k];
  }
  T du[DB], acc[DB];
  for (int64_t t = 0; t < L; ++t) {
    if (ckpt != nullptr && t % CHUNK == 0) {
      T* dst = ckpt + ((bi * s.chunks + t / CHUNK) * D + d0) * N;
      for (int64_t j = 0; j < w; ++j)
        for (int64_t k = 0; k < N; ++k) dst[j * N + k] = h[k * DB + j];
    }
    const T* dt_t = dt + t * D + d0;
    const T* u_t = u + t * D + d0;
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) {
      du[j] = dt_t[j] * u_t[j];
      acc[j] = T(0);
    }
    for (int64_t k = 0; k < N; ++k) {
      const T Bk = B[t * N + k], Ck = C[t * N + k];
      const T* A_k = At + k * D + d0;
      T* h_k = h.data() + k * DB;
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) {
        const T a = std::exp(dt_t[j] * A_k[j]);
        const T hv = a * h_k[j] + du[j] * Bk;
        h_k[j] = hv;
        acc[j] += Ck * hv;
      }
    }
    T* y_t = y + t * D + d0;
    const T* D_b = Dv + d0;
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) y_t[j] = acc[j] + D_b[j] * u_t[j];
  }
  for (int64_t j = 0; j < w; ++j)
    for (int64_t k = 0; k < N; ++k) hlast[(bi * D + d0 + j) * N + k] = h[k * DB + j];
}

template <typename T>
void backward_item(const Dims& s, int64_t bi, int64_t blk, const T* dy, const T* u, const T* dt, const T* At,
                   const T* B, const T* C, const T* Dv, const T* ckpt, const T* dhlast, T* du, T* ddt, T* dA_part,
                   T* dD_part, T* dB_part, T* dC_part, T* dh0) {
  const int64_t d0 = blk * DB, w = std::min(DB, s.d - d0), L = s.l, D = s.d, N = s.n;
  const int64_t off = bi * L * D;
  dy += off;
  u += off;
  dt += off;
  du += off;
  ddt += off;
  B += bi * L * N;
  C += bi * L * N;
  dB_part += (blk * s.b + bi) * L * N;  // (blocks, b, l, n): each item owns its slice
  dC_part += (blk * s.b + bi) * L * N;
  std::vector<T> g(N * DB, T(0)), dA(N * DB, T(0));
  std::vector<T> H((CHUNK + 1) * N * DB), Aexp(CHUNK * N * DB);
  if (dhlast != nullptr) {
    for (int64_t j = 0; j < w; ++j)
      for (int64_t k = 0; k < N; ++k) g[k * DB + j] = dhlast[(bi * D + d0 + j) * N + k];
  }
  T dD[DB] = {}, du_acc[DB], ddt_acc[DB], dub[DB];
  for (int64_t c = s.chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * CHUNK, t1 = std::min(L, t0 + CHUNK);
    // recompute the chunk's states from the stored one
    const T* src = ckpt + ((bi * s.chunks + c) * D + d0) * N;
    for (int64_t j = 0; j < w; ++j)
      for (int64_t k = 0; k < N; ++k) H[k * DB + j] = src[j * N + k];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t q = t - t0;
      const T* dt_t = dt + t * D + d0;
      const T* u_t = u + t * D + d0;
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) dub[j] = dt_t[j] * u_t[j];
      for (int64_t k = 0; k < N; ++k) {
        const T Bk = B[t * N + k];
        const T* A_k = At + k * D + d0;
        const T* hp = H.data() + (q * N + k) * DB;
        T* hn = H.data() + ((q + 1) * N + k) * DB;
        T* ak = Aexp.data() + (q * N + k) * DB;
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) {
          const T a = std::exp(dt_t[j] * A_k[j]);
          ak[j] = a;
          hn[j] = a * hp[j] + dub[j] * Bk;
        }
      }
    }
    // reverse pass over the chunk
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const int64_t q = t - t0;
      const T* dy_t = dy + t * D + d0;
      const T* dt_t = dt + t * D + d0;
      const T* u_t = u + t * D + d0;
      const T* D_b = Dv + d0;
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) {
        dD[j] += dy_t[j] * u_t[j];
        du_acc[j] = D_b[j] * dy_t[j];
        ddt_acc[j] = T(0);
        dub[j] = dt_t[j] * u_t[j];
      }
      for (int64_t k = 0; k < N; ++k) {
        const T Bk = B[t * N + k], Ck = C[t * N + k];
        const T* A_k = At + k * D + d0;
        const T* hp = H.data() + (q * N + k) * DB;
        const T* hc = H.data() + ((q + 1) * N + k) * DB;
        const T* ak = Aexp.data() + (q * N + k) * DB;
        T* g_k = g.data() + k * DB;
        T* dA_k = dA.data() + k * DB;
        T dC_sum = T(0), dB_sum = T(0);
#pragma omp simd reduction(+ : dC_sum, dB_sum)
        for (int64_t j = 0; j < w; ++j) {
          const T gv = g_k[j] + dy_t[j] * Ck;  // dL/dh_t
          dC_sum += dy_t[j] * hc[j];
          dB_sum += gv * dub[j];
          du_acc[j] += gv * dt_t[j] * Bk;
          const T p = gv * ak[j] * hp[j];
          ddt_acc[j] += gv * Bk * u_t[j] + A_k[j] * p;
          dA_k[j] += p * dt_t[j];
          g_k[j] = gv * ak[j];  // dL/dh_{t-1} through the recurrence
        }
        dC_part[t * N + k] = dC_sum;
        dB_part[t * N + k] = dB_sum;
      }
      T* du_t = du + t * D + d0;
      T* ddt_t = ddt + t * D + d0;
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) {
        du_t[j] = du_acc[j];
        ddt_t[j] = ddt_acc[j];
      }
    }
  }
  for (int64_t j = 0; j < w; ++j) {
    dD_part[bi * D + d0 + j] = dD[j];
    for (int64_t k = 0; k < N; ++k) {
      dA_part[(bi * D + d0 + j) * N + k] = dA[k * DB + j];
      dh0[(bi * D + d0 + j) * N + k] = g[k * DB + j];
    }
  }
}

Dims dims_of(const torch::Tensor& u, const torch::Tensor& B) {
  Dims s;
  s.b = u.size(0);
  s.l = u.size(1);
  s.d = u.size(2);
  s.n = B.size(2);
  s.blocks = (s.d + DB - 1) / DB;
  s.chunks = std::max<int64_t>(1, (s.l + CHUNK - 1) / CHUNK);
  return s;
}

void check(const torch::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), "selective scan: ", name, " must be on the CPU");
  TORCH_CHECK(t.dim() == dim, "selective scan: ", name, " must have ", dim, " dimensions, got ", t.dim());
  TORCH_CHECK(t.is_contiguous(), "selective scan: ", name, " must be contiguous");
}

// Returns y (b, l, d), the last state (b, d, n) and, when save_states, the stored states
// (b, chunks, d, n) that backward needs.
std::vector<torch::Tensor> scan_forward(torch::Tensor u, torch::Tensor dt, torch::Tensor A, torch::Tensor B,
                                        torch::Tensor C, torch::Tensor Dv, c10::optional<torch::Tensor> h0,
                                        bool save_states) {
  check(u, "u", 3);
  check(dt, "dt", 3);
  check(A, "A", 2);
  check(B, "B", 3);
  check(C, "C", 3);
  check(Dv, "D", 1);
  const Dims s = dims_of(u, B);
  auto At = A.t().contiguous();  // (n, d): channels contiguous for each state index
  auto y = torch::empty_like(u);
  auto hlast = torch::empty({s.b, s.d, s.n}, u.options());
  auto ckpt = save_states ? torch::empty({s.b, s.chunks, s.d, s.n}, u.options()) : torch::Tensor();
  torch::Tensor h0c;
  if (h0.has_value() && h0->defined()) {
    check(*h0, "state", 3);
    h0c = *h0;
  }
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_forward", [&] {
    const scalar_t* h0p = h0c.defined() ? h0c.data_ptr<scalar_t>() : nullptr;
    scalar_t* ck = save_states ? ckpt.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, s.b * s.blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        forward_item<scalar_t>(s, item / s.blocks, item % s.blocks, u.data_ptr<scalar_t>(), dt.data_ptr<scalar_t>(),
                               At.data_ptr<scalar_t>(), B.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(),
                               Dv.data_ptr<scalar_t>(), h0p, y.data_ptr<scalar_t>(), hlast.data_ptr<scalar_t>(), ck);
      }
    });
  });
  if (save_states) return {y, hlast, ckpt};
  return {y, hlast};
}

// Returns du, ddt (b, l, d), dA (d, n), dB, dC (b, l, n), dD (d), dh0 (b, d, n).
std::vector<torch::Tensor> scan_backward(torch::Tensor dy, torch::Tensor u, torch::Tensor dt, torch::Tensor A,
                                         torch::Tensor B, torch::Tensor C, torch::Tensor Dv, torch::Tensor ckpt,
                                         c10::optional<torch::Tensor> dhlast) {
  check(dy, "grad", 3);
  const Dims s = dims_of(u, B);
  auto At = A.t().contiguous();
  auto du = torch::empty_like(u);
  auto ddt = torch::empty_like(u);
  auto dA_part = torch::empty({s.b, s.d, s.n}, u.options());
  auto dD_part = torch::empty({s.b, s.d}, u.options());
  auto dB_part = torch::empty({s.blocks, s.b, s.l, s.n}, u.options());
  auto dC_part = torch::empty({s.blocks, s.b, s.l, s.n}, u.options());
  auto dh0 = torch::empty({s.b, s.d, s.n}, u.options());
  torch::Tensor dhl;
  if (dhlast.has_value() && dhlast->defined()) dhl = dhlast->contiguous();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_backward", [&] {
    const scalar_t* dhp = dhl.defined() ? dhl.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, s.b * s.blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        backward_item<scalar_t>(s, item / s.blocks, item % s.blocks, dy.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
                                dt.data_ptr<scalar_t>(), At.data_ptr<scalar_t>(), B.data_ptr<scalar_t>(),
                                C.data_ptr<scalar_t>(), Dv.data_ptr<scalar_t>(), ckpt.data_ptr<scalar_t>(), dhp,
                                du.data_ptr<scalar_t>(), ddt.data_ptr<scalar_t>(), dA_part.data_ptr<scalar_t>(),
                                dD_part.data_ptr<scalar_t>(), dB_part.data_ptr<scalar_t>(),
                                dC_part.data_ptr<scalar_t>(), dh0.data_ptr<scalar_t>());
      }
    });
  });
  return {du, ddt, dA_part.sum(0), dB_part.sum(0), dC_part.sum(0), dD_part.sum(0), dh0};
}

// Causal depthwise convolution + SiLU, in the (b, l, d) layout the projections produce, so no
// transposes or padding copies are needed:
//   s[t, j] = bias[j] + sum_k w[j, k] * x[t - (K - 1) + k, j]    (positions before 0 come from
//   out[t, j] = silu(s[t, j])                                     the state (b, d, K - 1) or are 0)
// x may be a strided view (row stride xs, batch stride xbs), as a chunk of in_proj's output is.
template <typename T>
inline T sigmoid(T s) {
  return T(1) / (T(1) + std::exp(-s));
}

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
  const int64_t blocks = (D + DB - 1) / DB;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_silu_forward", [&] {
    const scalar_t* sp = st.defined() ? st.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, b * blocks, 1, [&](int64_t begin, int64_t end) {
      scalar_t acc[DB];
      for (int64_t item = begin; item < end; ++item) {
        const int64_t bi = item / blocks, d0 = (item % blocks) * DB, w = std::min(DB, D - d0);
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
  const int64_t blocks = (D + DB - 1) / DB;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_silu_backward", [&] {
    const scalar_t* sp = st.defined() ? st.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, b * blocks, 1, [&](int64_t begin, int64_t end) {
      scalar_t acc[DB];
      for (int64_t item = begin; item < end; ++item) {
        const int64_t bi = item / blocks, d0 = (item % blocks) * DB, w = std::min(DB, D - d0);
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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("scan_forward", &scan_forward, "selective scan forward (CPU)");
  m.def("scan_backward", &scan_backward, "selective scan backward (CPU)");
  m.def("conv_silu_forward", &conv_silu_forward, "causal depthwise conv + SiLU forward (CPU)");
  m.def("conv_silu_backward", &conv_silu_backward, "causal depthwise conv + SiLU backward (CPU)");
  m.def("cross_entropy_", &cross_entropy_, "row-wise softmax cross-entropy, gradient in place (CPU)");
}
