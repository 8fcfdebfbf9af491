//! A real libtorch computation: proves provisioning and run-time library lookup.

use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::ModelError;

/// What [`smoke`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmokeReport {
    /// Mean squared error before training.
    pub loss_before: f64,
    /// Mean squared error after training.
    pub loss_after: f64,
    /// Number of trainable parameters.
    pub parameters: usize,
}

/// Trains a two-layer network on `y = 2x - 1` for `steps` Adam steps on the CPU (seeded, one
/// libtorch thread) and reports the loss before and after.
///
/// # Errors
///
/// [`ModelError::Torch`] when libtorch fails.
pub fn smoke(steps: usize) -> Result<SmokeReport, ModelError> {
    tch::manual_seed(7);
    tch::set_num_threads(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let net = nn::seq()
        .add(nn::linear(&root / "l1", 1, 16, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&root / "l2", 16, 1, Default::default()));
    let mut opt = nn::Adam::default().build(&vs, 1e-2)?;
    let x = Tensor::linspace(-1.0, 1.0, 64, (Kind::Float, Device::Cpu)).unsqueeze(1);
    let y = &x * 2.0 - 1.0;
    let loss_of = |net: &nn::Sequential| -> Result<f64, ModelError> {
        let loss = net.forward(&x).mse_loss(&y, tch::Reduction::Mean);
        Ok(loss.f_double_value(&[])?)
    };
    let loss_before = loss_of(&net)?;
    for _ in 0..steps {
        let loss = net.forward(&x).mse_loss(&y, tch::Reduction::Mean);
        opt.backward_step(&loss);
    }
    let loss_after = loss_of(&net)?;
    let parameters = vs.trainable_variables().iter().map(Tensor::numel).sum();
    Ok(SmokeReport {
        loss_before,
        loss_after,
        parameters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_and_backward_reduce_the_loss() {
        let report = smoke(50).expect("libtorch runs");
        assert_eq!(report.parameters, 16 + 16 + 16 + 1);
        assert!(
            report.loss_after < report.loss_before * 0.5,
            "loss did not fall: {report:?}"
        );
    }
}
