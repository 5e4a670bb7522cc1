//! The REST test client lives in the testkit, shared with the broker's tests.

pub use parley_testkit::rest::*;
