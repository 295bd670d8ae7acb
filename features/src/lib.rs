//! Verdict's in-memory feature store: windowed aggregates per entity and
//! batch features loaded with SQL.
