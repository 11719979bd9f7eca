//! Audit log (in progress).
