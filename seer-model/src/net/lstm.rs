//! The recurrent stage: one LSTM over the convolved window, shared by every service.

use tch::Tensor;
use tch::nn::{self, RNN};

/// One LSTM layer, batch first: `[N, T, K] -> [N, hidden]` (the last step's output).
#[derive(Debug)]
pub(crate) struct Lstm {
    inner: nn::LSTM,
}

impl Lstm {
    pub(crate) fn new(p: &nn::Path<'_>, input: i64, hidden: i64) -> Self {
        Lstm {
            inner: nn::lstm(p / "lstm", input, hidden, Default::default()),
        }
    }

    /// The last time step's output for each sequence.
    pub(crate) fn last(&self, x: &Tensor) -> Tensor {
        let (out, _) = self.inner.seq(x);
        out.select(1, -1)
    }
}
