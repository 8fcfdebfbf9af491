//! Mergeable latency histograms on the wire.

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

/// Why an encoded histogram could not be read or merged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistogramError {
    /// The bytes are not a V2-serialized HDR histogram.
    #[error("malformed histogram encoding")]
    Decode(#[source] hdrhistogram::serialization::DeserializeError),
    /// The histogram could not be merged (its range does not fit).
    #[error("histogram merge failed")]
    Merge(#[source] hdrhistogram::AdditionError),
}

/// A latency histogram in nanoseconds with 2 significant digits, auto-resizing, mergeable.
///
/// A thin wrapper over [`hdrhistogram::Histogram`] that fixes the precision used on the wire and
/// gives encode/decode helpers. An empty byte string decodes to an empty histogram.
#[derive(Clone, Debug)]
pub struct Histogram {
    inner: hdrhistogram::Histogram<u64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new_latency()
    }
}

impl Histogram {
    /// Significant decimal digits kept (1% relative error).
    pub const SIGFIG: u8 = 2;

    /// An empty latency histogram.
    pub fn new_latency() -> Self {
        let mut inner = hdrhistogram::Histogram::new(Self::SIGFIG)
            .expect("invariant: 2 significant figures is a valid HDR precision");
        inner.auto(true);
        Self { inner }
    }

    /// Records one value in nanoseconds. Values of 0 are recorded as 1.
    pub fn record_ns(&mut self, ns: u64) {
        // Auto-resize makes `record` infallible for any u64 >= 1.
        let _ = self.inner.record(ns.max(1));
    }

    /// Records `count` occurrences of one value in nanoseconds (0 is recorded as 1).
    pub fn record_ns_n(&mut self, ns: u64, count: u64) {
        // Auto-resize makes `record_n` infallible for any u64 >= 1.
        let _ = self.inner.record_n(ns.max(1), count);
    }

    /// Merges another histogram into this one.
    ///
    /// # Errors
    ///
    /// [`HistogramError::Merge`] if the other histogram's range cannot be represented.
    pub fn merge(&mut self, other: &Histogram) -> Result<(), HistogramError> {
        self.inner.add(&other.inner).map_err(HistogramError::Merge)
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.inner.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// The value at quantile `q` (0..=1), nanoseconds; 0 when empty.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.inner.is_empty() {
            0
        } else {
            self.inner.value_at_quantile(q.clamp(0.0, 1.0))
        }
    }

    /// Largest recorded value, nanoseconds; 0 when empty.
    pub fn max_ns(&self) -> u64 {
        self.inner.max()
    }

    /// Mean of recorded values, nanoseconds; 0 when empty.
    pub fn mean_ns(&self) -> f64 {
        if self.inner.is_empty() {
            0.0
        } else {
            self.inner.mean()
        }
    }

    /// Clears all recorded values, keeping the allocation.
    pub fn reset(&mut self) {
        self.inner.reset();
    }

    /// The underlying HDR histogram.
    pub fn get_ref(&self) -> &hdrhistogram::Histogram<u64> {
        &self.inner
    }

    /// Encodes to the V2 serialized form; an empty histogram encodes to no bytes.
    pub fn encode(&self) -> Vec<u8> {
        if self.inner.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(64);
        // Serializing into a Vec cannot fail with an io error; V2 only fails on io.
        if V2Serializer::new()
            .serialize(&self.inner, &mut out)
            .is_err()
        {
            out.clear();
        }
        out
    }

    /// Decodes the V2 serialized form; empty input is an empty histogram.
    ///
    /// # Errors
    ///
    /// [`HistogramError::Decode`] if the bytes are not a V2 HDR histogram.
    pub fn decode(bytes: &[u8]) -> Result<Self, HistogramError> {
        if bytes.is_empty() {
            return Ok(Self::new_latency());
        }
        let mut inner: hdrhistogram::Histogram<u64> = Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(HistogramError::Decode)?;
        inner.auto(true);
        Ok(Self { inner })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_round_trips_to_empty() {
        let h = Histogram::new_latency();
        assert!(h.encode().is_empty());
        assert!(Histogram::decode(&[]).unwrap().is_empty());
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(matches!(
            Histogram::decode(b"not a histogram"),
            Err(HistogramError::Decode(_))
        ));
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(values in proptest::collection::vec(1u64..10_000_000_000, 1..200)) {
            let mut h = Histogram::new_latency();
            for v in &values { h.record_ns(*v); }
            let back = Histogram::decode(&h.encode()).unwrap();
            prop_assert_eq!(back.count(), values.len() as u64);
            prop_assert_eq!(back.quantile_ns(0.99), h.quantile_ns(0.99));
            prop_assert_eq!(back.max_ns(), h.max_ns());
        }

        #[test]
        fn merge_is_associative_and_loses_nothing(
            a in proptest::collection::vec(1u64..1_000_000_000, 0..100),
            b in proptest::collection::vec(1u64..1_000_000_000, 0..100),
            c in proptest::collection::vec(1u64..1_000_000_000, 0..100),
        ) {
            let mk = |v: &[u64]| { let mut h = Histogram::new_latency(); for x in v { h.record_ns(*x); } h };
            let (ha, hb, hc) = (mk(&a), mk(&b), mk(&c));
            let mut left = ha.clone(); left.merge(&hb).unwrap(); left.merge(&hc).unwrap();
            let mut bc = hb.clone(); bc.merge(&hc).unwrap();
            let mut right = ha.clone(); right.merge(&bc).unwrap();
            prop_assert_eq!(left.count(), (a.len() + b.len() + c.len()) as u64);
            prop_assert_eq!(left.get_ref(), right.get_ref());
        }
    }
}
