//! aftercare collector library: the store (more modules follow).

pub mod store;
