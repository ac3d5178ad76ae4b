//! What can go wrong, and the exit code each maps to (docs/ctl.md).

use std::fmt;

#[derive(Debug)]
pub enum CtlError {
    /// The API answered with a refusal or an error (exit 1).
    Refused(String),
    /// The command line or a local file is wrong (exit 2).
    Usage(String),
    /// No member's API answered (exit 3).
    Unreachable(String),
    /// The cluster did not get where it was asked to in time (exit 4).
    TimedOut(String),
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Refused(_) => 1,
            CtlError::Usage(_) => 2,
            CtlError::Unreachable(_) => 3,
            CtlError::TimedOut(_) => 4,
        }
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlError::Refused(m)
            | CtlError::Usage(m)
            | CtlError::Unreachable(m)
            | CtlError::TimedOut(m) => f.write_str(m),
        }
    }
}
