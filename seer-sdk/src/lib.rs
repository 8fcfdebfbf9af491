//! Seer in-process recorder (work in progress).
