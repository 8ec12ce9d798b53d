//! How long-running operations report bytes moved and what they wait on. The CLI shows a bar on a terminal; Lambdas
//! and non-terminal runs use [`Quiet`].

/// A sink for progress; every method has a do-nothing default.
pub trait Progress: Send + Sync {
    /// A phase starts, with its size when known.
    fn start(&self, _label: &str, _total: Option<u64>) {}
    /// `bytes` more were moved.
    fn advance(&self, _bytes: u64) {}
    /// Where a phase without a byte count stands (a poll's percentage, what it waits on).
    fn note(&self, _message: &str) {}
    /// The phase ended.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct Quiet;

impl Progress for Quiet {}
