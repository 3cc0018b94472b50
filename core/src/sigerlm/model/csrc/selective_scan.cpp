// Fused selective scan for CPUs (forward and backward), the "fused" scan back-end of SigerLM.
//
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

constexpr int64_t DB = 16;     // channels per work item
constexpr int64_t CHUNK = 32;  // positions between stored states

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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &scan_forward, "selective scan forward (CPU)");
  m.def("backward", &scan_backward, "selective scan backward (CPU)");
}
