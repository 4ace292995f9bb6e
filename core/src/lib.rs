//! rfunc's pure core: everything that can be built and tested without a server.

pub mod cluster;
pub mod fpconv;
pub mod library;
pub mod payload;
