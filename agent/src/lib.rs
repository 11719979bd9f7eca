//! placeholder

pub mod tls;
