//! `pgwarden config check FILE`.

use std::path::Path;

use anyhow::{anyhow, Result};

/// Prints the effective configuration, or the one error that stops it.
pub fn run(file: &Path) -> Result<()> {
    let config = config::load(file)?;
    // Read by the backup crate, which the config crate does not know.
    if let Some(bootstrap) = &config.bootstrap {
        backup::restore::point::parse_target(&bootstrap.recovery_target)
            .map_err(|e| anyhow!("{}: [bootstrap] recovery_target: {e}", file.display()))?;
    }
    print!("{}", config.effective_toml());
    eprintln!("{}: ok", file.display());
    Ok(())
}
