pub mod redact;
