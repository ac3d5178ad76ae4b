//! `[bootstrap]`: a new cluster from a backup, and the located errors.

use super::*;

const BACKUP: &str = "\n[backup]\nrepository = \"/mnt/backup\"\n";

#[test]
fn no_bootstrap_table_means_initdb() {
    let fx = Fixture::new();
    assert_eq!(fx.parse(MINIMAL).unwrap().bootstrap, None);
}

#[test]
fn from_the_latest_backup_or_a_named_one() {
    let fx = Fixture::new();
    let c = fx
        .parse(&format!(
            "{MINIMAL}{BACKUP}\n[bootstrap]\nfrom_backup = \"latest\"\n"
        ))
        .unwrap();
    assert_eq!(
        c.bootstrap,
        Some(Bootstrap {
            backup_id: None,
            recovery_target: "latest".into()
        })
    );
    assert!(
        c.effective_toml()
            .ends_with("\n[bootstrap]\nfrom_backup = \"latest\"\nrecovery_target = \"latest\"\n"),
        "{}",
        c.effective_toml()
    );
    let c = fx
        .parse(&format!(
            "{MINIMAL}{BACKUP}\n[bootstrap]\nfrom_backup = \"20261203-140000F\"\n\
             recovery_target = \"2026-12-03 14:01:00+00\"\n"
        ))
        .unwrap();
    assert_eq!(
        c.bootstrap,
        Some(Bootstrap {
            backup_id: Some("20261203-140000F".into()),
            recovery_target: "2026-12-03 14:01:00+00".into()
        })
    );
}

#[test]
fn bad_bootstraps_are_located() {
    let fx = Fixture::new();
    let cases = [
        (
            format!("{MINIMAL}\n[bootstrap]\nfrom_backup = \"latest\"\n"),
            "pgwarden.toml:13:1: `bootstrap.from_backup` is set but there is no [backup] table to restore from\n  \
             hint: add [backup] with the repository that holds the backup (docs/backup.md), or \
             remove [bootstrap] to create the cluster with initdb",
        ),
        (
            format!("{MINIMAL}{BACKUP}\n[bootstrap]\nfrom_backup = \"yesterday\"\n"),
            "pgwarden.toml:16:15: `bootstrap.from_backup` \"yesterday\" is not a backup id\n  \
             hint: write \"latest\", or an id as `pgwarden backup list` shows it, e.g. \"20261203-140000F\"",
        ),
        (
            format!("{MINIMAL}{BACKUP}\n[bootstrap]\nrecovery_target = \"latest\"\n"),
            "pgwarden.toml:15:1: missing required key `from_backup` in [bootstrap]\n  \
             hint: add e.g. from_backup = \"latest\"",
        ),
        (
            format!("{MINIMAL}{BACKUP}\n[bootstrap]\nfrom_backup = \"latest\"\nrecovery_target = \" \"\n"),
            "pgwarden.toml:17:19: `bootstrap.recovery_target` is empty\n  \
             hint: write \"latest\" (the end of the archive), a time (\"2026-12-03 14:01:00+00\"), \
             a WAL position (\"0/3000148\") or a restore point's name",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(fx.error(&text), expected, "for {text}");
    }
}
