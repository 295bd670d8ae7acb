//! Verdict benchmarks: criterion micro-benchmarks and the end-to-end harness.
