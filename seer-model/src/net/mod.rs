//! The network: a shared per-service CNN+LSTM encoder, a neighbour mix through the call graph,
//! and two heads (per-service culprit risk, global violation risk).
//!
//! Services are the batch dimension, never the channel dimension: every service goes through the
//! same weights, so the network does not care how many services there are or in which order.
//! A service that appears at run time is just one more row; one that disappears is one fewer.

mod cnn;
mod lstm;

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use self::cnn::Cnn;
use self::lstm::Lstm;

/// Ticks at the end of the window averaged into the skip path.
const RECENT: i64 = 4;

/// Shapes of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NetShape {
    pub(crate) channels: i64,
    pub(crate) conv: i64,
    pub(crate) hidden: i64,
    pub(crate) embed: i64,
}

/// Logits of one forward pass.
#[derive(Debug)]
pub(crate) struct Logits {
    /// `[B, S]`: this service causes a violation within H.
    pub(crate) service: Tensor,
    /// `[B]`: a violation within H.
    pub(crate) global: Tensor,
}

/// Which pass [`SeerNet::pass`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// With autograd: the ops training differentiates.
    Train,
    /// Under `no_grad`: the same values through cheaper ops.
    Infer,
}

/// The whole network.
#[derive(Debug)]
pub(crate) struct SeerNet {
    cnn: Cnn,
    lstm: Lstm,
    skip: nn::Linear,
    embed: nn::Linear,
    mix: nn::Linear,
    head: nn::Linear,
    global: nn::Linear,
    global_out: nn::Linear,
    shape: NetShape,
}

impl SeerNet {
    pub(crate) fn new(p: &nn::Path<'_>, shape: NetShape) -> Self {
        let lin = |name: &str, i: i64, o: i64| nn::linear(p / name, i, o, Default::default());
        let e = shape.embed;
        SeerNet {
            cnn: Cnn::new(&(p / "cnn"), shape.channels, shape.conv),
            lstm: Lstm::new(&(p / "rnn"), shape.conv, shape.hidden),
            skip: lin("skip", shape.channels, e),
            embed: lin("embed", shape.hidden + e, e),
            mix: lin("mix", 3 * e, e),
            head: lin("head", e, 1),
            global: lin("global", 2 * e + 1, e),
            global_out: lin("global_out", e, 1),
            shape,
        }
    }

    /// The training pass, with autograd. `x`: `[B, S, W, C]`; `mask`: `[B, S]` (1 = real
    /// service); `adjacency`: `[B, S, S]`, caller -> callee.
    pub(crate) fn forward(&self, x: &Tensor, mask: &Tensor, adjacency: &Tensor) -> Logits {
        self.pass(x, mask, adjacency, Pass::Train)
    }

    /// The inference pass, under `tch::no_grad`: the same logits as [`SeerNet::forward`], through
    /// the convolutions' inference gather (see [`Cnn::infer`]).
    pub(crate) fn infer(&self, x: &Tensor, mask: &Tensor, adjacency: &Tensor) -> Logits {
        tch::no_grad(|| self.pass(x, mask, adjacency, Pass::Infer))
    }

    fn pass(&self, x: &Tensor, mask: &Tensor, adjacency: &Tensor, pass: Pass) -> Logits {
        let size = x.size();
        let (b, s, w, c) = (size[0], size[1], size[2], size[3]);
        let e = self.shape.embed;
        let seq = x.view([b * s, w, c]);
        // Time-major rows in and out of the convolutions: the LSTM reads them contiguous (on a
        // strided view libtorch's LSTM costs about twice the instructions, callgrind).
        let conv = match pass {
            Pass::Train => self.cnn.forward(&seq),
            Pass::Infer => self.cnn.infer(&seq),
        };
        let h = self.lstm.last(&conv);
        let recent =
            seq.narrow(1, w - RECENT.min(w), RECENT.min(w))
                .mean_dim(1, false, Kind::Float);
        let skip = self.skip.forward(&recent).relu();
        let m = mask.unsqueeze(-1);
        let emb = self
            .embed
            .forward(&Tensor::cat(&[h, skip], 1))
            .relu()
            .view([b, s, e])
            * &m;

        // Neighbour mix: mean of callee and of caller embeddings.
        let out_deg = adjacency
            .sum_dim_intlist(-1, true, Kind::Float)
            .clamp_min(1.0);
        let callees = adjacency.matmul(&emb) / out_deg;
        let rev = adjacency.transpose(1, 2);
        let in_deg = rev.sum_dim_intlist(-1, true, Kind::Float).clamp_min(1.0);
        let callers = rev.matmul(&emb) / in_deg;
        let z = self
            .mix
            .forward(&Tensor::cat(&[&emb, &callees, &callers], -1))
            .relu()
            * &m;
        let service = self.head.forward(&z).squeeze_dim(-1);
        let pad = (mask - 1.0) * 1e4;

        let count = mask.sum_dim_intlist(-1, true, Kind::Float).clamp_min(1.0);
        let mean = z.sum_dim_intlist(1, false, Kind::Float) / count;
        let max = (&z + pad.unsqueeze(-1)).amax(1, false);
        let top = (&service + &pad).amax(1, true);
        let g = self
            .global
            .forward(&Tensor::cat(&[mean, max, top], -1))
            .relu();
        let global = self.global_out.forward(&g).squeeze_dim(-1);
        Logits {
            service: service + pad,
            global,
        }
    }

    /// Output length of the convolution stage for a window of `w` ticks.
    #[cfg(test)]
    pub(crate) fn steps(w: i64) -> i64 {
        Cnn::out_len(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn shapes_for_any_service_count() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let shape = NetShape {
            channels: 5,
            conv: 8,
            hidden: 6,
            embed: 4,
        };
        let net = SeerNet::new(&vs.root(), shape);
        for (b, s, w) in [(1, 1, 4), (2, 3, 10), (3, 7, 30)] {
            let x = Tensor::randn([b, s, w, 5], (Kind::Float, Device::Cpu));
            let mask = Tensor::ones([b, s], (Kind::Float, Device::Cpu));
            let adj = Tensor::zeros([b, s, s], (Kind::Float, Device::Cpu));
            let out = net.forward(&x, &mask, &adj);
            assert_eq!(out.service.size(), vec![b, s]);
            assert_eq!(out.global.size(), vec![b]);
        }
        assert_eq!(SeerNet::steps(64), 16);
        assert_eq!(SeerNet::steps(30), 8);
    }

    #[test]
    fn inference_pass_equals_training_pass() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let shape = NetShape {
            channels: 7,
            conv: 32,
            hidden: 48,
            embed: 16,
        };
        let net = SeerNet::new(&vs.root(), shape);
        for (b, s, w) in [(1, 1, 1), (1, 5, 4), (2, 9, 30), (1, 13, 64)] {
            let x = Tensor::randn([b, s, w, 7], (Kind::Float, Device::Cpu));
            let mask = Tensor::ones([b, s], (Kind::Float, Device::Cpu));
            let adj = Tensor::rand([b, s, s], (Kind::Float, Device::Cpu))
                .gt(0.7)
                .to_kind(Kind::Float);
            let train = net.forward(&x, &mask, &adj);
            let infer = net.infer(&x, &mask, &adj);
            let diff = (train.service - infer.service)
                .abs()
                .max()
                .double_value(&[]);
            assert!(
                diff < 1e-5,
                "b {b}, s {s}, w {w}: service logits differ by {diff}"
            );
            let gdiff = (train.global - infer.global).abs().max().double_value(&[]);
            assert!(
                gdiff < 1e-5,
                "b {b}, s {s}, w {w}: global logit differs by {gdiff}"
            );
        }
    }

    #[test]
    fn padding_does_not_change_real_services() {
        tch::manual_seed(2);
        let vs = nn::VarStore::new(Device::Cpu);
        let shape = NetShape {
            channels: 3,
            conv: 4,
            hidden: 4,
            embed: 4,
        };
        let net = SeerNet::new(&vs.root(), shape);
        let x = Tensor::randn([1, 2, 8, 3], (Kind::Float, Device::Cpu));
        let adj = Tensor::from_slice(&[0.0f32, 1.0, 0.0, 0.0]).view([1, 2, 2]);
        let a = net.forward(&x, &Tensor::ones([1, 2], (Kind::Float, Device::Cpu)), &adj);
        let xp = Tensor::cat(
            &[x, Tensor::zeros([1, 1, 8, 3], (Kind::Float, Device::Cpu))],
            1,
        );
        let adjp =
            Tensor::from_slice(&[0.0f32, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).view([1, 3, 3]);
        let maskp = Tensor::from_slice(&[1.0f32, 1.0, 0.0]).view([1, 3]);
        let b = net.forward(&xp, &maskp, &adjp);
        let diff = (a.service - b.service.narrow(1, 0, 2))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-5, "service logits moved by {diff}");
        let gdiff = (a.global - b.global).abs().max().double_value(&[]);
        assert!(gdiff < 1e-5, "global logit moved by {gdiff}");
    }
}
