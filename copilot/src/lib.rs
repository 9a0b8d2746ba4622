//! The copilot program's library: the data conventions of a raw container (`updraft-copilot-data`,
//! re-exported), [`s3::Data`], which reads and writes `s3://` URIs and local paths together, as the
//! program does beside a container on a cluster, and [`signal`], the runtime's end signal and inputs
//! passed in the environment.

pub use updraft_copilot_data::*;

pub mod s3;
pub mod signal;
