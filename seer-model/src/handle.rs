//! [`ModelHandle`]: the `Clone + Send + Sync` front-end of the model thread.
//!
//! All libtorch state lives on one dedicated OS thread (the actor); the handle only sends it
//! commands over a channel. tch tensors are not thread-safe, so they never leave that thread and
//! never touch an async worker.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel::{self, Receiver, Sender};

use crate::ModelError;
use crate::config::ModelConfig;
use crate::features::TickFeatures;
use crate::prediction::{ModelStatus, Outcome, Prediction};
use crate::trainer::{Engine, error_chain};

/// Commands queued ahead of the model thread before callers block.
const QUEUE: usize = 1024;

/// An owned copy of [`TickFeatures`], for the trip to the model thread.
#[derive(Debug)]
struct OwnedTick {
    tick: u64,
    services: Vec<String>,
    features: Vec<f32>,
    feature_names: Vec<String>,
    edges: Vec<(usize, usize)>,
    node: Vec<(String, f32)>,
}

type Reply<T> = Sender<Result<T, ModelError>>;

#[derive(Debug)]
enum Command {
    Observe(Box<OwnedTick>, Reply<Prediction>),
    Outcome {
        tick: u64,
        violation: bool,
        culprit: Option<String>,
    },
    Train(usize, Reply<Vec<f32>>),
    Status(Sender<ModelStatus>),
    Parameters(Sender<usize>),
    Save(Reply<()>),
}

#[derive(Debug)]
struct Inner {
    tx: Option<Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; it then writes its last checkpoint.
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A handle to the model: predicts, learns from outcomes, reports and checkpoints.
///
/// Cheap to clone; every clone talks to the same model thread. The thread stops (writing a final
/// checkpoint when one is configured) once the last clone is dropped. Calls that wait for an
/// answer block the calling thread for as long as the model thread is busy (one prediction or one
/// training step, a few milliseconds): call them from a dedicated thread, never an async worker.
///
/// # Examples
///
/// ```
/// use seer_model::{ModelConfig, ModelHandle, Outcome, TickFeatures};
///
/// let model = ModelHandle::spawn(
///     ModelConfig::default().with_window(8).with_horizon(2).with_train_every(1),
/// )?;
/// let services = vec!["frontend".to_owned(), "db".to_owned()];
/// let names = ["queue_depth_mean", "queue_wait_p99_ms"];
/// for tick in 0..5 {
///     let prediction = model.observe(&TickFeatures {
///         tick,
///         services: &services,
///         features: &[0.2, 1.0, 0.1, 0.5],
///         feature_names: &names,
///         edges: &[(0, 1)],
///         node: &[],
///     })?;
///     assert_eq!(prediction.services.len(), 2);
///     model.outcome(&Outcome { tick, violation: false, culprit: None })?;
/// }
/// assert!(model.status()?.matured > 0);
/// # Ok::<(), seer_model::ModelError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ModelHandle {
    inner: Arc<Inner>,
}

impl ModelHandle {
    /// Starts the model thread: builds the network and loads the checkpoint when configured.
    ///
    /// A checkpoint that is corrupt or was written for another schema does not fail this call:
    /// the model starts fresh and [`ModelStatus::checkpoint_error`] says why.
    ///
    /// # Errors
    ///
    /// [`ModelError::Config`] for bad settings, [`ModelError::Torch`] when libtorch fails to
    /// build the network, [`ModelError::Spawn`] when the thread cannot start.
    pub fn spawn(config: ModelConfig) -> Result<ModelHandle, ModelError> {
        config.validate().map_err(ModelError::Config)?;
        let (tx, rx) = channel::bounded(QUEUE);
        let (ready_tx, ready_rx) = channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("seer-model".to_owned())
            .spawn(move || match Engine::new(config) {
                Ok(engine) => {
                    let _ = ready_tx.send(Ok(()));
                    run(engine, &rx);
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(err));
                }
            })
            .map_err(ModelError::Spawn)?;
        let inner = Inner {
            tx: Some(tx),
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(ModelHandle {
                inner: Arc::new(inner),
            }),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(ModelError::Stopped),
        }
    }

    fn send(&self, cmd: Command) -> Result<(), ModelError> {
        self.inner
            .tx
            .as_ref()
            .ok_or(ModelError::Stopped)?
            .send(cmd)
            .map_err(|_| ModelError::Stopped)
    }

    fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ModelError> {
        let (tx, rx) = channel::bounded(1);
        self.send(make(tx))?;
        rx.recv().map_err(|_| ModelError::Stopped)?
    }

    /// Records one tick of features and predicts every service in it (one call per tick).
    ///
    /// The model matures this tick's label once [`outcome`](Self::outcome) has reported the
    /// following H ticks. Training steps run on the model thread right after the answer is sent.
    ///
    /// # Errors
    ///
    /// [`ModelError::Input`] when the feature slice does not match services x columns,
    /// [`ModelError::Torch`] when libtorch fails, [`ModelError::Stopped`] when the thread is gone.
    pub fn observe(&self, tick: &TickFeatures<'_>) -> Result<Prediction, ModelError> {
        let owned = OwnedTick {
            tick: tick.tick,
            services: tick.services.to_vec(),
            features: tick.features.to_vec(),
            feature_names: tick.feature_names.iter().map(|s| (*s).to_owned()).collect(),
            edges: tick.edges.to_vec(),
            node: tick
                .node
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
        };
        self.ask(|reply| Command::Observe(Box::new(owned), reply))
    }

    /// Reports what happened in a tick. Does not wait for the model thread to handle it; it
    /// waits only while the thread's command queue is full.
    ///
    /// # Errors
    ///
    /// [`ModelError::Stopped`] when the thread is gone.
    pub fn outcome(&self, outcome: &Outcome<'_>) -> Result<(), ModelError> {
        self.send(Command::Outcome {
            tick: outcome.tick,
            violation: outcome.violation,
            culprit: outcome.culprit.map(str::to_owned),
        })
    }

    /// Runs `steps` training steps now and returns their losses (fewer when the replay buffer is
    /// still empty).
    ///
    /// # Errors
    ///
    /// [`ModelError::Torch`] when libtorch fails, [`ModelError::Stopped`] when the thread is gone.
    pub fn train(&self, steps: usize) -> Result<Vec<f32>, ModelError> {
        self.ask(|reply| Command::Train(steps, reply))
    }

    /// A snapshot of the model's state.
    ///
    /// # Errors
    ///
    /// [`ModelError::Stopped`] when the thread is gone.
    pub fn status(&self) -> Result<ModelStatus, ModelError> {
        let (tx, rx) = channel::bounded(1);
        self.send(Command::Status(tx))?;
        rx.recv().map_err(|_| ModelError::Stopped)
    }

    /// Number of trainable parameters of the network.
    ///
    /// # Errors
    ///
    /// [`ModelError::Stopped`] when the thread is gone.
    pub fn parameters(&self) -> Result<usize, ModelError> {
        let (tx, rx) = channel::bounded(1);
        self.send(Command::Parameters(tx))?;
        rx.recv().map_err(|_| ModelError::Stopped)
    }

    /// Writes the checkpoint now.
    ///
    /// # Errors
    ///
    /// [`ModelError::Config`] when no checkpoint path is configured, the checkpoint errors for
    /// I/O failures, [`ModelError::Stopped`] when the thread is gone.
    pub fn save(&self) -> Result<(), ModelError> {
        self.ask(Command::Save)
    }
}

/// The model thread's loop. A panic inside one command is caught: that caller sees
/// [`ModelError::Stopped`], and the thread goes on serving the others.
fn run(mut engine: Engine, rx: &Receiver<Command>) {
    while let Ok(cmd) = rx.recv() {
        let outcome = catch_unwind(AssertUnwindSafe(|| handle(&mut engine, cmd)));
        if let Err(panic) = outcome {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown panic".to_owned());
            tracing::error!(panic = %msg, "seer-model: a command failed");
        }
    }
    if engine.has_checkpoint()
        && let Err(err) = engine.save()
    {
        tracing::warn!(error = %error_chain(&err), "seer-model: final checkpoint failed");
    }
}

fn handle(engine: &mut Engine, cmd: Command) {
    match cmd {
        Command::Observe(tick, reply) => {
            let names: Vec<&str> = tick.feature_names.iter().map(String::as_str).collect();
            let node: Vec<(&str, f32)> = tick.node.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let input = TickFeatures {
                tick: tick.tick,
                services: &tick.services,
                features: &tick.features,
                feature_names: &names,
                edges: &tick.edges,
                node: &node,
            };
            let _ = reply.send(engine.observe(&input));
            // Train after answering, so the caller never waits for a training step it did not ask for.
            if let Err(err) = engine.maybe_train() {
                tracing::warn!(error = %error_chain(&err), "seer-model: training step failed");
            }
        }
        Command::Outcome {
            tick,
            violation,
            culprit,
        } => engine.outcome(&Outcome {
            tick,
            violation,
            culprit: culprit.as_deref(),
        }),
        Command::Train(steps, reply) => {
            let mut losses = Vec::with_capacity(steps);
            let mut result = Ok(());
            for _ in 0..steps {
                match engine.train_step() {
                    Ok(Some(loss)) => losses.push(loss),
                    Ok(None) => break,
                    Err(err) => {
                        result = Err(err);
                        break;
                    }
                }
            }
            let _ = reply.send(result.map(|()| losses));
        }
        Command::Status(reply) => {
            let _ = reply.send(engine.status());
        }
        Command::Parameters(reply) => {
            let _ = reply.send(engine.parameters());
        }
        Command::Save(reply) => {
            let _ = reply.send(engine.save());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn assert_send_sync<T: Send + Sync + Clone>() {}
    const _: () = assert_send_sync::<ModelHandle>();
}
