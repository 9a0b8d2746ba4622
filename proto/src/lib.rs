//! Updraft's protobuf contract.
//!
//! The `flyteidl` modules are wire-compatible with flyteidl 1.16 for the subset Updraft reads and writes
//! (same package names, message names and field numbers), so packages made by `pyflyte package` decode here.
//! The `updraft::v1` module holds Updraft's own messages. Everything is generated from the `.proto` files in
//! this crate's folder; read those for field-level documentation.

pub mod canonical;

/// Generated code mirrors the .proto files; their comments are the documentation.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod generated {
    /// flyteidl packages.
    pub mod flyteidl {
        /// `flyteidl.core`: identifiers, literals, types, tasks, workflows.
        pub mod core {
            include!(concat!(env!("OUT_DIR"), "/flyteidl.core.rs"));
        }
        /// `flyteidl.admin`: TaskSpec, WorkflowSpec, LaunchPlan.
        pub mod admin {
            include!(concat!(env!("OUT_DIR"), "/flyteidl.admin.rs"));
        }
        /// `flyteidl.plugins`: plugin configurations.
        pub mod plugins {
            include!(concat!(env!("OUT_DIR"), "/flyteidl.plugins.rs"));
            /// Kubeflow training jobs.
            pub mod kubeflow {
                include!(concat!(env!("OUT_DIR"), "/flyteidl.plugins.kubeflow.rs"));
            }
            /// Seed-era SageMaker jobs.
            pub mod sagemaker {
                include!(concat!(env!("OUT_DIR"), "/flyteidl.plugins.sagemaker.rs"));
            }
        }
    }
    /// Updraft's own packages.
    pub mod updraft {
        /// `updraft.v1`.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/updraft.v1.rs"));
        }
    }
}

pub use generated::flyteidl::{admin, core, plugins};
pub use generated::updraft::v1 as updraft;
pub use prost::{DecodeError, Message};
pub use prost_types as wkt;

/// The compiled `FileDescriptorSet` of every .proto file in this crate (for reflection and canonical compare).
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor_set.bin"));
