//! placeholder

pub mod ca;
pub mod net;
pub mod tls;
