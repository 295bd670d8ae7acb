//! Verdict's model scoring: ONNX models through ONNX Runtime, with their
//! manifests.
