// The time loop of projunn's fused recurrence (projunn/rnn.py, Note [fused recurrence]) in C++, for
// the CPU: per step one matrix product (ATen's, the same BLAS as torch.mm) and one element-wise pass
// written here, so that the nonlinearity, its derivative, the masks and modReLU's threshold gradient
// cost one pass over the step's (B, n) block instead of two to five ATen kernels and their dispatch.
// Built on first use by torch.utils.cpp_extension (projunn/_kernels.py); the pure-PyTorch loop in
// rnn.py is the reference it is tested against and the fallback where it does not build.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <tuple>

namespace {

using at::Tensor;

template <typename T>
T sign(T v) {
  return T(v > T(0)) - T(v < T(0));
}

// h = σ(p) in place on one step's (B, n) block: ReLU (bias == nullptr) or modReLU sgn(p)·relu(|p| + b).
template <typename scalar_t, typename real_t>
void activate(scalar_t* p, const real_t* bias, int64_t B, int64_t n) {
  if (bias == nullptr) {
    if constexpr (std::is_floating_point_v<scalar_t>) {
      for (int64_t i = 0; i < B * n; ++i) p[i] = p[i] < scalar_t(0) ? scalar_t(0) : p[i];  // NaN stays NaN
    }
    return;
  }
  for (int64_t r = 0; r < B; ++r) {
    scalar_t* row = p + r * n;
    for (int64_t j = 0; j < n; ++j) {
      const real_t magnitude = std::abs(row[j]);
      const real_t a = std::max(magnitude + bias[j], real_t(0));
      if constexpr (std::is_floating_point_v<scalar_t>) {
        row[j] = sign(row[j]) * a;
      } else {
        row[j] = magnitude > real_t(0) ? row[j] / magnitude * a : scalar_t(0);
      }
    }
  }
}

// δ = (d + g)·σ'(p) in place on d, from h = σ(p); modReLU also adds its threshold's gradient to
// grad_bias (B, n): real g·sgn(h), complex Re(ē g) (Note [fused recurrence]). One loop per case,
// branch-free where real, so that the compiler vectorizes it.
template <bool with_g, typename scalar_t, typename real_t>
void differentiate_(scalar_t* d, const scalar_t* g, const scalar_t* h, const real_t* bias, real_t* grad_bias,
                    int64_t B, int64_t n) {
  if constexpr (std::is_floating_point_v<scalar_t>) {
    if (bias == nullptr) {
      for (int64_t i = 0; i < B * n; ++i) {
        const scalar_t v = with_g ? d[i] + g[i] : d[i];
        d[i] = h[i] > scalar_t(0) ? v : scalar_t(0);
      }
    } else {
      for (int64_t i = 0; i < B * n; ++i) {
        const scalar_t v = with_g ? d[i] + g[i] : d[i];
        const scalar_t s = sign(h[i]);
        grad_bias[i] += v * s;
        d[i] = v * (s * s);
      }
    }
  } else {
    for (int64_t r = 0; r < B; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        const int64_t i = r * n + j;
        const scalar_t v = with_g ? d[i] + g[i] : d[i];
        const real_t magnitude = std::abs(h[i]);
        if (magnitude > real_t(0)) {
          const scalar_t e = h[i] / magnitude;
          const real_t radial = (std::conj(e) * v).real();
          grad_bias[i] += radial;
          d[i] = v + bias[j] / (magnitude - bias[j]) * (v - e * radial);
        } else {
          d[i] = scalar_t(0);
        }
      }
    }
  }
}

template <typename scalar_t, typename real_t>
void differentiate(scalar_t* d, const scalar_t* g, const scalar_t* h, const real_t* bias, real_t* grad_bias,
                   int64_t B, int64_t n) {
  if (g == nullptr) {
    differentiate_<false>(d, g, h, bias, grad_bias, B, n);
  } else {
    differentiate_<true>(d, g, h, bias, grad_bias, B, n);
  }
}

// out (T, B, n) holds the input map of every step; in place it becomes h_1..h_T.
void forward(Tensor out, const Tensor& h0, const Tensor& weight_hh_t, const c10::optional<Tensor>& bias) {
  TORCH_CHECK(out.dim() == 3 && out.is_contiguous() && out.device().is_cpu(), "out: a contiguous CPU (T, B, n) tensor");
  TORCH_CHECK(!out.is_complex() || bias.has_value(), "a complex recurrence needs modReLU's threshold");
  const int64_t T = out.size(0), B = out.size(1), n = out.size(2);
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(out.scalar_type(), "projunn_recurrence_forward", [&] {
    using real_t = typename c10::scalar_value_type<scalar_t>::type;
    const real_t* b = bias.has_value() ? bias->data_ptr<real_t>() : nullptr;
    Tensor h = h0;
    for (int64_t t = 0; t < T; ++t) {
      Tensor p = out.select(0, t);
      p.addmm_(h, weight_hh_t);
      activate<scalar_t, real_t>(p.data_ptr<scalar_t>(), b, B, n);
      h = p;
    }
  });
}

// The backward of the whole loop (rnn.py's _Recurrence.backward, step for step); undefined tensors
// for the gradients not needed.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> backward(
    const Tensor& out, const Tensor& x, const Tensor& h0, const Tensor& weight_hh, const Tensor& weight_ih,
    const c10::optional<Tensor>& bias, const c10::optional<Tensor>& grad, const c10::optional<Tensor>& grad_last,
    std::vector<bool> needs, int64_t block) {
  TORCH_CHECK(!out.is_complex() || bias.has_value(), "a complex recurrence needs modReLU's threshold");
  TORCH_CHECK(out.is_contiguous() && (!grad.has_value() || grad->is_contiguous()), "out and grad: contiguous");
  const int64_t T = out.size(0), B = out.size(1), n = out.size(2);
  const Tensor w = weight_hh.conj();  // ∂/∂h of h Wᵀ is ·conj(W)
  Tensor delta = at::empty({std::min(block, T), B, n}, out.options());
  Tensor grad_hh = needs[2] ? at::zeros(weight_hh.sizes(), weight_hh.options()) : Tensor();
  // The input map's weight gradient is summed transposed, (in × n) += conj(x)ᵀ δ: with in ≪ n
  // (1, 2 or 10 inputs) BLAS takes this product faster than δᵀ conj(x) (n × in).
  Tensor grad_ih_t = needs[3] ? at::zeros({weight_ih.size(1), weight_ih.size(0)}, weight_ih.options()) : Tensor();
  Tensor grad_bias_ih = needs[4] ? at::zeros({n}, out.options()) : Tensor();
  Tensor grad_x = needs[0] ? at::empty_like(x) : Tensor();
  Tensor grad_bias = bias.has_value() ? at::zeros({B, n}, bias->options()) : Tensor();
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(out.scalar_type(), "projunn_recurrence_backward", [&] {
    using real_t = typename c10::scalar_value_type<scalar_t>::type;
    const real_t* b = bias.has_value() ? bias->data_ptr<real_t>() : nullptr;
    real_t* gb = bias.has_value() ? grad_bias.data_ptr<real_t>() : nullptr;
    const scalar_t* h_all = out.data_ptr<scalar_t>();  // step t's (B, n) block at t·B·n
    const scalar_t* g_all = grad.has_value() ? grad->data_ptr<scalar_t>() : nullptr;
    for (int64_t t = T - 1; t >= 0; --t) {
      Tensor d = delta.select(0, t % block);
      if (t == T - 1) {  // g_T = ∂L/∂h_T
        d.zero_();
        if (grad_last.has_value()) d.add_(*grad_last);
      } else {  // g_t = ∂L/∂h_t + δ_{t+1} conj(W), the sum taken in the element-wise pass
        at::mm_out(d, delta.select(0, (t + 1) % block), w);
      }
      const scalar_t* g = g_all == nullptr ? nullptr : g_all + t * B * n;
      differentiate<scalar_t, real_t>(d.data_ptr<scalar_t>(), g, h_all + t * B * n, b, gb, B, n);
      if (t % block == 0) {  // the block of steps t..t+L−1: its weight gradients in one product each
        const int64_t L = std::min(block, T - t);
        Tensor rows = delta.slice(0, 0, L).flatten(0, 1);
        if (grad_hh.defined()) {
          if (t == 0) {  // Σ δ_tᵀ conj(h_{t−1}), with h_{−1} = h0
            grad_hh.addmm_(delta.select(0, 0).mT(), h0.conj());
            if (L > 1) grad_hh.addmm_(delta.slice(0, 1, L).flatten(0, 1).mT(), out.slice(0, 0, L - 1).flatten(0, 1).conj());
          } else {
            grad_hh.addmm_(rows.mT(), out.slice(0, t - 1, t + L - 1).flatten(0, 1).conj());
          }
        }
        if (grad_ih_t.defined()) grad_ih_t.addmm_(x.slice(0, t, t + L).flatten(0, 1).conj().mT(), rows);
        if (grad_bias_ih.defined()) grad_bias_ih.add_(rows.sum(0));
        if (grad_x.defined()) {
          Tensor grad_x_rows = grad_x.slice(0, t, t + L).flatten(0, 1);  // a view: written in place
          at::mm_out(grad_x_rows, rows, weight_ih.conj());
        }
      }
    }
  });
  Tensor grad_h0 = needs[1] ? at::mm(delta.select(0, 0), w) : Tensor();
  Tensor grad_ih = needs[3] ? grad_ih_t.mT().contiguous() : Tensor();
  return {grad_x, grad_h0, grad_hh, grad_ih, grad_bias_ih, bias.has_value() ? grad_bias.sum(0) : Tensor()};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "h_1..h_T in place of the input map (T, B, n)");
  m.def("backward", &backward, "the gradients of the whole loop");
}
