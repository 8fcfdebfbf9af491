//! The convolution stage: two strided 1-D convolutions over time, shared by every service.

use tch::Tensor;
use tch::nn;

/// Two `Conv1d` layers (kernel 5 then 3, stride 2 each, ReLU): `[N, W, C] -> [N, ~W/4, K]`.
///
/// They reduce the window four-fold before the LSTM (Seer's "CNN for dimensionality
/// reduction"), and see each service's channels jointly, so a queue rising together with its
/// queue wait and run-queue wait reads as one pattern.
///
/// The parameters are ordinary `Conv1d` ones (`[K, C, k]` weights, checkpoint names `c1` and
/// `c2`), but the forward pass is our own: time-major rows and one matrix product per layer for
/// the whole batch. libtorch's `conv1d` on a CPU went through oneDNN with layout reorders on
/// every call, and needed a transpose in and a copy out; this costs a third fewer instructions
/// (callgrind, the model bench: 351M -> 239M), and the LSTM reads its output as it comes.
#[derive(Debug)]
pub(crate) struct Cnn {
    c1: nn::Conv1D,
    c2: nn::Conv1D,
}

/// Kernel and stride of each layer.
const KERNELS: [i64; 2] = [5, 3];
const STRIDE: i64 = 2;

impl Cnn {
    pub(crate) fn new(p: &nn::Path<'_>, channels: i64, width: i64) -> Self {
        let cfg = |k: i64| nn::ConvConfig {
            stride: STRIDE,
            padding: k / 2,
            ..Default::default()
        };
        Cnn {
            c1: nn::conv1d(p / "c1", channels, width, KERNELS[0], cfg(KERNELS[0])),
            c2: nn::conv1d(p / "c2", width, width, KERNELS[1], cfg(KERNELS[1])),
        }
    }

    /// Output length for an input window of `w` ticks.
    #[cfg(test)]
    pub(crate) fn out_len(w: i64) -> i64 {
        KERNELS
            .iter()
            .fold(w, |len, k| (len + 2 * (k / 2) - k) / STRIDE + 1)
    }

    /// `[N, W, C]` time-major rows -> `[N, L, K]`, still time-major (training, with autograd).
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let h = conv_rows(x, &self.c1, KERNELS[0], Gather::Cat).relu();
        conv_rows(&h, &self.c2, KERNELS[1], Gather::Cat).relu()
    }

    /// The same as [`Cnn::forward`], bit for bit, for inference under `tch::no_grad`: each
    /// layer's rows are gathered by one strided copy instead of `k` slices and a `cat`.
    pub(crate) fn infer(&self, x: &Tensor) -> Tensor {
        let h = conv_rows(x, &self.c1, KERNELS[0], Gather::Strided).relu();
        conv_rows(&h, &self.c2, KERNELS[1], Gather::Strided).relu()
    }
}

/// How [`conv_rows`] gathers the rows of its product; both give the same matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gather {
    /// `k` stride-2 slices concatenated along channels: ordinary autograd ops (training keeps
    /// this, so its gradients are computed as before).
    Cat,
    /// One overlapping `as_strided` view of the padded input, copied once. The product's hot
    /// path (a prediction per tick) runs this: one copy with runs of `k * C` contiguous values
    /// instead of `k` slice ops and a `cat` with runs of `C`.
    Strided,
}

/// One strided, zero-padded 1-D convolution over time-major rows `[N, W, C] -> [N, L, K]`,
/// equal to `conv1d` on `[N, C, W]` with `conv`'s weights, padding `k / 2` and stride 2.
///
/// The rows of the product are `k` stride-2 slices of the padded input side by side, so each
/// row is `k` runs of `C` contiguous values (tap-major); the `[K, C, k]` weight is permuted to
/// the same order, which costs next to nothing at these sizes. `unfold` would give channel-major
/// rows, but copying them gathers one value at a time (callgrind: more than the product).
fn conv_rows(x: &Tensor, conv: &nn::Conv1D, k: i64, gather: Gather) -> Tensor {
    let size = x.size();
    let (n, w, c) = (size[0], size[1], size[2]);
    let pad = k / 2;
    let l = (w + 2 * pad - k) / STRIDE + 1;
    // Pad the time axis (the last pair of the pad list is the first dimension named).
    let padded = x.constant_pad_nd([0, 0, pad, pad]);
    let rows = match gather {
        Gather::Cat => {
            let taps: Vec<Tensor> = (0..k)
                .map(|j| padded.slice(1, j, j + STRIDE * (l - 1) + 1, STRIDE))
                .collect();
            Tensor::cat(&taps, 2).view([n * l, k * c])
        }
        Gather::Strided => {
            // Row (i, t) is the `k * C` values from padded time `STRIDE * t` on, contiguous in
            // the time-major input; consecutive rows overlap.
            let padded = padded.contiguous();
            padded
                .as_strided(
                    [n, l, k * c],
                    [(w + 2 * pad) * c, STRIDE * c, 1],
                    None::<i64>,
                )
                .reshape([n * l, k * c])
        }
    };
    let weight = conv.ws.permute([0, 2, 1]).reshape([-1, k * c]);
    let out = match &conv.bs {
        Some(bias) => bias.addmm(&rows, &weight.tr()),
        None => rows.matmul(&weight.tr()),
    };
    out.view([n, l, -1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::Module;
    use tch::{Device, Kind};

    #[test]
    fn equals_libtorch_conv1d() {
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let cnn = Cnn::new(&vs.root(), 6, 5);
        for w in [1, 4, 9, 30, 64] {
            let x = Tensor::randn([3, w, 6], (Kind::Float, Device::Cpu));
            let ours = cnn.forward(&x);
            let fast = tch::no_grad(|| cnn.infer(&x));
            let same = (&fast - &ours).abs().max().double_value(&[]);
            assert_eq!(same, 0.0, "w = {w}: the inference gather differs by {same}");
            let nchw = x.transpose(1, 2);
            let theirs = cnn
                .c2
                .forward(&cnn.c1.forward(&nchw).relu())
                .relu()
                .transpose(1, 2);
            assert_eq!(ours.size(), theirs.size(), "w = {w}");
            assert_eq!(ours.size()[1], Cnn::out_len(w), "w = {w}");
            let diff = (ours - theirs).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "w = {w}: outputs differ by {diff}");
        }
    }
}
