//! `backup list`: the backups and recovery windows in the repository, read
//! by a member that has one (`GET /backup/list`) and shown as `pgwarden
//! backup list` shows them.

use std::time::Duration;

use backup::catalog::Catalog;
use hyper::Method;
use serde_json::Value;

use super::target::{client_error, success, Target};
use super::{CtlError, Output};
use crate::cmd::backup_list::render;

/// Listing a large object store takes a while.
const LISTING: Duration = Duration::from_secs(120);

pub async fn list(target: &Target, output: Output) -> Result<(), CtlError> {
    let mut reply = target
        .send(Method::GET, "/backup/list", None, None, LISTING)
        .await?;
    // A member without a repository names those with one: ask the first.
    if let Some((member, url)) = elsewhere(&reply.body) {
        eprintln!(
            "{} has no backup repository; asking {member} ({url})",
            reply.url
        );
        reply = target
            .send_to(&url, Method::GET, "/backup/list", None, None, LISTING)
            .await
            .map_err(client_error)?;
    }
    success(&reply)?;
    let catalog: Catalog = reply.json().map_err(|e| CtlError::Refused(e.to_string()))?;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&catalog).expect("plain data")
        ),
        Output::Table => print!("{}", render(&catalog)),
    }
    Ok(())
}

/// The first member a refusal names as having a repository.
fn elsewhere(body: &[u8]) -> Option<(String, String)> {
    let body: Value = serde_json::from_slice(body).ok()?;
    let (member, url) = body
        .get("members_with_repository")?
        .as_object()?
        .iter()
        .next()?;
    Some((member.clone(), url.as_str()?.to_string()))
}
