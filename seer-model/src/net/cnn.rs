//! The convolution stage: two strided 1-D convolutions over time, shared by every service.

use tch::Tensor;
use tch::nn::{self, Module};

/// Two `Conv1d` layers (kernel 5 then 3, stride 2 each, ReLU): `[N, C, W] -> [N, K, ~W/4]`.
///
/// They reduce the window four-fold before the LSTM (Seer's "CNN for dimensionality
/// reduction"), and see each service's channels jointly, so a queue rising together with its
/// queue wait and run-queue wait reads as one pattern.
#[derive(Debug)]
pub(crate) struct Cnn {
    c1: nn::Conv1D,
    c2: nn::Conv1D,
}

impl Cnn {
    pub(crate) fn new(p: &nn::Path<'_>, channels: i64, width: i64) -> Self {
        let cfg = |k: i64| nn::ConvConfig {
            stride: 2,
            padding: k / 2,
            ..Default::default()
        };
        Cnn {
            c1: nn::conv1d(p / "c1", channels, width, 5, cfg(5)),
            c2: nn::conv1d(p / "c2", width, width, 3, cfg(3)),
        }
    }

    /// Output length for an input window of `w` ticks.
    #[cfg(test)]
    pub(crate) fn out_len(w: i64) -> i64 {
        let l1 = (w + 2 * 2 - 5) / 2 + 1;
        (l1 + 2 - 3) / 2 + 1
    }
}

impl Module for Cnn {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.c2.forward(&self.c1.forward(x).relu()).relu()
    }
}
