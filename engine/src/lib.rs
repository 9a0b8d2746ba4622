//! Updraft's pure core: decode packages and Updraft YAML, compile and validate workflows.
//!
//! Nothing here does I/O beyond the bytes it is handed, and nothing talks to AWS: the runtimes
//! (local and Lambda) and the connectors plug into what this crate produces.

pub mod compile;
pub mod error;
pub mod exec;
pub mod inspect;
pub mod launch;
pub mod literal;
pub mod package;
pub mod plugins;
pub mod references;
pub mod template;
pub mod types;
pub mod yaml;

pub use compile::{CompiledPackage, CompiledWorkflow, compile, compile_for, compile_lenient};
pub use error::{Problem, Problems};
pub use package::{Limits, Package};
pub use references::{EntityKind, EntityRef, Reference};
