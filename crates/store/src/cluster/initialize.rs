//! Who created the cluster, and its system identifier.

use serde::{Deserialize, Serialize};

use crate::typed::Record;

/// The cluster's identity. Created (create-if-absent) by the member that
/// wins the right to run initdb, then completed with the system identifier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Initialize {
    pub member: String,
    pub system_identifier: Option<u64>,
}

impl Record for Initialize {
    const KIND: &'static str = "initialize";
}
