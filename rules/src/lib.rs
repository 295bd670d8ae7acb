//! Verdict's rules language: parser, type checker, compiler and evaluator.
//!
//! It does no I/O on the event path and depends on neither tokio, rdkafka
//! nor ort.
