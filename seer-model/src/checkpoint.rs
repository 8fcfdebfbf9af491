//! Checkpoints: weights, normaliser state and the feature schema in one self-checking file.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! b"SEERCKPT"  u32 format  u64 header_len  header (JSON)  f32 weights...  u64 FNV-1a of all before
//! ```
//!
//! The weights are written by this module, not by libtorch's serialiser, so a damaged file is
//! caught by the checksum and the schema check before any byte reaches libtorch. Writes go to a
//! temporary file in the same folder, are flushed to disk, then renamed over the old file (and the
//! folder is synced), so a crash leaves either the old or the new checkpoint, never a torn one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::ModelError;
use crate::features::Normaliser;

const MAGIC: &[u8; 8] = b"SEERCKPT";
const FORMAT: u32 = 1;

/// Everything a checkpoint must agree on with the running model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Schema {
    pub(crate) features: Vec<String>,
    pub(crate) window: usize,
    pub(crate) horizon: usize,
    /// channels, conv, hidden, embed.
    pub(crate) shape: [i64; 4],
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    schema: Schema,
    version: u64,
    normaliser: Normaliser,
    tensors: Vec<(String, Vec<i64>)>,
}

/// What a checkpoint restores besides the weights.
#[derive(Debug)]
pub(crate) struct Restored {
    pub(crate) version: u64,
    pub(crate) normaliser: Normaliser,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn sorted_variables(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Writes a checkpoint crash-safely.
pub(crate) fn save(
    path: &Path,
    schema: &Schema,
    version: u64,
    normaliser: &Normaliser,
    vs: &VarStore,
) -> Result<(), ModelError> {
    let vars = sorted_variables(vs);
    let header = Header {
        schema: schema.clone(),
        version,
        normaliser: normaliser.clone(),
        tensors: vars.iter().map(|(n, t)| (n.clone(), t.size())).collect(),
    };
    let json = serde_json::to_vec(&header).map_err(|e| ModelError::CheckpointCorrupt {
        path: path.to_owned(),
        reason: format!("header does not serialise: {e}"),
    })?;
    let mut bytes = Vec::with_capacity(json.len() + 64);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT.to_le_bytes());
    bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&json);
    for (_, t) in &vars {
        let flat = t.detach().to_kind(Kind::Float).flatten(0, -1);
        let values = Vec::<f32>::try_from(&flat)?;
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    let sum = fnv1a(&bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());

    let io = |source| ModelError::CheckpointIo {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(io)?;
    let file_name = path
        .file_name()
        .map_or_else(|| "checkpoint".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename durable; not every platform can open a folder, so this is best effort.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(io)
}

/// Reads and checks a checkpoint, then copies its weights into `vs`.
///
/// `vs` is only touched once the whole file has been checked.
pub(crate) fn load(
    path: &Path,
    schema: &Schema,
    vs: &mut VarStore,
) -> Result<Restored, ModelError> {
    let bytes = fs::read(path).map_err(|source| ModelError::CheckpointIo {
        path: path.to_owned(),
        source,
    })?;
    let corrupt = |reason: &str| ModelError::CheckpointCorrupt {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let mismatch = |reason: String| ModelError::CheckpointMismatch {
        path: path.to_owned(),
        reason,
    };
    if bytes.len() < 8 + 4 + 8 + 8 || &bytes[..8] != MAGIC {
        return Err(corrupt("not a seer-model checkpoint"));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 8);
    let stored = u64::from_le_bytes(tail.try_into().map_err(|_| corrupt("short file"))?);
    if fnv1a(body) != stored {
        return Err(corrupt("checksum mismatch (truncated or damaged)"));
    }
    let format = u32::from_le_bytes(body[8..12].try_into().map_err(|_| corrupt("short file"))?);
    if format != FORMAT {
        return Err(mismatch(format!("format {format}, expected {FORMAT}")));
    }
    let len = u64::from_le_bytes(body[12..20].try_into().map_err(|_| corrupt("short file"))?);
    let len = usize::try_from(len).map_err(|_| corrupt("header length"))?;
    let start = 20usize;
    let end = start
        .checked_add(len)
        .filter(|e| *e <= body.len())
        .ok_or_else(|| corrupt("header length past the end"))?;
    let header: Header = serde_json::from_slice(&body[start..end])
        .map_err(|e| corrupt(&format!("unreadable header: {e}")))?;
    if header.schema != *schema {
        return Err(mismatch(format!(
            "written for {:?}, this model is {:?}",
            header.schema, schema
        )));
    }
    if header.normaliser.stats.len() != schema.features.len()
        || header
            .normaliser
            .own
            .values()
            .any(|o| o.mean.len() != schema.features.len())
    {
        return Err(corrupt("normaliser does not match the feature set"));
    }
    let vars = sorted_variables(vs);
    let expected: Vec<(String, Vec<i64>)> =
        vars.iter().map(|(n, t)| (n.clone(), t.size())).collect();
    if header.tensors != expected {
        return Err(mismatch("tensor names or shapes differ".to_owned()));
    }
    let payload = &body[end..];
    let total: usize = expected
        .iter()
        .map(|(_, s)| s.iter().product::<i64>().max(0) as usize)
        .sum();
    if payload.len() != total * 4 {
        return Err(corrupt("weight payload has the wrong length"));
    }
    let mut offset = 0usize;
    tch::no_grad(|| -> Result<(), ModelError> {
        for (_, mut var) in vars {
            let n = var.numel();
            let values: Vec<f32> = payload[offset * 4..(offset + n) * 4]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            offset += n;
            let src = Tensor::f_from_slice(&values)?.f_view(var.size().as_slice())?;
            var.f_copy_(&src)?;
        }
        Ok(())
    })?;
    Ok(Restored {
        version: header.version,
        normaliser: header.normaliser,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::OwnBaseline;

    fn store() -> VarStore {
        let vs = VarStore::new(tch::Device::Cpu);
        let _ = vs.root().zeros("w", &[2]);
        vs
    }

    #[test]
    fn a_normaliser_that_does_not_fit_the_features_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.ckpt");
        let schema = Schema {
            features: vec!["a".into(), "b".into()],
            window: 4,
            horizon: 2,
            shape: [1, 1, 1, 1],
        };
        let mut norm = Normaliser::new(2);
        let baseline = |len| OwnBaseline {
            mean: vec![0.0; len],
            n: 1,
            last_tick: 0,
        };
        norm.own.insert("svc".into(), baseline(2));
        save(&path, &schema, 1, &norm, &store()).expect("save");
        assert_eq!(load(&path, &schema, &mut store()).expect("fits").version, 1);
        // One service's own baseline one feature short: refused, not indexed out of bounds later.
        norm.own.insert("other".into(), baseline(1));
        save(&path, &schema, 2, &norm, &store()).expect("save");
        let err = load(&path, &schema, &mut store()).expect_err("refused");
        assert!(matches!(err, ModelError::CheckpointCorrupt { .. }), "{err}");
    }
}
